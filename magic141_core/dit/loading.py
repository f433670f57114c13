"""Load and save the DiT: any supported file -> a `Magic141DiT` built on the meta device, filled unit by unit.

A unit is one transformer block, or one of the small top-level modules. Each unit's tensors are read (memory-mapped
for safetensors), converted to the requested dtype, handed over with `load_state_dict(assign=True)`, and, with
`int8=True`, quantized right away. So no randomly initialised copy is ever made, the float model is never held
twice, and quantize-on-load peaks at the int8 model plus one float block. Pre-quantized files (see `quant.py`) are
recognised from their metadata and load their int8 tensors directly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import (
    QUANT_METADATA_KEY,
    CheckpointError,
    OfficialView,
    converted,
    is_diffusers_dit,
    open_state_dict,
    save_safetensors,
    wrong_model_message,
)
from ..config import DiTConfig
from ..device import release_freed_memory
from .model import Magic141DiT

CONFIG_METADATA_KEY = "magic141_dit_config"
_REQUIRED = ("img_in.proj.weight", "double_blocks.0.img_attn_qkv.weight", "final_layer.linear.weight")


@contextmanager
def open_dit_weights(path: str | os.PathLike) -> Iterator[Mapping[str, torch.Tensor]]:
    """The official-named tensors of a DiT file in any supported layout, read lazily (valid inside `with`)."""
    path = Path(path)
    with open_state_dict(path) as sd:
        if is_diffusers_dit(sd):
            sd = OfficialView(sd)
        missing = [k for k in _REQUIRED if k not in sd and k + "._data" not in sd]
        if missing:
            raise CheckpointError(wrong_model_message(path.name, sd, "a Magic141 / HunyuanVideo transformer", missing))
        yield sd


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules that hold tensors themselves (linears, norms, the patch conv): the loading granularity."""
    return [(name, m) for name, m in model.named_modules()
            if any(t is not None for t in (*m._parameters.values(), *m._buffers.values()))]


def fill_(model: nn.Module, sd: Mapping[str, torch.Tensor], dtype, name: str, int8: bool = False) -> nn.Module:
    """Assign every tensor of `sd` to `model` (built on meta) layer by layer, strictly; quantize linears if `int8`.

    Going layer by layer keeps quantize-on-load at the int8 model plus one float layer and its temporaries."""
    by_layer: dict[str, list[str]] = {}
    for key in sd:
        by_layer.setdefault(_layer_of(key), []).append(key)
    consumed = set()
    for prefix, layer in _leaves(model):
        keys = by_layer.get(prefix, [])
        part = {k[len(prefix) + 1:]: converted(sd[k], dtype) for k in keys}
        try:
            layer.load_state_dict(part, strict=True, assign=True)
        except RuntimeError as e:
            detail = " ".join(str(e).split("\n", 1)[-1].split())
            raise CheckpointError(f"{name} does not fit the transformer its shapes describe, in {prefix}: "
                                  f"{detail[:600]}") from None
        consumed.update(keys)
        if int8 and isinstance(layer, nn.Linear):
            from ..quant import quantize_layer_

            del part
            quantize_layer_(model, prefix)
            release_freed_memory()
    extra = sorted(set(sd) - consumed)
    if extra:
        raise CheckpointError(f"{name} has tensors this transformer does not use, e.g. {extra[:5]}")
    return model.eval().requires_grad_(False)


def _layer_of(key: str) -> str:
    """Module name of a state-dict key: drop the tensor name (and quanto's `weight._data` / `weight._scale`)."""
    module, _, tensor = key.rpartition(".")
    if tensor in ("_data", "_scale"):
        module = module.rpartition(".")[0]
    return module


def build_dit(config: DiTConfig, sd: Mapping[str, torch.Tensor], name: str = "state dict") -> Magic141DiT:
    """A model holding exactly the tensors of `sd` (official names), checked strictly."""
    with torch.device("meta"):
        model = Magic141DiT(config)
    return fill_(model, sd, None, name)


def load_dit(
    path: str | os.PathLike,
    dtype: torch.dtype | None = torch.bfloat16,
    device: str | torch.device = "cpu",
    apply_text_guidance: bool = False,
    int8: bool = False,
) -> Magic141DiT:
    """Load a DiT checkpoint.

    dtype: storage dtype of float weights (None keeps the file's). int8: quantize on load (qint8 weights); ignored
    for a pre-quantized file, which is always loaded as int8. apply_text_guidance: see `Magic141DiT`.
    """
    name = Path(path).name
    with open_dit_weights(path) as sd:
        metadata = getattr(sd, "metadata", {})
        stored = metadata.get(CONFIG_METADATA_KEY)
        qmap = None
        if QUANT_METADATA_KEY in metadata:  # a pre-quantized file (optimum-quanto is imported only then)
            from ..quant import read_quantization_map

            qmap = read_quantization_map(metadata, name)
        if qmap is not None and not stored:
            raise CheckpointError(f"{name}: an int8 file must carry its model config; re-create it with this pack")
        config = DiTConfig.from_json(stored) if stored else DiTConfig.from_state_dict(sd)
        with torch.device("meta"):
            model = Magic141DiT(config)
        if qmap is not None:
            from ..quant import prepare_quantized_

            prepare_quantized_(model, qmap, name)
        fill_(model, sd, dtype, name, int8=int8 and qmap is None)
    model.apply_text_guidance = apply_text_guidance
    model.source_path = Path(path)  # lets an int8 copy be made by re-reading, never by copying the float model
    return model.to(device)


def save_dit(model: Magic141DiT, path: str | os.PathLike, dtype: torch.dtype | None = None):
    """Save official-named weights plus the config (and, for an int8 model, the quantization map), atomically."""
    metadata = {CONFIG_METADATA_KEY: model.config.to_json()}
    if "optimum.quanto" in sys.modules:  # without it loaded, no layer can be quantized
        from ..quant import quantization_metadata

        metadata.update(quantization_metadata(model))
    sd = {k: converted(v, dtype) for k, v in model.state_dict().items()}
    save_safetensors(sd, path, metadata)
