"""fp8 weight files: the one dequantization every loader uses (the DiT and the text encoders).

The formats in the wild, all read through `Fp8View`:
- plain fp8 (`float8_e4m3fn` / `float8_e5m2`) tensors without scales: the value is the weight (upcast).
- ComfyUI "scaled fp8" (`comfy/ops.py` scaled_fp8 ops): a `scaled_fp8` marker tensor, `<layer>.scale_weight` and maybe
  `<layer>.scale_input`; newer files name them `<layer>.weight_scale` / `<layer>.input_scale`. weight = fp8 x scale
  (the scale is one number, or one per output channel).
- the official HunyuanVideo fp8 release (`hyvideo/modules/fp8_optimization.py`): `mp_rank_00_model_states_fp8.pt`
  holds the block linears as fp8 w / (amax / 448), and their per-layer scales sit beside it in
  `mp_rank_00_model_states_fp8_map.pt` ({module name: scale}; the official code finds it by replacing `.pt` with
  `_map.pt`). weight = fp8 x scale.
Input scales only serve fp8 activation matmuls; weights are computed in bf16 / fp32 here, so they are not needed.

Two ways to load (`weights.fill_`): fp8 stays fp8 (`keep_fp8`, the DiT's default): each linear keeps its fp8 weight in
memory, with its scale as a `weight_scale` buffer, and casts (and scales) it per layer as it is used
(`dit.layers.cast_weight`; inside ComfyUI the host turns it into ComfyUI's own fp8 tensor), about half the memory of
bf16; other fp8 tensors (norms, the patch embedding) are dequantized. Or every weight is dequantized while loading,
layer by layer, into the dtype the loader asks for (bf16 / fp16 / fp32), or quantized on to int8 right away
(`fill_(..., quantize=...)`); the text encoders always load this way (see docs/precision.md for the measurements).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .files import CheckpointError, read_state_dict, shape_of

FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
                   if hasattr(torch, n))
WEIGHT_SCALES = ("scale_weight", "weight_scale")
INPUT_SCALES = ("scale_input", "input_scale")
MARKERS = ("scaled_fp8",)
E4M3_MAX = 448.0  # largest float8_e4m3fn value: a weight stored as w / (amax / 448) reaches it exactly


def is_fp8(tensor: torch.Tensor) -> bool:
    return tensor.dtype in FP8_DTYPES


def dequantize(weight: torch.Tensor, scale: torch.Tensor | float | None) -> torch.Tensor:
    """fp8 `weight` [out, ...] times `scale` (a number, [1], or one per output channel [out] / [out, 1]), in fp32.

    The dequantization of ComfyUI's scaled fp8 ops and of HunyuanVideo's `fp8_activation_dequant` (w.to(dtype) x
    scale); done in fp32 so the product is exact before the caller converts it to its storage dtype."""
    scale = None if scale is None else torch.as_tensor(scale, dtype=torch.float32)
    if scale is not None and scale.numel() not in (1, weight.shape[0]):
        raise CheckpointError(f"an fp8 scale has {scale.numel()} values for a weight of shape "
                              f"{tuple(weight.shape)}; expected one, or one per output channel")
    out = weight.float()  # the one fp32 temporary: scaled in place
    if scale is None:
        return out
    return out.mul_(scale.reshape(()) if scale.numel() == 1 else scale.reshape(-1, *[1] * (out.ndim - 1)))


def quantize_scaled(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor scaled fp8, as ComfyUI's scaled-fp8 files and the official release store a weight: returns
    (w / s in float8_e4m3fn, s = amax / 448 as an fp32 scalar). For tests and benchmarks; loading never needs it."""
    scale = weight.abs().max().float().clamp(min=1e-12) / E4M3_MAX
    return (weight.float() / scale).to(torch.float8_e4m3fn), scale


def fp8_is_finite(tensor: torch.Tensor) -> bool:
    """False when an fp8 tensor holds NaN (e4m3fn: all exponent and mantissa bits set) or inf / NaN (e5m2: all
    exponent bits set). Reads the bits: no float copy."""
    bits = tensor.view(torch.uint8)
    if tensor.dtype == torch.float8_e5m2:
        return not bool((bits & 0x7C).eq(0x7C).any())
    if tensor.dtype == torch.float8_e4m3fn:
        return not bool((bits & 0x7F).eq(0x7F).any())
    return bool(torch.isfinite(tensor.float()).all())  # the fnuz variants: rare, a float copy is fine


def fills_e4m3_range(tensor: torch.Tensor) -> bool:
    """True when a float8_e4m3fn tensor holds +-448, its largest value: the mark of a weight stored as w / scale
    (amax / scale = 448 exactly), never reached by plain fp8 weights (|w| < 1). Reads the bits: no float copy."""
    return tensor.dtype == torch.float8_e4m3fn and bool((tensor.view(torch.uint8) & 0x7F).eq(0x7E).any())


def map_path(path: str | os.PathLike) -> Path:
    """Where the official release keeps the scales of `path`: `<name>_map.pt` beside it."""
    path = Path(path)
    return path.with_name(path.stem + "_map.pt")


def _scale_keys(keys) -> set[str]:
    """The keys that are fp8 scales or markers, not weights: markers, every `<layer>.scale_weight` / `weight_scale`,
    and input scales of those layers only (quanto's int8 layers have `input_scale` buffers of their own)."""
    keys = set(keys)
    hidden = {k for k in keys if k in MARKERS or k.endswith(".comfy_quant")
              or k.rpartition(".")[2] in WEIGHT_SCALES}
    scaled = {k.rpartition(".")[0] for k in hidden}
    return hidden | {f"{m}.{s}" for m in scaled for s in INPUT_SCALES if f"{m}.{s}" in keys}


class Fp8View(Mapping):
    """A state dict with fp8 weights dequantized on access (fp32) and the scale tensors and markers hidden.

    `scales`: per-layer scales from a separate map ({module name: scale}, the official `*_map.pt`). `needed_map`:
    the map file to name when an fp8 weight that must have a scale has none. Other tensors pass through unchanged
    (lazily: nothing is read before it is asked for). `metadata` and `name` of the wrapped mapping are kept."""

    def __init__(self, sd: Mapping[str, torch.Tensor], name: str, scales: Mapping[str, torch.Tensor] | None = None,
                 needed_map: Path | None = None):
        self._sd, self.name, self._scales, self._needed_map = sd, name, dict(scales or {}), needed_map
        self.metadata = getattr(sd, "metadata", {})
        self._hidden = _scale_keys(sd)
        self._keys = [k for k in sd if k not in self._hidden]

    def __getitem__(self, key: str) -> torch.Tensor:
        stored = self.fp8(key)
        return self._sd[key] if stored is None else dequantize(*stored)

    def fp8(self, key: str) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(the fp8 tensor as stored, its scale or None) for an fp8 tensor; None for any other. The same checks as
        reading it dequantized (a weight stored as w / scale without its scale is refused)."""
        if key in self._hidden:
            raise KeyError(key)
        tensor = self._sd[key]
        if not is_fp8(tensor) or tensor.numel() == 0:
            return None
        module = key.rpartition(".")[0]
        scale = next((self._sd[f"{module}.{s}"] for s in WEIGHT_SCALES if f"{module}.{s}" in self._sd), None)
        if scale is None:
            scale = self._scales.get(module)
        if scale is None and fills_e4m3_range(tensor):
            self._refuse_unscaled(key)
        if scale is not None and torch.as_tensor(scale).numel() not in (1, tensor.shape[0]):
            raise CheckpointError(f"{self.name}: the fp8 scale of {key} has {torch.as_tensor(scale).numel()} values "
                                  f"for a weight of shape {tuple(tensor.shape)}; expected one, or one per output "
                                  "channel")
        return tensor, scale

    def _refuse_unscaled(self, key: str):
        where = self._needed_map or map_path(self.name)
        if self._scales:
            raise CheckpointError(
                f"{self.name}: the fp8 weight {key} was stored as w / scale, but {where.name} has no scale for "
                f"{key.rpartition('.')[0]}; the map belongs to another checkpoint — use the map released with it")
        raise CheckpointError(
            f"{self.name}: the fp8 weight {key} fills the whole fp8 range (|w| = {E4M3_MAX:g}): it was stored as "
            "w / scale, but its scale is neither in the file nor in a map. This is the official HunyuanVideo fp8 "
            f"format; its scales are in {where.name}, which was not found beside it ({where}). Put {where.name} in "
            "the same folder, or use a bf16 / ComfyUI scaled-fp8 checkpoint.")

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key) -> bool:
        return key not in self._hidden and key in self._sd

    def shape(self, key: str) -> tuple[int, ...]:
        """The tensor's shape from the wrapped mapping's header (an fp8 weight has its float shape), nothing read."""
        if key in self._hidden:
            raise KeyError(key)
        return shape_of(self._sd, key)


def fp8_view(sd: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Fp8View:
    """`sd` (read from `path`) as an `Fp8View`, with the official `<name>_map.pt` scales when that file exists."""
    path = Path(path)
    scales, candidate = None, map_path(path)
    if candidate.is_file() and candidate != path:
        scales = {k.removesuffix(".weight"): v for k, v in read_state_dict(candidate).items()}
    return Fp8View(sd, path.name, scales, candidate)
