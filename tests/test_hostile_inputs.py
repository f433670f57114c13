"""Hostile and careless inputs, third pass (issue 34), one table per defect class on the core: LoRA files (shapes,
rank, alpha, dtype, NaN, an overflowing merge, a crafted header), prompt files (too large, endless, not UTF-8),
int8 quantization maps (refused before any tensor is read), pickle indexes, peak memory (RSS) for a hostile prompt
file and LoRA, and native values of the wrong kind at the nodes' entry points. Writes (full disks, non-finite
values) and the CLI are in test_hostile_writes.py, the server cases in test_server_hostile.py."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from magic141_core import Conditioning, load_dit, sample_latent, save_dit, tiny
from magic141_core.dit.loading import random_dit
from magic141_core.runtime.finite import NonFiniteOutput
from magic141_core.runtime.text_file import MAX_PROMPT_BYTES, read_text
from magic141_core.video.windows import window_prompts
from magic141_core.weights import CheckpointError
from magic141_core.weights.lora import apply_lora_, read_lora

REPO = Path(__file__).resolve().parents[1]
MODULE = "double_blocks.0.img_attn_qkv"  # tiny(): 64 -> 192
KEY = f"diffusion_model.{MODULE}"


def lora_pair(down=None, up=None, alpha=None, key: str = KEY) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    pair = {f"{key}.lora_down.weight": torch.randn(4, 64, generator=g) if down is None else down,
            f"{key}.lora_up.weight": torch.randn(192, 4, generator=g) if up is None else up}
    return pair if alpha is None else {**pair, f"{key}.alpha": alpha}


def crafted_header(path: Path, header_bytes: int) -> Path:
    """A safetensors file whose first 8 bytes claim a header of `header_bytes` (sparse: no disk used)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", header_bytes) + b"{")
        f.truncate(8 + header_bytes)
    return path


# ------------------------------------------------------------------------------------------------ LoRA files
LORA_CASES = {  # name -> (tensors or a file maker, the message's key words)
    "alpha not a scalar": (lora_pair(alpha=torch.ones(3)), "'diffusion_model.double_blocks.0.img_attn_qkv.alpha' has "
                                                           "shape \\[3\\]; a LoRA's alpha is one number"),
    "alpha NaN": (lora_pair(alpha=torch.tensor(float("nan"))), "alpha' holds NaN or infinite values; the LoRA is "
                                                               "damaged"),
    "rank 0": (lora_pair(torch.zeros(0, 64), torch.zeros(192, 0)), "lora_down.weight' has rank 0 \\(shape \\[0, 64\\]"),
    "1-D matrices": (lora_pair(torch.zeros(64), torch.zeros(192)), "lora_down.weight' has shape \\[64\\]; a LoRA's down "
                                                                   "matrix for double_blocks.0.img_attn_qkv is 2-D, "
                                                                   "\\[rank, 64\\]"),
    "rank above min(in, out)": (lora_pair(torch.zeros(65, 64), torch.zeros(192, 65)), "has rank 65, above min\\(in, "
                                                                                      "out\\) = 64"),
    "shapes of another size": (lora_pair(torch.zeros(4, 32), torch.zeros(96, 4)), "down \\[4, 32\\] / up \\[96, 4\\], "
                                                                                  "but double_blocks.0.img_attn_qkv is "
                                                                                  "64 -> 192"),
    "integer values": (lora_pair(down=torch.ones(4, 64, dtype=torch.int64)), "lora_down.weight' holds int64 values; "
                                                                              "LoRA matrices and alpha are floating"),
    "a NaN": (lora_pair(down=torch.randn(4, 64).index_fill(1, torch.tensor([3]), float("nan"))),
              "lora_down.weight' holds NaN or infinite values; the LoRA is damaged .* Refused before it touched the "
              "model"),
    "another architecture": ({"lora_unet_input_blocks_1_0_emb_layers_1.lora_down.weight": torch.zeros(4, 8),
                              "lora_unet_input_blocks_1_0_emb_layers_1.lora_up.weight": torch.zeros(8, 4)},
                             "names no module of this transformer .* a LoRA for another architecture"),
    "no pairs": ({"something.weight": torch.zeros(2)}, "is not a LoRA: it holds no lora_A/lora_B"),
    "a header claiming 64 MiB": (lambda path: crafted_header(path, 64 << 20), "its safetensors header claims 67108864 "
                                                                               "bytes, above the 8 MiB"),
}


@pytest.mark.parametrize("name", list(LORA_CASES))
def test_a_broken_or_hostile_lora_is_refused_naming_the_file_and_key(name, tmp_path, monkeypatch):
    tensors, message = LORA_CASES[name]
    path = tmp_path / "hostile_lora.safetensors"
    tensors(path) if callable(tensors) else save_file(tensors, str(path))
    model = random_dit(tiny(), seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=message) as error:
        apply_lora_(model, read_lora(path, model))
    assert str(error.value).startswith("hostile_lora.safetensors")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing applied


def test_a_merge_that_would_overflow_is_refused_before_any_layer_changes(tmp_path):
    """Two modules: the first merges fine, the second's update is finite in the file but overflows fp32 when
    merged (1e30 x 1e30); neither may change."""
    other = "diffusion_model.double_blocks.0.txt_attn_qkv"
    save_file({**lora_pair(), **lora_pair(torch.full((1, 64), 1e30), torch.full((192, 1), 1e30), key=other)},
              str(tmp_path / "strong.safetensors"))
    model = random_dit(tiny(), seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="strong.safetensors: 'diffusion_model.double_blocks.0.txt_attn_qkv' at "
                                              "strength 1 would make .* infinite in float32.* Nothing was applied"):
        apply_lora_(model, read_lora(tmp_path / "strong.safetensors", model))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="strength must be a finite number, got inf"):
        apply_lora_(model, read_lora(tmp_path / "strong.safetensors", model)[:1], float("inf"))


def test_a_nan_made_by_a_strong_lora_is_blamed_on_the_lora(tmp_path):
    """Finite, mergeable LoRA values large enough that the activations overflow: the sampler's non-finite check
    names the LoRA first, not only the weight dtype."""
    save_file(lora_pair(torch.full((1, 64), 1e18), torch.full((192, 1), 1e18)), str(tmp_path / "loud.safetensors"))
    from conftest import make_text

    model = random_dit(tiny(), seed=1)
    apply_lora_(model, read_lora(tmp_path / "loud.safetensors", model), 0.5)
    cond = Conditioning(make_text(), reference=torch.zeros(1, 16, 1, 4, 4))
    with pytest.raises(NonFiniteOutput, match="this transformer carries the LoRA\\(s\\) loud.safetensors \\(strength "
                                              "0.5\\): a LoRA holding NaN / inf or extreme values"):
        sample_latent(model, cond, (1, 16, 1, 4, 4), steps=1)


# ------------------------------------------------------------------------------------------------ prompt files
def _binary(path: Path) -> Path:
    path.write_bytes(b"a lake\nthe camera pans\n\xff\xfe\x00binary")
    return path


def _huge(path: Path) -> Path:
    with open(path, "wb") as f:
        f.truncate(MAX_PROMPT_BYTES + 1)
    return path


PROMPT_CASES = {
    "larger than 1 MiB": (_huge, "holds more than 1 MiB, the most read for it"),
    "endless (/dev/zero)": (lambda path: Path("/dev/zero"), "/dev/zero holds more than 1 MiB"),
    "not UTF-8": (_binary, "is not UTF-8 text: line 3, byte 23 \\(0xff\\) cannot be decoded"),
    "a folder": (lambda path: path.parent, "is a folder; give a text file"),
}


@pytest.mark.parametrize("name", list(PROMPT_CASES))
def test_a_bad_prompts_file_is_refused_naming_the_line_or_the_limit(name, tmp_path):
    make, message = PROMPT_CASES[name]
    with pytest.raises(OSError if name == "a folder" else ValueError, match=message):
        read_text(make(tmp_path / "prompts.txt"), MAX_PROMPT_BYTES, "the prompts file")
    assert read_text(_utf8(tmp_path), MAX_PROMPT_BYTES, "the prompts file") == "a lake\nthe camera pans\n"


def _utf8(tmp: Path) -> Path:
    (tmp / "ok.txt").write_bytes(b"\xef\xbb\xbfa lake\nthe camera pans\n")  # a byte-order mark is dropped
    return tmp / "ok.txt"


def test_a_prompt_text_over_the_budget_is_refused_before_it_is_split():
    with pytest.raises(ValueError, match=f"the prompts text is {MAX_PROMPT_BYTES + 1} characters long"):
        window_prompts("x" * (MAX_PROMPT_BYTES + 1), 2)
    assert window_prompts("a\nb", 3) == ["a", "b", "b"]


# ------------------------------------------------------------------------------------------------ int8 maps
def _int8_file(tmp: Path) -> tuple[dict, dict]:
    from magic141_core.weights.int8 import quantize_linears_

    save_dit(quantize_linears_(random_dit(tiny())), tmp / "int8.safetensors")
    with safe_open(str(tmp / "int8.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _with_map(meta: dict, change) -> dict:
    qmap = json.loads(meta["magic141_quantization"])
    return {**meta, "magic141_quantization": change(qmap) if callable(change) else change}


LAYER = "double_blocks.0.img_mlp.fc2"
QUANT_CASES = {  # name -> (tensors change, metadata change, message)
    "the map lists too few layers": (None, lambda q: json.dumps({k: v for k, v in q.items() if k != LAYER}),
                                     f"holds int8 weights for layers its quantization map does not list, e.g. "
                                     f"\\['{LAYER}'\\]"),
    "the map lists a float layer": (lambda sd: {**{k: v for k, v in sd.items() if not k.startswith(LAYER + ".weight")},
                                                LAYER + ".weight": torch.zeros(64, 256)}, None,
                                    f"quantization map listing layers whose int8 weights .* e.g. \\['{LAYER}'\\]"),
    "a scale of the wrong shape": (lambda sd: {**sd, LAYER + ".weight._scale": torch.ones(64, 2, dtype=torch.bfloat16)},
                                   None, f"int8 tensor '{LAYER}.weight._scale' has shape \\[64, 2\\]; the model needs "
                                         "\\[64, 1\\]"),
    "a map number of 5000 digits": (None, '{"x": ' + "1" * 5000 + "}", "the int8 quantization map is corrupt"),
}


@pytest.mark.parametrize("name", list(QUANT_CASES))
def test_a_broken_int8_map_is_refused_before_any_tensor_is_read(name, tmp_path, monkeypatch):
    import magic141_core.weights.fill as fill

    tensors, meta = _int8_file(tmp_path)
    change_tensors, change_map, message = QUANT_CASES[name]
    save_file(change_tensors(tensors) if change_tensors else tensors, str(tmp_path / "bad.safetensors"),
              _with_map(meta, change_map) if change_map else meta)
    reads = []
    monkeypatch.setattr(fill, "_read_finite", lambda *a: reads.append(a) or None)
    with pytest.raises(CheckpointError, match=message):
        load_dit(tmp_path / "bad.safetensors")
    assert reads == []  # refused from the names and header shapes alone: no layer was loaded


def test_a_pickle_index_over_the_budget_and_the_unsafe_pickle_message(tmp_path):
    import zipfile

    from magic141_core.weights import read_state_dict

    with zipfile.ZipFile(tmp_path / "big.pt", "w") as z:  # a .pt zip whose pickle program is 9 MiB (stored)
        z.writestr("big/data.pkl", b"\x80\x02" + b"N" * (9 << 20))
    with pytest.raises(CheckpointError, match="big.pt: its pickle index claims 943718[0-9] bytes, above the 8 MiB"):
        read_state_dict(tmp_path / "big.pt")

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch PAYLOAD_RAN",))

    torch.save({"w": torch.zeros(1), "x": Payload()}, tmp_path / "evil.pth")  # torch's own format names the global
    with pytest.raises(CheckpointError) as error:
        read_state_dict(tmp_path / "evil.pth")
    assert "it asks for posix.system" in str(error.value) and "Use a .safetensors version" in str(error.value)
    assert "weights_only" not in str(error.value)  # torch's hint to load unsafely is never quoted


# ------------------------------------------------------------------------------------------------ memory
RSS_SCRIPT = r"""
import json, re, sys, torch
from magic141_core import tiny
from magic141_core.dit.loading import random_dit
from magic141_core.runtime.text_file import MAX_PROMPT_BYTES, read_text
from magic141_core.weights.lora import read_lora

def kib(field):
    return int(re.search(field + r":\s+(\d+)", open("/proc/self/status").read()).group(1))

model = random_dit(tiny())
peaks = {}
for name, action in [("endless prompts file", lambda: read_text("/dev/zero", MAX_PROMPT_BYTES, "prompts")),
                     ("256 MiB prompts file", lambda: read_text(sys.argv[1], MAX_PROMPT_BYTES, "prompts")),
                     ("LoRA declaring 4 GiB", lambda: read_lora(sys.argv[2], model)),
                     ("LoRA header of 90 MB", lambda: read_lora(sys.argv[3], model))]:
    open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) restarts from the current RSS
    base = kib("VmRSS")
    try:
        action()
        peaks[name] = "accepted"
    except Exception as e:
        peaks[name] = [(kib("VmHWM") - base) / 1024, str(e)[:160]]
print(json.dumps(peaks))
"""


def test_a_hostile_prompt_file_or_lora_costs_under_64_mib(tmp_path):
    big = tmp_path / "prompts.txt"
    with open(big, "wb") as f:
        f.truncate(256 << 20)  # sparse: no disk used
    lora = tmp_path / "huge_lora.safetensors"  # rank 2**22 on a 64 -> 192 linear: 4 GiB of fp32, sparse
    rank = 1 << 22
    header = json.dumps({f"{KEY}.lora_down.weight": {"dtype": "F32", "shape": [rank, 64], "data_offsets": [0, rank * 256]},
                         f"{KEY}.lora_up.weight": {"dtype": "F32", "shape": [192, rank],
                                                   "data_offsets": [rank * 256, rank * 1024]}}).encode()
    with open(lora, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + rank * 1024)
    peaks = json.loads(subprocess.run([sys.executable, "-c", RSS_SCRIPT, big, lora,
                                       crafted_header(tmp_path / "header.safetensors", 90_000_000)],
                                      capture_output=True, text=True, check=True, cwd=REPO,
                                      env={**os.environ, "PYTHONPATH": str(REPO)}).stdout)
    print("peak RSS above baseline, MiB:", {k: v[0] for k, v in peaks.items()})
    assert all(v != "accepted" for v in peaks.values()), peaks
    assert all(v[0] < 64 for v in peaks.values()), peaks
    assert "holds more than 1 MiB" in peaks["256 MiB prompts file"][1]
    assert "rank 4194304, above min(in, out) = 64" in peaks["LoRA declaring 4 GiB"][1]
    assert "header claims 90000000 bytes" in peaks["LoRA header of 90 MB"][1]


# ------------------------------------------------------------------------------------------------ native types
def _conditioning(tokens=None, **extras):
    return [[torch.zeros(1, 5, 32) if tokens is None else tokens, {"pooled_output": torch.zeros(1, 16), **extras}]]


NATIVE_CASES = {  # name -> (node, inputs, message); each is refused before any model is touched
    "an SD image latent into the sampler": (
        "Magic141Sampler", dict(latent={"samples": torch.zeros(1, 4, 6, 8)}),
        "Magic141 Sampler needs a HunyuanVideo video latent \\[B, 16, T, H/8, W/8\\]; this is an image latent "
        "\\[1, 4, 6, 8\\] \\(from Empty Latent Image, or VAE Encode with an SD1.5 / SDXL VAE\\): use Magic141 Image To "
        "Video's latent"),
    "a Flux image latent into the sampler": (
        "Magic141Sampler", dict(latent={"samples": torch.zeros(1, 16, 6, 8)}), "image latent \\[1, 16, 6, 8\\] \\(from "
                                                                               "EmptySD3LatentImage"),
    "another video model's latent into the decode": (
        "Magic141VAEDecode", dict(samples={"samples": torch.zeros(1, 48, 2, 6, 8)}, vae=None, tile_size=0),
        "Magic141 VAE Decode needs a HunyuanVideo video latent .* a video latent with 48 channels .* decode image "
        "latents with native VAE Decode"),
    "a latent with a noise mask": (
        "Magic141Sampler", dict(latent={"samples": torch.zeros(1, 16, 2, 6, 8), "noise_mask": torch.ones(1, 1, 6, 8)}),
        "the latent carries a noise mask \\(Set Latent Noise Mask\\), which it would ignore"),
    "not a LATENT at all": ("Magic141Sampler", dict(latent=torch.zeros(1, 16, 2, 6, 8)),
                            "needs a LATENT holding 'samples'; got a float32 tensor of shape \\[1, 16, 2, 6, 8\\]: use "
                            "Magic141 Image To Video's latent"),
    "a MASK as frames": ("Magic141SaveMP4", dict(images=torch.zeros(2, 48, 64)),
                         "Magic141 Save MP4: images must be an IMAGE \\[batch, height, width, 3\\] .* got a float32 "
                         "tensor of shape \\[2, 48, 64\\] \\(a MASK, or one image"),
    "channels-first frames": ("Magic141SaveMP4", dict(images=torch.zeros(2, 3, 48, 64)),
                              "looks channels-first"),
    "an empty image batch": ("Magic141ImageToVideo", dict(start_image=torch.zeros(0, 48, 64, 3)),
                             "Magic141 Image To Video: start_image must be an IMAGE .* shape \\[0, 48, 64, 3\\]"),
    "a malformed CONDITIONING": ("Magic141Sampler", dict(conditioning=[torch.zeros(1, 5, 32)]),
                                 "conditioning is not a CONDITIONING \\(each entry is \\[tokens, options\\]; got Tensor"),
    "an image model's concat latent": (
        "Magic141Sampler", dict(conditioning=_conditioning(concat_latent_image=torch.zeros(1, 4, 6, 8))),
        "concat_latent_image\\) is \\[1, 4, 6, 8\\], not a HunyuanVideo video latent"),
}


@pytest.mark.compat  # the nodes' checks under both hosts
@pytest.mark.parametrize("name", list(NATIVE_CASES))
def test_a_native_value_of_the_wrong_kind_names_the_node_that_makes_the_right_one(name, pack):
    from conftest import run_node

    node, given, message = NATIVE_CASES[name]
    defaults = {
        "Magic141Sampler": dict(model=None, conditioning=_conditioning(), latent={"samples": torch.zeros(1, 16, 2, 6, 8)},
                                steps=1, shift=5.0, guidance=1.0, seed=0),
        "Magic141VAEDecode": {},
        "Magic141SaveMP4": dict(fps=24.0, quality=19, filename_prefix="never"),
        "Magic141ImageToVideo": dict(conditioning=None, vae=None, resolution="custom", width=64, height=48, length=5),
    }[node]
    if node == "Magic141Sampler" and "latent" in given:  # the latent is checked before the conditioning
        defaults["conditioning"] = None
    with pytest.raises(ValueError, match=message):
        run_node(pack.NODE_CLASS_MAPPINGS[node], **{**defaults, **given})


@pytest.mark.compat
@pytest.mark.parametrize("prefix, problem", [("", "names no file"), ("Magic141/", "names no file"),
                                             ("a\0b", "holds a control character"), ("x/.hidden", "names a hidden file"),
                                             ("..", "names a hidden file")])
def test_a_filename_prefix_naming_no_visible_file_is_refused_with_the_rule(prefix, problem, pack):
    with pytest.raises(ValueError, match=f"{re.escape(repr(prefix))} {problem}; it must be a file name, optionally "
                                         "after sub-folders"):
        pack.nodes.host.paths.output_file(prefix, "mp4")
