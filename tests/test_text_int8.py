"""int8 for the LLaVA encoder (paper §3.2): the Llama-3 quantized while its ComfyUI files load, a saved int8 file
recognised and loaded without a vision file, and damaged quantization maps refused."""

from __future__ import annotations

import pytest
import torch
from tiny_llava import PROMPTS, build_tiny_encoders, one_thread, random_image  # noqa: F401

from magic141_core.weights import CheckpointError
from magic141_core.text import Magic141Encoders, load_llava
from magic141_core.text.sources import LlavaSource

pytestmark = pytest.mark.compat  # the encoders run under transformers 5 and 4.5x (scripts/test.sh)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_encoders(tmp_path_factory.mktemp("encoders"))


def _comfy_encoders(tiny, text_encoder, **kwargs):
    f = tiny["files"]
    return Magic141Encoders.from_comfyui_files(text_encoder, f["llava_llama3_vision"], f["clip_l"],
                                               tiny["llama_tok_dir"], tiny["clip_tok_dir"], device="cpu",
                                               dtype=torch.float32, **kwargs)


def _relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_int8_llava_quantizes_the_llama_while_loading_and_stays_close(tiny):
    from magic141_core.weights.int8 import Int8Linear

    float_enc = _comfy_encoders(tiny, tiny["files"]["llava_llama3_fp16"])
    int8_enc = _comfy_encoders(tiny, tiny["files"]["llava_llama3_fp16"], int8=True).load()
    model = int8_enc.llava.model
    linears = [m for m in model.language_model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m, Int8Linear) for m in linears)  # every Llama linear ...
    assert not any(isinstance(m, Int8Linear) for m in model.vision_tower.modules())  # ... and no vision layer
    image = random_image(12)
    a, b = int8_enc.encode(PROMPTS[0], image).positive, float_enc.encode(PROMPTS[0], image).positive
    assert torch.equal(a.mask, b.mask)
    assert _relative_error(a.tokens, b.tokens) < 0.05  # 2x the 0.024 measured on this tiny random model
    assert int8_enc.identity != float_enc.identity  # int8 embeddings are cached apart from float ones


def test_a_saved_int8_llava_is_recognised_needs_no_vision_file_and_is_bit_identical(tiny, tmp_path):
    from magic141_core.text.loading import save_llava
    from magic141_core.text.sources import is_int8_llava

    int8_enc = _comfy_encoders(tiny, tiny["files"]["llava_llama3_fp16"], int8=True).load()
    path = tmp_path / "llava_llama3_int8.safetensors"
    save_llava(int8_enc.llava.model, path)
    assert is_int8_llava(path) and not is_int8_llava(tiny["files"]["llava_llama3_fp16"])
    f = tiny["files"]
    float_bytes = f["llava_llama3_fp16"].stat().st_size + f["llava_llama3_vision"].stat().st_size
    assert path.stat().st_size < 0.5 * float_bytes  # measured 0.46 of the fp32 files: int8 Llama, fp32 vision
    reloaded = Magic141Encoders.from_comfyui_files(path, None, f["clip_l"], tiny["llama_tok_dir"],
                                                   tiny["clip_tok_dir"], device="cpu", dtype=torch.float32)
    image = random_image(13)
    a, b = reloaded.encode(PROMPTS[1], image).positive, int8_enc.encode(PROMPTS[1], image).positive
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.pooled, b.pooled)


def test_a_damaged_int8_llava_map_is_a_clear_error(tiny, tmp_path):
    from safetensors import safe_open

    from magic141_core.weights import QUANT_METADATA_KEY, save_safetensors
    from magic141_core.text.loading import save_llava

    good = tmp_path / "good.safetensors"
    save_llava(_comfy_encoders(tiny, tiny["files"]["llava_llama3_fp16"], int8=True).load().llava.model, good)
    with safe_open(str(good), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    source = dict(tokenizer=tiny["llama_tok_dir"])
    for i, (damage, message) in enumerate([("{not json", "quantization map is corrupt"),
                                           ('{"language_model.no_such_layer": "qint8"}',
                                            "does not have or that are not linear")]):
        bad = tmp_path / f"bad{i}.safetensors"  # a new file each time: files are never written over
        save_safetensors(tensors, bad, {**metadata, QUANT_METADATA_KEY: damage})
        with pytest.raises(CheckpointError, match=message):
            load_llava(LlavaSource(text_encoder=bad, **source), torch.float32)


def test_a_damaged_int8_llava_config_or_tensor_set_is_refused_before_building(tiny, tmp_path):
    import json
    import time

    from safetensors import safe_open
    from safetensors.torch import save_file

    from magic141_core.text.loading import save_llava
    from magic141_core.text.sources import LLAVA_CONFIG_KEY

    good = tmp_path / "good.safetensors"
    save_llava(_comfy_encoders(tiny, tiny["files"]["llava_llama3_fp16"], int8=True).load().llava.model, good)
    with safe_open(str(good), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    config = json.loads(metadata[LLAVA_CONFIG_KEY])

    def with_config(section, **changes):
        return json.dumps({**config, section: {**config[section], **changes}})

    layer0 = next(k for k in sorted(tensors) if k.startswith("language_model.layers.0."))
    scale = next(k for k in sorted(tensors) if k.endswith("._scale"))
    cases = [  # (tensors, config text, message)
        (tensors, "{not json", f"'{LLAVA_CONFIG_KEY}' is not valid JSON"),
        (tensors, "[]", "is a list; expected a JSON object"),
        (tensors, with_config("text_config", num_hidden_layers=100_000_000),
         "'text_config.num_hidden_layers' says 100000000 but the file's tensors hold"),
        (tensors, with_config("vision_config", image_size=100_000), "'vision_config.positions' says"),
        (tensors, with_config("vision_config", patch_size=0), "is not a LLaVA configuration"),
        ({**tensors, layer0.replace(".0.", ".100000000.", 1): tensors[layer0]}, metadata[LLAVA_CONFIG_KEY],
         "names language_model.layers block 100000000"),
        ({**tensors, scale: tensors[scale] * float("nan")}, metadata[LLAVA_CONFIG_KEY], f"'{scale}' holds NaN"),
        # absurd stored settings no tensor shows (issue 34): named, never an AttributeError or an IndexError later
        (tensors, "{}", "'text_config.vocab_size' says 32000 but the file's tensors hold"),
        (tensors, json.dumps({**config, "image_token_index": 10**12}), "'image_token_index' is 1000000000000; "
                                                                       "expected a token id from 0 to"),
        (tensors, json.dumps({**config, "vision_feature_layer": 100}), "'vision_feature_layer' is 100; expected a "
                                                                         "layer index from -2 to 2"),
        (tensors, with_config("text_config", rms_norm_eps=float("nan")), "'text_config.rms_norm_eps' is nan"),
    ]
    for i, (sd, text, message) in enumerate(cases):
        bad = tmp_path / f"bad_{i}.safetensors"  # files are never written over: one name per case
        # safetensors' own writer: the pack's refuses to write NaN, and these files must hold it
        save_file({k: v.clone() for k, v in sd.items()}, str(bad), {**metadata, LLAVA_CONFIG_KEY: text})
        start = time.perf_counter()
        with pytest.raises(CheckpointError, match=message):
            load_llava(LlavaSource(text_encoder=bad, tokenizer=tiny["llama_tok_dir"]), torch.float32)
        assert time.perf_counter() - start < 2.0
