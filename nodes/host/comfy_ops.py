"""ComfyUI's layers and attention for the core DiT (docs/design.md, "Native MODEL and CONDITIONING").

Inside ComfyUI the Model Loader builds `Magic141DiT` from `comfy.ops` classes, as native models take `operations=`:
ComfyUI's `ModelPatcher` then streams and casts each layer (partial loading in low VRAM, Dynamic VRAM, LoRA patches
applied at use), and every attention call goes through ComfyUI's entry point (`optimized_attention`: the backend
ComfyUI chose, and `optimized_attention_override` from the MODEL's transformer options). fp8 weights kept by the
loader become ComfyUI's own fp8 tensors here, which its casting, LoRA patching and low-VRAM code understand."""

from __future__ import annotations

import logging

import comfy.ldm.modules.attention as comfy_attention
import comfy.ops
import comfy.quant_ops
import torch

log = logging.getLogger("magic141")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
              transformer_options: dict | None = None) -> torch.Tensor:
    """The core's attention (q, k, v [B, H, L, Dh], key_mask [B, 1, 1, L] bool or None -> [B, L, H*Dh]) through
    ComfyUI's `optimized_attention`, read at call time (ComfyUI sets it from its launch options). The key mask
    becomes the additive mask ComfyUI's backends take (-max where a key is hidden)."""
    mask = None
    if key_mask is not None:
        mask = torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device)
        mask.masked_fill_(~key_mask.to(q.device), -torch.finfo(q.dtype).max)
    return comfy_attention.optimized_attention(q, k, v, q.shape[1], mask=mask, skip_reshape=True,
                                               transformer_options=transformer_options or {})


def operations(weight_dtype: torch.dtype, compute_dtype: torch.dtype):
    """The `comfy.ops` classes ComfyUI would pick for these dtypes (casting when they differ), with `attention`."""
    base = comfy.ops.pick_operations(weight_dtype, None if compute_dtype == weight_dtype else compute_dtype)
    return type(f"Magic141{base.__name__}", (base,), {"attention": staticmethod(attention)})


def _fp8_tensor(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype):
    """ComfyUI's per-tensor fp8 tensor (`QuantizedTensor`, TensorCoreFP8Layout) for an fp8 weight and its scale, as
    ComfyUI loads a scaled-fp8 layer; None where this ComfyUI has no such tensor type."""
    layout = "TensorCoreFP8Layout"
    get_class = getattr(comfy.quant_ops, "get_layout_class", None)
    layout_class = get_class(layout) if get_class is not None else None
    params_class = getattr(layout_class, "Params", None)
    if params_class is None:
        return None
    params = params_class(scale=scale.float().reshape(()), orig_dtype=dtype, orig_shape=tuple(weight.shape))
    return comfy.quant_ops.QuantizedTensor(weight, layout, params)


def adopt_fp8_(dit, dtype: torch.dtype) -> int:
    """Turn each scaled-fp8 layer the core loader kept (fp8 `weight` + `weight_scale`) into one ComfyUI handles: its
    weight becomes ComfyUI's fp8 tensor (cast and scaled per use, LoRA-patchable); a per-channel scale, or a ComfyUI
    without that tensor type, is dequantized into `dtype` once (logged). Plain fp8 weights need nothing: ComfyUI's
    casting ops take them as they are. Returns the number of layers kept in fp8."""
    kept, dequantized = 0, []
    for name, layer in dit.named_modules():
        scale = layer._buffers.pop("weight_scale", None)
        if scale is None:
            continue
        tensor = _fp8_tensor(layer.weight.data, scale, dtype) if scale.numel() == 1 else None
        if tensor is None:
            weight = layer.weight.data.to(torch.float32)
            weight.mul_(scale.reshape(()) if scale.numel() == 1 else scale.reshape(-1, *[1] * (weight.ndim - 1)))
            tensor = weight.to(dtype)
            dequantized.append(name)
        else:
            kept += 1
        layer.weight = torch.nn.Parameter(tensor, requires_grad=False)
    if dequantized:
        log.info("Magic141: %d scaled-fp8 layers dequantized to %s at load (per-channel scales, or a ComfyUI "
                 "without its fp8 tensor type), e.g. %s", len(dequantized), dtype, dequantized[0])
    return kept
