"""Load the LLaVA-Llama-3 model and CLIP-L text model with their tokenizers, from local files only.

Hugging Face folders go through transformers' `from_pretrained(..., local_files_only=True)`. ComfyUI's single files
are read with the pack's safe reader, renamed by `comfy_keys`, and assigned into a model built without memory
(parameters on the meta device), so an 8B model is never initialised randomly first.
"""

from __future__ import annotations

import logging
import math
from collections import ChainMap
from collections.abc import Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..weights import CheckpointError, fill_, open_state_dict, save_safetensors, wrong_model_message
from ..weights.files import RenamedView
from ..weights.fp8 import Fp8View
from ..weights.limits import config_error, parse_json_object
from . import comfy_keys
from .images import llava_image_processor, load_image_processor
from .prompts import IMAGE_TOKEN
from .sources import LLAVA_CONFIG_KEY, ClipSource, LlavaSource, PathLike

logger = logging.getLogger(__name__)


@dataclass
class LlavaParts:
    model: nn.Module  # transformers LlavaModel: vision_tower, multi_modal_projector, language_model (no lm_head)
    tokenizer: object  # Llama-3 tokenizer, right padding
    image_processor: object  # CLIPImageProcessor with LLaVA's settings


@dataclass
class ClipParts:
    model: nn.Module  # transformers CLIPTextModel
    tokenizer: object


def _transformers_version() -> tuple[int, int]:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    if (major, minor) < (4, 52):
        raise ImportError(
            f"Magic141's encoders need transformers >= 4.52 (LlavaModel), found {transformers.__version__}; "
            "upgrade it with: pip install -U transformers"
        )
    return major, minor


def dtype_kwarg(dtype: torch.dtype) -> dict:
    """`from_pretrained`'s dtype argument under its name in the installed transformers (`torch_dtype` before 4.56)."""
    return {"dtype" if _transformers_version() >= (4, 56) else "torch_dtype": dtype}


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"cannot load the tokenizer in {folder}: {e}") from None
    tokenizer.padding_side = "right"
    return tokenizer


@contextmanager
def _parameters_on_meta():
    """Modules built inside get their parameters on the meta device (no memory, no init); buffers stay real.

    Patches `nn.Module.register_parameter` for the duration (process-wide, as accelerate's init_empty_weights does).
    """
    register = nn.Module.register_parameter

    def register_on_meta(module, name, param):
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _renamed(raw: Mapping[str, torch.Tensor], rename, name: str, expected: str) -> RenamedView:
    """The tensors of a ComfyUI file under transformers names, read on access (fp8 dequantized by `Fp8View`, the
    DiT loader's helper too). Every name is checked before any tensor is read."""
    fp8 = Fp8View(raw, name)
    names = {}
    for key in fp8:
        try:
            new = rename(key)
        except KeyError:
            raise CheckpointError(wrong_model_message(name, list(raw), expected, [key])) from None
        if new is not None:
            names[new] = key
    return RenamedView(fp8, names)


class _Chain(ChainMap):
    """The text and vision files as one mapping, with header shapes (`shape`) like each of them."""

    def shape(self, key: str) -> tuple[int, ...]:
        return next(m.shape(key) for m in self.maps if key in m)


def _in_language_model(layer: str) -> bool:
    """int8 goes to the Llama-3 (98 % of LLaVA's weights); the vision tower and projector stay float (paper §3.2)."""
    return layer.startswith("language_model.")


def save_llava(model: nn.Module, path: PathLike) -> None:
    """A (quantized) LlavaModel as one self-describing safetensors file: its config and quantization map in the
    metadata, vision tower included, so `load_llava` needs no vision file for it. Written atomically."""
    from ..weights.int8 import quantization_metadata

    metadata = {LLAVA_CONFIG_KEY: model.config.to_json_string(), **quantization_metadata(model)}
    save_safetensors(dict(model.state_dict()), path, metadata)


def _checked_llava_config(raw, name: str):
    """The LlavaConfig in a self-contained LLaVA file's metadata, refused (naming the field) unless every size that
    shapes the model equals what the file's tensors hold, before anything is built."""
    from transformers import LlavaConfig

    data = parse_json_object(raw.metadata.get(LLAVA_CONFIG_KEY), name, LLAVA_CONFIG_KEY)
    try:
        config = LlavaConfig.from_dict(data)
        text, vision = config.text_config, config.vision_config
        claimed = {"text_config.vocab_size": text.vocab_size, "text_config.hidden_size": text.hidden_size,
                   "text_config.num_hidden_layers": text.num_hidden_layers,
                   "text_config.intermediate_size": text.intermediate_size,
                   "text_config.num_attention_heads x head_dim": text.num_attention_heads * text.head_dim,
                   "vision_config.hidden_size": vision.hidden_size, "vision_config.patch_size": vision.patch_size,
                   "vision_config.num_hidden_layers": vision.num_hidden_layers,
                   "vision_config.positions": (vision.image_size // vision.patch_size) ** 2 + 1}
    except Exception as e:  # transformers' own checks, a missing sub-config, a wrong type
        raise config_error(name, LLAVA_CONFIG_KEY, f"is not a LLaVA configuration ({type(e).__name__}: "
                           f"{str(e)[:200]})", "the config this pack wrote") from None
    present = _int8_shapes(raw)
    found = comfy_keys.llava_config(present, config.image_token_index, getattr(config, "pad_token_id", None), name)
    ftext, fvision = found.text_config, found.vision_config
    actual = {"text_config.vocab_size": ftext.vocab_size, "text_config.hidden_size": ftext.hidden_size,
              "text_config.num_hidden_layers": ftext.num_hidden_layers,
              "text_config.intermediate_size": ftext.intermediate_size,
              "text_config.num_attention_heads x head_dim": present.shape(
                  "language_model.layers.0.self_attn.q_proj.weight")[0],
              "vision_config.hidden_size": fvision.hidden_size, "vision_config.patch_size": fvision.patch_size,
              "vision_config.num_hidden_layers": fvision.num_hidden_layers,
              "vision_config.positions": present.shape(
                  "vision_tower.vision_model.embeddings.position_embedding.weight")[0]}
    for field, value in claimed.items():
        if value != actual[field]:
            raise config_error(name, field, f"says {value} but the file's tensors hold {actual[field]}",
                               f"{actual[field]}")
    _check_llava_values(config, name)
    return config


def _check_llava_values(config, name: str) -> None:
    """The stored LLaVA settings that no tensor shape shows, each within what the model can use (an absurd one
    would fail deep inside an encode, or make every token NaN)."""
    text, vision = config.text_config, config.vision_config
    layers = vision.num_hidden_layers

    def whole(value, low, high):
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    def small_positive(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 < value < 1

    for field, value, ok, expected in (
            ("image_token_index", config.image_token_index, whole(config.image_token_index, 0, text.vocab_size - 1),
             f"a token id from 0 to {text.vocab_size - 1}"),
            ("vision_feature_layer", config.vision_feature_layer, whole(config.vision_feature_layer, -layers, layers),
             f"a layer index from {-layers} to {layers}"),
            ("text_config.rms_norm_eps", text.rms_norm_eps, small_positive(text.rms_norm_eps), "a number in (0, 1)"),
            ("vision_config.layer_norm_eps", vision.layer_norm_eps, small_positive(vision.layer_norm_eps),
             "a number in (0, 1)")):
        if not ok:
            raise config_error(name, field, f"is {value!r}"[:200], expected)


def _int8_shapes(raw) -> RenamedView:
    """A pre-quantized file's tensor headers under their float 4.x names (`weight._data` read as `weight`, the vision
    tower nested as transformers 4 nests it, whichever version wrote the file)."""
    return RenamedView(raw, {comfy_keys.nested_key(k.removesuffix("._data")): k for k in raw
                             if not k.endswith("._scale")})


def _load_int8_llava(raw, name: str, dtype: torch.dtype) -> nn.Module:
    from transformers import LlavaModel

    from ..weights.int8 import prepare_quantized_, read_quantization_map

    qmap = read_quantization_map(raw.metadata, name) or {}
    config = _checked_llava_config(raw, name)
    with _parameters_on_meta():
        model = LlavaModel(config)
    sd = comfy_keys.in_model_layout(raw, model)
    prepare_quantized_(model, qmap, name, sd)  # int8 sits in the Llama, whose names transformers 4 and 5 share
    return fill_(model, sd, dtype, name, "LLaVA-Llama-3")


def load_llava(source: LlavaSource, dtype: torch.dtype = torch.float16, int8: bool = False) -> LlavaParts:
    """The LLaVA model (without its LM head), its tokenizer and image processor.

    int8: quantize the Llama-3's linears (optimum-quanto qint8): layer by layer while the ComfyUI files load, so the
    float model never sits in memory whole; after loading for a Hugging Face folder (transformers loads it). A
    pre-quantized file (`save_llava`) is recognised from its metadata and always loads as int8, vision included.
    """
    source.check()
    _transformers_version()
    if source.is_folder:
        parts = _load_llava_folder(Path(source.folder), Path(source.tokenizer or source.folder), dtype)
        if int8:
            from ..weights.int8 import quantize_linears_

            quantize_linears_(parts.model.language_model)
        return parts
    from transformers import LlavaModel

    tokenizer = load_tokenizer(Path(source.tokenizer))
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_token_id is None or image_token_id == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer in {source.tokenizer} has no {IMAGE_TOKEN} token; use the llava-llama-3 one")
    text_path = Path(source.text_encoder)
    with ExitStack() as files:
        raw_text = files.enter_context(open_state_dict(text_path))
        if LLAVA_CONFIG_KEY in raw_text.metadata:
            model = _load_int8_llava(raw_text, text_path.name, dtype)
            return LlavaParts(model, tokenizer, llava_image_processor(model.config.vision_config.image_size))
        vision_path = Path(source.vision)
        text = _renamed(raw_text, comfy_keys.llava_key, text_path.name, "a llava-llama-3 text encoder")
        if not any(k.startswith("language_model.") for k in text):
            raise CheckpointError(wrong_model_message(text_path.name, text, "a llava-llama-3 text encoder", []))
        vision = _renamed(files.enter_context(open_state_dict(vision_path)), comfy_keys.llava_key, vision_path.name,
                          "the llava-llama-3 vision tower")
        if "multi_modal_projector.linear_1.weight" not in vision:
            raise CheckpointError(
                f"{vision_path.name} has no multi_modal_projector: it is a plain CLIP vision model, not "
                "llava_llama3_vision.safetensors (LLaVA's vision tower with its projector)"
            )
        sd = _Chain(text, vision)
        config = comfy_keys.llava_config(sd, image_token_id, tokenizer.pad_token_id,
                                         f"{text_path.name} + {vision_path.name}")
        with _parameters_on_meta():
            model = LlavaModel(config)
        fill_(model, comfy_keys.in_model_layout(sd, model), dtype, f"{text_path.name} + {vision_path.name}", "LLaVA-Llama-3",
              quantize=_in_language_model if int8 else None)
    return LlavaParts(model, tokenizer, llava_image_processor(config.vision_config.image_size))


def _load_llava_folder(folder: Path, tokenizer_folder: Path, dtype: torch.dtype) -> LlavaParts:
    from transformers import AutoConfig, LlavaForConditionalGeneration

    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    if config.model_type != "llava":
        raise ValueError(
            f"{folder} holds a '{config.model_type}' model, not LLaVA: Magic141 needs the whole "
            "llava-llama-3-8b-v1_1-transformers folder (its Llama-3 and its vision tower)"
        )
    full = LlavaForConditionalGeneration.from_pretrained(
        str(folder), local_files_only=True, use_safetensors=True, **dtype_kwarg(dtype)
    )
    model = full.model.eval().requires_grad_(False)  # hidden states only: the LM head is dropped
    del full
    tokenizer = load_tokenizer(tokenizer_folder)
    if (folder / "preprocessor_config.json").is_file():
        processor = load_image_processor(folder)
    else:
        processor = llava_image_processor(config.vision_config.image_size)
    return LlavaParts(model, tokenizer, processor)


def load_clip(source: ClipSource, dtype: torch.dtype = torch.float16) -> ClipParts:
    """The CLIP-L text model and its tokenizer."""
    source.check()
    from transformers import CLIPTextModel

    tokenizer = load_tokenizer(Path(source.tokenizer or source.folder))
    if source.is_folder:
        model = CLIPTextModel.from_pretrained(
            str(source.folder), local_files_only=True, use_safetensors=True, **dtype_kwarg(dtype)
        )
        return ClipParts(model.eval().requires_grad_(False), tokenizer)
    path = Path(source.file)
    with open_state_dict(path) as raw:
        sd = _renamed(raw, comfy_keys.clip_key, path.name, "a CLIP-L text encoder")
        if "text_model.embeddings.token_embedding.weight" not in sd:
            raise CheckpointError(wrong_model_message(path.name, sd, "a CLIP-L text encoder", []))
        config = comfy_keys.clip_text_config(sd, tokenizer.eos_token_id, tokenizer.bos_token_id,
                                             tokenizer.pad_token_id, path.name)
        with _parameters_on_meta():
            model = CLIPTextModel(config)
        return ClipParts(fill_(model, comfy_keys.in_model_layout(sd, model), dtype, path.name, "a CLIP-L text encoder"), tokenizer)
