"""int8 weight-only quantization with optimum-quanto (paper §3.2): weights in int8 with a per-output-channel scale,
activations in bf16, about half the weight memory.

This module imports optimum-quanto (seconds); loaders import it only when int8 is involved.

The model never knows it is quantized: `quantize_linears_` swaps its `nn.Linear` layers for `Int8Linear` (a quanto
`QLinear`, frozen) after the weights are loaded, one block at a time during loading so the full bf16 model never
sits in memory. A pre-quantized checkpoint stores quanto's serialised tensors (`weight._data` int8,
`weight._scale`) plus the quantization map and the model config in its safetensors metadata, so it is recognised
and loaded without ever materialising bf16 weights.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from optimum.quanto import QLinear, qint8
from optimum.quanto.nn import QModuleMixin
from torch import nn

from ..runtime.device import compute_dtype_for
from .files import QUANT_METADATA_KEY, CheckpointError, shape_of

ACTIVATION_DTYPE = torch.bfloat16
CPU_ALIGNMENT = 64  # bytes: torch's CPU allocator aligns to this, and the int8 kernel needs it


class Int8Linear(QLinear):
    """quanto QLinear with qint8 weights. Casts its input to bf16 for the int8 kernel (paper §3.2) and returns the
    input's dtype. On a CPU without bf16 units (see `runtime/device.py`) it dequantizes the weight and computes in fp32
    instead, and so it does for layers whose scales are not bf16 (int8 files written before layers were quantized
    from bf16; the int8 kernel needs bf16 scales): the weight stays int8 in memory either way.

    On a CPU with bf16 units quanto runs torch's `_weight_int8pack_mm`, which reads the int8 weight with aligned
    vector loads and crashes the process (SIGSEGV, seen with torch 2.13 on AVX512-BF16) on data that is not
    64-byte aligned, as tensors memory-mapped from a safetensors file often are; such a weight is copied once into
    aligned memory before its first CPU forward (`_align_for_cpu_`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = compute_dtype_for(x.device, ACTIVATION_DTYPE)
        bias = None if self.bias is None else self.bias.to(dtype)
        if dtype == ACTIVATION_DTYPE and self.qweight._scale.dtype == dtype:
            self._align_for_cpu_()
            y = F.linear(x.to(dtype), self.qweight, bias)  # quanto's int8 kernel: scale and activations share a dtype
        else:  # no bf16 units, or an older file's fp32 scales: dequantize, same numbers
            y = F.linear(x.to(dtype), self.qweight.dequantize().to(dtype), bias)
        return y.to(x.dtype)

    def _align_for_cpu_(self) -> None:
        """Once per layer; a no-op on GPUs and for aligned weights."""
        data = self.weight._data
        if data.device.type == "cpu" and data.data_ptr() % CPU_ALIGNMENT:
            self.weight._data = data.clone()  # torch's CPU allocator returns 64-byte aligned memory


def _linears(module: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear) and not isinstance(m, QModuleMixin)]


def _replace(root: nn.Module, name: str, new: nn.Module):
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def quantize_layer_(root: nn.Module, name: str) -> None:
    """Replace the float nn.Linear `name` inside `root` with a frozen `Int8Linear`; its float weight goes. The layer
    is quantized from bf16 (whatever its float dtype), so the scales match the int8 kernel's bf16 activations."""
    qlinear = Int8Linear.from_module(root.get_submodule(name).to(ACTIVATION_DTYPE), weights=qint8)
    qlinear.freeze()
    _replace(root, name, qlinear)


def quantize_linears_(module: nn.Module) -> nn.Module:
    """Quantize every float nn.Linear inside `module` in place."""
    for name, _ in _linears(module):
        quantize_layer_(module, name)
    return module


def quantization_map(model: nn.Module) -> dict[str, str]:
    """{module name: weight qtype} of every quantized layer."""
    return {n: m.weight_qtype.name for n, m in model.named_modules() if isinstance(m, QModuleMixin)}


def quantization_metadata(model: nn.Module) -> dict[str, str]:
    """Safetensors metadata describing the model's quantization ({} for a float model)."""
    qmap = quantization_map(model)
    return {QUANT_METADATA_KEY: json.dumps(qmap)} if qmap else {}


def read_quantization_map(metadata: dict[str, str], name: str) -> dict[str, str] | None:
    """The map stored in a file's metadata; None for a float checkpoint; a clear error when it is damaged."""
    text = metadata.get(QUANT_METADATA_KEY)
    if text is None:
        return None
    try:
        qmap = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, a number of more than 4300 digits, deep nesting
        raise CheckpointError(f"{name}: the int8 quantization map is corrupt ({str(e)[:200]}); re-create the int8 "
                              "file") from None
    if not isinstance(qmap, dict) or any(v != qint8.name for v in qmap.values()):
        raise CheckpointError(f"{name}: unsupported quantization map (only {qint8.name} weights are supported)")
    return qmap


def prepare_quantized_(model: nn.Module, qmap: dict[str, str], name: str, sd: Mapping) -> nn.Module:
    """Swap the layers the map names for empty (meta) `Int8Linear`s, ready for `load_state_dict(assign=True)`.

    The map is checked against the file's tensors `sd` first, from names and header shapes alone (nothing read):
    it must list exactly the layers whose int8 weights (`<layer>.weight._data`) the file holds, each a linear of
    this model with `_data` [out, in] and `_scale` [out, 1]. Raises CheckpointError naming the file and the first
    layer or tensor that disagrees, before any layer loads (a map that names too few layers would otherwise fail
    only when loading reached them)."""
    linears = dict(_linears(model))
    unknown = sorted(set(qmap) - set(linears))
    if unknown:
        raise CheckpointError(
            f"{name}: the quantization map names layers this model does not have or that are not linear, "
            f"e.g. {unknown[:3]}; the map does not belong to these weights"
        )
    stored = {key.removesuffix(".weight._data") for key in sd if key.endswith(".weight._data")}
    for layers, problem in ((stored - set(qmap), "holds int8 weights for layers its quantization map does not list"),
                            (set(qmap) - stored, "has a quantization map listing layers whose int8 weights "
                                                 "('<layer>.weight._data') are not in the file")):
        if layers:
            raise CheckpointError(f"{name} {problem}, e.g. {sorted(layers)[:3]}: the map does not belong to these "
                                  "weights. Re-create the int8 file (Magic141 Save int8 Checkpoint or the CLI's "
                                  "quantize)")
    for layer_name in qmap:
        linear = linears[layer_name]
        for key, want in ((f"{layer_name}.weight._data", (linear.out_features, linear.in_features)),
                          (f"{layer_name}.weight._scale", (linear.out_features, 1))):
            shape = shape_of(sd, key) if key in sd else None
            if shape != want:
                raise CheckpointError(f"{name}: int8 tensor '{key}' " + ("is missing" if shape is None else
                                      f"has shape {list(shape)}") + f"; the model needs {list(want)}. The file is "
                                      "damaged or its map does not belong to it; re-create the int8 file")
        _replace(model, layer_name, Int8Linear.qcreate(linear, weights=qint8, device="meta"))
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers as stored (int8 data + scales for quantized layers)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())
