"""LoRA for the DiT, in the formats HunyuanVideo LoRAs are shared in, for the CLI and any Python user.

A LoRA file holds, per adapted linear, a down matrix A [r, in] and an up matrix B [out, r] (and optionally `alpha`);
the weight becomes W + strength x (alpha / r) x B A (alpha absent: alpha = r), the same update ComfyUI's LoRA loaders
apply (`comfy.lora.calculate_weight`, checked against it in tests/test_lora.py). Key layouts understood:
- official / ComfyUI (diffusion-pipe): `diffusion_model.<official module>.lora_A.weight` / `.lora_B.weight`, or
  `.lora_down.weight` / `.lora_up.weight` + `.alpha`; also `transformer.<official module>` and ComfyUI's internal
  module names (`img_attn.qkv`, ...);
- kohya / musubi-tuner: `lora_unet_<official module with '.' as '_'>.lora_down.weight` / `.lora_up.weight` + `.alpha`;
- diffusers / PEFT: `transformer.<diffusers module>.lora_A.weight` / `.lora_B.weight`; diffusers' split q / k / v
  (and the single blocks' MLP input) update their rows of the fused official linear, and `norm_out.linear` its
  swapped halves (see `weights.diffusers_keys`).

Float linears get the update merged into their weight. int8 (quanto) linears keep their int8 weight and get a float
low-rank branch instead, y = int8(x) + strength x scale x (x A^T) B^T, so LoRA + int8 never re-quantizes.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from . import CheckpointError
from .comfy_keys import comfy_to_official
from .diffusers_keys import diffusers_targets
from .files import _torch_load

log = logging.getLogger("magic141")

_SUFFIXES = {".lora_A.weight": "down", ".lora_B.weight": "up", ".lora_down.weight": "down",
             ".lora_up.weight": "up", ".alpha": "alpha"}


@dataclass
class LoraDelta:
    """One low-rank update of one official linear of the DiT."""

    module: str  # official module name, e.g. "double_blocks.0.img_attn_qkv"
    down: torch.Tensor  # A [r, in]
    up: torch.Tensor  # B [rows, r]
    scale: float  # alpha / r
    rows: tuple[int, int] | None = None  # (first, count) of the fused linear's output rows; None = all
    swap_halves: bool = False  # diffusers' norm_out.linear: (scale, shift) where the checkpoint has (shift, scale)

    def matrix(self, out_features: int) -> torch.Tensor:
        """The full update B A scaled, [out_features, in] in fp32, zero outside `rows`."""
        delta = self.scale * (self.up.float() @ self.down.float())
        if self.swap_halves:
            delta = torch.cat(delta.chunk(2)[::-1])
        if self.rows is None:
            return delta
        full = torch.zeros(out_features, delta.shape[1])
        full[self.rows[0]:self.rows[0] + self.rows[1]] = delta
        return full


def parse_lora_arg(text: str) -> tuple[Path, float]:
    """'FILE[:STRENGTH]' -> (path, strength); strength defaults to 1.0. Raises ValueError on a bad strength."""
    path, sep, strength = text.rpartition(":")
    if not sep or not re.fullmatch(r"[-+]?\d*\.?\d+(e[-+]?\d+)?", strength.strip(), re.I):
        return Path(text), 1.0
    return Path(path), float(strength)


def _read_raw(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a LoRA file under its own key (no checkpoint prefix stripping: a LoRA's prefixes are its
    format). safetensors, or a weights-only pickle (never arbitrary objects)."""
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    if path.suffix != ".safetensors":
        return _torch_load(path)
    try:
        return load_file(path)
    except Exception as e:  # a damaged or non-safetensors file
        raise CheckpointError(f"{path.name} cannot be read as safetensors ({type(e).__name__}: {str(e)[:200]})") from None


def _linears(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if hasattr(m, "in_features") and hasattr(m, "out_features")}


def _official_module(base: str, linears: dict, underscored: dict, diffusers: dict):
    """A LoRA base name -> (official module, rows, swapped), or None when it names nothing in this model."""
    for prefix in ("diffusion_model.", "transformer.", "base_model.model.", ""):
        if base.startswith(prefix):
            name = base[len(prefix):]
            if name in linears:
                return name, None, False
            official = comfy_to_official(name + ".weight").removesuffix(".weight")
            if official in linears:
                return official, None, False
            if prefix in ("transformer.", "base_model.model.", "") and name in diffusers:
                return diffusers[name]
    if base.startswith("lora_unet_") and base[len("lora_unet_"):] in underscored:
        return underscored[base[len("lora_unet_"):]], None, False
    return None


def read_lora(path: str | os.PathLike, model: nn.Module) -> list[LoraDelta]:
    """Read a LoRA file (safetensors, or a weights-only pickle) for `model` (a `Magic141DiT`).

    Raises CheckpointError when the file holds no LoRA pairs, names no module of this model (a LoRA for another
    architecture), or a pair's shapes do not fit its linear; logs a warning with the count when some entries name
    modules this model lacks."""
    name = Path(path).name
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in _read_raw(Path(path)).items():
        suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
        if suffix is not None:
            groups.setdefault(key[: -len(suffix)], {})[_SUFFIXES[suffix]] = tensor
    groups = {base: g for base, g in groups.items() if "down" in g and "up" in g}
    if not groups:
        raise CheckpointError(f"{name} is not a LoRA: it holds no lora_A/lora_B (or lora_down/lora_up) pairs")
    linears = _linears(model)
    underscored = {n.replace(".", "_"): n for n in linears}
    diffusers = diffusers_targets({n: m.out_features for n, m in linears.items()}, model.config.hidden_size)
    deltas, unknown = [], []
    for base, g in sorted(groups.items()):
        target = _official_module(base, linears, underscored, diffusers)
        if target is None:
            unknown.append(base)
            continue
        module, rows, swapped = target
        down, up = g["down"].flatten(1), g["up"].flatten(1)
        linear = linears[module]
        expected_rows = rows[1] if rows else linear.out_features
        if down.shape[1] != linear.in_features or up.shape != (expected_rows, down.shape[0]):
            raise CheckpointError(
                f"{name}: {base} has shapes down {tuple(down.shape)} / up {tuple(up.shape)}, but {module} is "
                f"{linear.in_features} -> {expected_rows}: the LoRA was trained for a different model size")
        rank = down.shape[0]
        scale = float(g["alpha"]) / rank if "alpha" in g else 1.0
        deltas.append(LoraDelta(module, down, up, scale, rows, swapped))
    if not deltas:
        raise CheckpointError(f"{name} names no module of this transformer (e.g. {unknown[:3]}): it is a LoRA for "
                              "another architecture; use a HunyuanVideo LoRA (official, kohya/musubi or diffusers)")
    if unknown:
        log.warning("%s: %d of its %d LoRA entries name modules this transformer does not have (ignored), e.g. %s",
                    name, len(unknown), len(groups), unknown[:3])
    return deltas


def _branch_hook(module, inputs, output):
    x = inputs[0]
    for delta, strength in module.magic141_lora:
        down, up = delta.down.to(x.device, x.dtype), delta.up.to(x.device, x.dtype)
        y = (strength * delta.scale) * ((x @ down.T) @ up.T)
        if delta.swap_halves:
            y = torch.cat(y.chunk(2, dim=-1)[::-1], dim=-1)
        if delta.rows is None:
            output = output + y
        else:
            first, count = delta.rows
            output = torch.cat([output[..., :first], output[..., first:first + count] + y,
                                output[..., first + count:]], dim=-1)
    return output


@torch.no_grad()
def apply_lora_(model: nn.Module, deltas: list[LoraDelta], strength: float = 1.0) -> nn.Module:
    """Apply `deltas` x `strength` to `model` in place: merged into float weights; a float low-rank branch on int8
    layers (a forward hook; the int8 weights stay untouched). Call once per LoRA to stack several."""
    linears = _linears(model)
    for delta in deltas:
        linear = linears[delta.module]
        weight = linear.weight
        if getattr(linear, "weight_qtype", None) is None:  # a float layer (quanto layers have a weight qtype)
            update = strength * delta.matrix(linear.out_features)
            weight.copy_((weight.float() + update.to(weight.device)).to(weight.dtype))
        else:  # quantized: keep the int8 weight, add the low-rank branch
            if not hasattr(linear, "magic141_lora"):
                linear.magic141_lora = []
                linear.register_forward_hook(_branch_hook)
            linear.magic141_lora.append((delta, strength))
    return model


def load_loras_(model: nn.Module, loras: list[tuple[str | os.PathLike, float]]) -> nn.Module:
    """Read and apply each (file, strength) in order (stacked LoRAs add up)."""
    for path, strength in loras:
        apply_lora_(model, read_lora(path, model), strength)
    return model
