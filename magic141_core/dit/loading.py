"""Load and save the DiT: any supported file -> a `Magic141DiT` built on the meta device, filled layer by layer.

`weights.fill_` assigns each layer's tensors (memory-mapped for safetensors) and, with `int8=True`, quantizes it
right away, so quantize-on-load peaks at the int8 model plus one float layer. Pre-quantized files (`weights/int8.py`)
are recognised from their metadata and load their int8 tensors directly.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

from ..weights import (
    QUANT_METADATA_KEY,
    CheckpointError,
    OfficialView,
    converted,
    fill_,
    is_diffusers_dit,
    open_state_dict,
    save_safetensors,
    wrong_model_message,
)
from ..weights.comfy_keys import ComfyView, is_comfy_dit
from ..weights.fp8 import fp8_view
from ..weights.limits import block_count, check_count
from ..weights.random_init import randomize_
from .config import BLOCK_PREFIXES, DiTConfig
from .family import AUTO, FAMILY_METADATA_KEY, diffusers_image_condition, resolve_family
from .layers import CoreOps
from .model import Magic141DiT

CONFIG_METADATA_KEY = "magic141_dit_config"
_REQUIRED = ("img_in.proj.weight", "double_blocks.0.img_attn_qkv.weight", "final_layer.linear.weight")


@contextmanager
def open_dit_weights(path: str | os.PathLike) -> Iterator[Mapping[str, torch.Tensor]]:
    """The official-named tensors of a DiT file in any supported layout, read lazily (valid inside `with`).

    fp8 tensors come back dequantized (fp32 per tensor, `weights.fp8`), or as stored through `sd.fp8(key)` (official
    and ComfyUI names; diffusers' split q / k / v are joined, so they are always dequantized); an official fp8 `.pt`
    takes its scales from `<name>_map.pt` beside it, and one whose map is missing is refused naming that file
    (`CheckpointError`)."""
    path = Path(path)
    with open_state_dict(path) as raw:
        sd = fp8_view(raw, path)  # fp8 weights (plain, ComfyUI scaled, official + *_map.pt) dequantized on read
        if is_diffusers_dit(sd):
            sd = OfficialView(sd)
        elif is_comfy_dit(sd):  # ComfyUI's internal names, e.g. a model re-saved by native ModelSave
            sd = ComfyView(sd)
        missing = [k for k in _REQUIRED if k not in sd and k + "._data" not in sd]
        if missing:
            raise CheckpointError(wrong_model_message(path.name, sd, "a Magic141 / HunyuanVideo transformer", missing))
        yield sd


def read_dit_config(sd: Mapping[str, torch.Tensor], name: str) -> DiTConfig:
    """The file's config: from its metadata (checked field by field, then its block counts against the tensors
    present) or inferred from its tensors. Raises CheckpointError naming the file, the field or key, and the fix,
    before anything is built."""
    stored = getattr(sd, "metadata", {}).get(CONFIG_METADATA_KEY)
    if stored is None:
        return DiTConfig.from_state_dict(sd, name)
    config = DiTConfig.from_json(stored, name)
    for field, prefix in BLOCK_PREFIXES.items():
        check_count(name, field, getattr(config, field), block_count(sd, prefix, name), prefix)
    return config


def _every_linear(name: str) -> bool:
    return True


def build_dit(config: DiTConfig, sd: Mapping[str, torch.Tensor], name: str = "state dict") -> Magic141DiT:
    """A model holding exactly the tensors of `sd` (official names), checked strictly."""
    with torch.device("meta"):
        model = Magic141DiT(config)
    return fill_(model, sd, None, name, "the transformer")


def load_dit(
    path: str | os.PathLike,
    dtype: torch.dtype | None = torch.bfloat16,
    device: str | torch.device = "cpu",
    apply_text_guidance: bool = False,
    int8: bool = False,
    family: str = AUTO,
    operations=CoreOps,
    keep_fp8: bool = True,
) -> Magic141DiT:
    """Load a DiT checkpoint of any image-to-video family (`dit/family.py`).

    dtype: storage dtype of float weights (None keeps the file's; fp8 weights are dequantized to fp32 then). fp8
    files of every kind (plain, ComfyUI scaled, official + map) load into every mode: with `keep_fp8` (the default)
    the linears keep their fp8 weights in memory and cast them per layer at use (about half the memory of bf16; the
    other tensors take `dtype`); with `keep_fp8=False` every weight is dequantized layer by layer into `dtype`; with
    `int8=True` into int8. int8: quantize on load (qint8 weights); ignored for a pre-quantized file, which is always
    loaded as int8. operations: the layer factory (`dit.layers.CoreOps`; ComfyUI's ops inside ComfyUI).
    apply_text_guidance: see `Magic141DiT`. family: "auto" (read from the file: stored metadata, a
    diffusers config.json beside it, the input channels, for 16 channels the file name) or a family's title / key /
    short name; the model's `family` and `family_reason` say what was found and why. Raises CheckpointError for a
    file that is not a transformer, or an official fp8 file without its `*_map.pt`; ValueError for a family that
    contradicts the file's input channels.
    """
    name = Path(path).name
    with open_dit_weights(path) as sd:
        metadata = getattr(sd, "metadata", {})
        stored = metadata.get(CONFIG_METADATA_KEY)  # None, or the text read_dit_config checks
        qmap = None
        if QUANT_METADATA_KEY in metadata:  # a pre-quantized file (optimum-quanto is imported only then)
            from ..weights.int8 import read_quantization_map

            qmap = read_quantization_map(metadata, name)
        if qmap is not None and stored is None:
            raise CheckpointError(f"{name}: an int8 file must carry its model config; re-create it with this pack")
        config = read_dit_config(sd, name)
        found, reason = resolve_family(config, name, family, metadata.get(FAMILY_METADATA_KEY),
                                       diffusers_image_condition(Path(path)), config.text_guidance_embed,
                                       pack_written=stored is not None)
        config = dataclasses.replace(config, image_condition=found.image_condition)
        with torch.device("meta"):
            model = Magic141DiT(config, operations)
        if qmap is not None:
            from ..weights.int8 import prepare_quantized_

            prepare_quantized_(model, qmap, name, sd)
        fill_(model, sd, dtype, name, "the transformer", quantize=_every_linear if int8 and qmap is None else None,
              keep_fp8=keep_fp8 and not int8)
    model.apply_text_guidance = apply_text_guidance
    model.family, model.family_reason = found, reason
    model.source_path = Path(path)  # lets an int8 copy be made by re-reading, never by copying the float model
    return model.to(device)


def save_dit(model: Magic141DiT, path: str | os.PathLike, dtype: torch.dtype | None = None):
    """Save official-named weights plus the config and the family (and, for an int8 model, the quantization map),
    atomically."""
    metadata = {CONFIG_METADATA_KEY: model.config.to_json(), FAMILY_METADATA_KEY: model.family.key}
    if "optimum.quanto" in sys.modules:  # without it loaded, no layer can be quantized
        from ..weights.int8 import quantization_metadata

        metadata.update(quantization_metadata(model))
    sd = {k: converted(v, dtype) for k, v in model.state_dict().items()}
    save_safetensors(sd, path, metadata)


def random_dit(config, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A `Magic141DiT` of `config` with deterministic random weights (`weights.random_init.randomize_`): for tests and
    benchmarks only."""
    return randomize_(Magic141DiT(config), seed).to(dtype).eval().requires_grad_(False)
