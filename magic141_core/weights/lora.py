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

Float linears get the update merged into their weight. int8 (quanto) and fp8 linears keep their weight and get a
float low-rank branch instead, y = W(x) + strength x scale x (x A^T) B^T, so LoRA never re-quantizes them.

A LoRA file is untrusted input (SECURITY.md, "Budgets"). Before any tensor is read, every pair's shapes (from the
file header) must be A [r, in] / B [out, r] (trailing 1s of conv-style LoRAs allowed) for the linear it names, with
1 <= r <= min(in, out); then each tensor read must be floating point and finite, and `alpha` a finite scalar. So a
file cannot make the reader allocate more than twice the model's own linears, and a NaN is blamed on the LoRA
(file and key) instead of reaching the video. A merge that would overflow the weights' dtype is refused before any
layer changes.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..runtime.finite import is_finite
from . import CheckpointError
from .comfy_keys import comfy_to_official
from .diffusers_keys import diffusers_targets
from .files import open_state_dict, shape_of
from .fp8 import is_fp8

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
    source: str = "LoRA"  # the file it came from, and its key, for messages
    key: str = ""

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


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A LoRA matrix's 2-D shape: conv-style [a, b, 1, 1] counts as [a, b]; anything else stays as it is."""
    return shape[:2] if len(shape) > 2 and all(s == 1 for s in shape[2:]) else shape


def _check_pair(name: str, base: str, keys: dict[str, str], down: tuple, up: tuple, module: str, fan_in: int,
                fan_out: int) -> None:
    """Refuse, from header shapes alone, a pair that is not A [r, in] / B [out, r] for `module` with 1 <= r <=
    min(in, out): the message names the file, the key, its shape and the shape expected."""
    down, up = _matrix_shape(down), _matrix_shape(up)
    for part, shape, want in (("down", down, f"[rank, {fan_in}]"), ("up", up, f"[{fan_out}, rank]")):
        if len(shape) != 2:
            raise CheckpointError(f"{name}: '{keys[part]}' has shape {list(shape)}; a LoRA's {part} matrix for "
                                  f"{module} is 2-D, {want}. The file is damaged or not a LoRA; choose another file")
    rank = down[0]
    if rank < 1:
        raise CheckpointError(f"{name}: '{keys['down']}' has rank 0 (shape {list(down)}); a LoRA pair needs rank "
                              ">= 1. The file is damaged; choose another file")
    if down[1] != fan_in or up != (fan_out, rank):
        raise CheckpointError(
            f"{name}: {base} has shapes down {list(down)} / up {list(up)}, but {module} is {fan_in} -> {fan_out} "
            f"(expected down [rank, {fan_in}] / up [{fan_out}, rank]): the LoRA was trained for a different model "
            "size")
    if rank > min(fan_in, fan_out):
        raise CheckpointError(f"{name}: {base} has rank {rank}, above min(in, out) = {min(fan_in, fan_out)} of "
                              f"{module} (a full-rank update needs no more). The file is damaged or crafted; choose "
                              "another file")


def _read_matrix(sd, key: str, name: str) -> torch.Tensor:
    """A LoRA tensor, refused unless floating point and finite (naming the file and key)."""
    tensor = sd[key]
    if not tensor.is_floating_point():
        raise CheckpointError(f"{name}: '{key}' holds {str(tensor.dtype).removeprefix('torch.')} values; LoRA "
                              "matrices and alpha are floating point. The file is damaged; choose another file")
    if not is_finite(tensor):
        raise CheckpointError(f"{name}: '{key}' holds NaN or infinite values; the LoRA is damaged (or its training "
                              "diverged). Refused before it touched the model: it would give a black or noisy video. "
                              "Choose another LoRA")
    return tensor


def _alpha(sd, key: str, name: str) -> float:
    if shape_of(sd, key) not in ((), (1,)):
        raise CheckpointError(f"{name}: '{key}' has shape {list(shape_of(sd, key))}; a LoRA's alpha is one number "
                              "(a scalar). The file is damaged; choose another file")
    return float(_read_matrix(sd, key, name).reshape(()))


def read_lora(path: str | os.PathLike, model: nn.Module) -> list[LoraDelta]:
    """Read a LoRA file (safetensors, or a weights-only pickle) for `model` (a `Magic141DiT`).

    Raises CheckpointError naming the file (and the key) when it holds no LoRA pairs, names no module of this model
    (a LoRA for another architecture), or a pair is malformed: not 2-D, rank 0 or above min(in, out), shapes that do
    not fit its linear (all checked from the file header before any tensor is read), a non-scalar alpha, integer or
    NaN / inf values. Logs a warning with the count when some entries name modules this model lacks."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    with open_state_dict(path, prefixes=()) as raw:  # a LoRA's prefixes are its format: keys as stored
        groups: dict[str, dict[str, str]] = {}
        for key in raw:
            suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
            if suffix is not None:
                groups.setdefault(key[: -len(suffix)], {})[_SUFFIXES[suffix]] = key
        groups = {base: g for base, g in groups.items() if "down" in g and "up" in g}
        if not groups:
            raise CheckpointError(f"{name} is not a LoRA: it holds no lora_A/lora_B (or lora_down/lora_up) pairs")
        linears = _linears(model)
        underscored = {n.replace(".", "_"): n for n in linears}
        diffusers = diffusers_targets({n: m.out_features for n, m in linears.items()}, model.config.hidden_size)
        plan, unknown = [], []
        for base, keys in sorted(groups.items()):  # 1. every pair checked from the header, nothing read yet
            target = _official_module(base, linears, underscored, diffusers)
            if target is None:
                unknown.append(base)
                continue
            module, rows, swapped = target
            linear = linears[module]
            _check_pair(name, base, keys, shape_of(raw, keys["down"]), shape_of(raw, keys["up"]), module,
                        linear.in_features, rows[1] if rows else linear.out_features)
            plan.append((base, keys, module, rows, swapped))
        if not plan:
            raise CheckpointError(f"{name} names no module of this transformer (e.g. {unknown[:3]}): it is a LoRA "
                                  "for another architecture; use a HunyuanVideo LoRA (official, kohya/musubi or "
                                  "diffusers)")
        deltas = []
        for base, keys, module, rows, swapped in plan:  # 2. read: floating point, finite, a scalar alpha
            down = _read_matrix(raw, keys["down"], name).flatten(1)
            up = _read_matrix(raw, keys["up"], name).flatten(1)
            scale = _alpha(raw, keys["alpha"], name) / down.shape[0] if "alpha" in keys else 1.0
            deltas.append(LoraDelta(module, down, up, scale, rows, swapped, name, base))
    if unknown:
        log.warning("%s: %d of its %d LoRA entries name modules this transformer does not have (ignored), e.g. %s",
                    name, len(unknown), len(groups), unknown[:3])
    return deltas


def _keeps_weight(linear: nn.Module) -> bool:
    """int8 (quanto: a weight qtype) and fp8 layers keep their weight; their LoRA runs as a float branch."""
    return getattr(linear, "weight_qtype", None) is not None or is_fp8(linear.weight)


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


def _check_merge(linears: dict[str, nn.Module], deltas: list[LoraDelta], strength: float) -> None:
    """Refuse (before any layer changes) an update that would turn a weight non-finite: a float layer's merged
    weight in its dtype, an int8 layer's low-rank branch in bf16 (its activation dtype). One layer at a time."""
    for delta in deltas:
        linear = linears[delta.module]
        update = strength * delta.matrix(linear.out_features)
        quantized = _keeps_weight(linear)
        merged = update.to(torch.bfloat16) if quantized else \
            (linear.weight.float() + update.to(linear.weight.device)).to(linear.weight.dtype)
        if not is_finite(merged):
            raise CheckpointError(
                f"{delta.source}: '{delta.key}' at strength {strength:g} would make {delta.module}'s weights "
                f"infinite in {str(merged.dtype).removeprefix('torch.')}: the LoRA holds extreme values, or the "
                "strength is too high. Nothing was applied. Lower the strength, or choose another LoRA")


@torch.no_grad()
def apply_lora_(model: nn.Module, deltas: list[LoraDelta], strength: float = 1.0) -> nn.Module:
    """Apply `deltas` x `strength` to `model` in place: merged into float weights; a float low-rank branch on int8
    layers (a forward hook; the int8 weights stay untouched). Call once per LoRA to stack several.

    All or nothing: a strength that is not finite (ValueError), or an update that would make a weight infinite in
    its dtype (CheckpointError naming the LoRA and its key), is refused before any layer changes. The LoRAs applied
    are recorded on the model (`magic141_loras`: (file, strength)), so a non-finite output names them."""
    if not math.isfinite(strength):
        raise ValueError(f"the LoRA strength must be a finite number, got {strength}")
    linears = _linears(model)
    _check_merge(linears, deltas, strength)
    for delta in deltas:
        linear = linears[delta.module]
        weight = linear.weight
        if not _keeps_weight(linear):  # a float layer
            update = strength * delta.matrix(linear.out_features)
            weight.copy_((weight.float() + update.to(weight.device)).to(weight.dtype))
        else:  # quantized: keep the int8 weight, add the low-rank branch
            if not hasattr(linear, "magic141_lora"):
                linear.magic141_lora = []
                linear.register_forward_hook(_branch_hook)
            linear.magic141_lora.append((delta, strength))
    sources = list(dict.fromkeys(delta.source for delta in deltas))
    model.magic141_loras = [*getattr(model, "magic141_loras", []), *((source, strength) for source in sources)]
    return model


def load_loras_(model: nn.Module, loras: list[tuple[str | os.PathLike, float]]) -> nn.Module:
    """Read and apply each (file, strength) in order (stacked LoRAs add up)."""
    for path, strength in loras:
        apply_lora_(model, read_lora(path, model), strength)
    return model
