"""ComfyUI's layers and attention for the core DiT (docs/design.md, "Native MODEL and CONDITIONING").

Inside ComfyUI the Model Loader builds `Magic141DiT` from `comfy.ops` classes, as native models take `operations=`:
ComfyUI's `ModelPatcher` then streams and casts each layer (partial loading in low VRAM, Dynamic VRAM, LoRA patches
applied at use), and every attention call goes through ComfyUI's entry point (`optimized_attention`: the backend
ComfyUI chose, and `optimized_attention_override` from the MODEL's transformer options). fp8 weights kept by the
loader become ComfyUI's own fp8 tensors here, which its casting, LoRA patching and low-VRAM code understand."""

from __future__ import annotations

import json
import logging
import types

import comfy.ldm.modules.attention as comfy_attention
import comfy.ops
import comfy.quant_ops
import comfy.utils
import torch

from ...magic141_core.dit.attention import in_query_chunks

log = logging.getLogger("magic141")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
              transformer_options: dict | None = None) -> torch.Tensor:
    """The core's attention (q, k, v [B, H, L, Dh], key_mask [B, 1, 1, L] bool or None -> [B, L, H*Dh]) through
    ComfyUI's `optimized_attention`, read at call time (ComfyUI sets it from its launch options). The key mask
    becomes the additive mask ComfyUI's backends take (-max where a key is hidden). On the CPU it runs over chunks
    of query rows, so Cancel lands within about a second (`in_query_chunks`), as on the core path."""
    mask = None
    if key_mask is not None:
        mask = torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device)
        mask.masked_fill_(~key_mask.to(q.device), -torch.finfo(q.dtype).max)
    options = transformer_options or {}
    return in_query_chunks(lambda rows: comfy_attention.optimized_attention(
        rows, k, v, q.shape[1], mask=mask, skip_reshape=True, transformer_options=options), q, k, dim=1)


def operations(weight_dtype: torch.dtype, compute_dtype: torch.dtype):
    """The `comfy.ops` classes ComfyUI would pick for these dtypes (casting when they differ), with `attention`."""
    base = comfy.ops.pick_operations(weight_dtype, None if compute_dtype == weight_dtype else compute_dtype)
    return type(f"Magic141{base.__name__}", (base,), {"attention": staticmethod(attention)})


def _quantized_ops(compute_dtype: torch.dtype):
    """ComfyUI's ops for per-layer quantized files (`mixed_precision_ops`, the classes ComfyUI loads a scaled-fp8
    checkpoint into), or None on a ComfyUI without that format (0.3.x)."""
    if not hasattr(comfy.utils, "convert_old_quants"):
        return None
    return comfy.ops.pick_operations(None, compute_dtype, model_config=types.SimpleNamespace(
        quant_config={"mixed_ops": True}))


def _quantized_linear(ops, layer, scale: torch.Tensor):
    """A ComfyUI quantized Linear holding `layer`'s fp8 weight and per-tensor scale, loaded by ComfyUI's own code
    (`weight`, `weight_scale` and `comfy_quant` as its scaled-fp8 loader writes them for one layer)."""
    weight = layer.weight.data
    new = ops.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device=weight.device)
    layout = json.dumps({"format": str(weight.dtype).removeprefix("torch.")}).encode("utf-8")
    sd = {"weight": weight, "weight_scale": scale.float().reshape(()),
          "comfy_quant": torch.tensor(list(layout), dtype=torch.uint8)}
    if layer.bias is not None:
        sd["bias"] = layer.bias.data
    missing, unexpected = new.load_state_dict(sd, strict=False)
    if missing or unexpected or not isinstance(new.weight, comfy.quant_ops.QuantizedTensor):
        raise RuntimeError(f"ComfyUI's quantized Linear did not take an fp8 layer (missing {missing}, unexpected "
                           f"{unexpected})")
    return new.requires_grad_(False)


def adopt_fp8_(dit, dtype: torch.dtype) -> int:
    """Hand each scaled-fp8 layer the core loader kept (fp8 `weight` + `weight_scale`) to ComfyUI: it becomes
    ComfyUI's own quantized Linear (the class ComfyUI loads scaled-fp8 files into: fp8 tensor, cast and scaled per
    use, native LoRAs merged by dequantize / re-quantize, low-VRAM patches applied at use). A per-channel scale, or a
    ComfyUI without that format, is dequantized into `dtype` once (logged). Plain fp8 weights need nothing: ComfyUI's
    casting ops take them as they are. Returns the number of layers kept in fp8."""
    ops, kept, dequantized = _quantized_ops(dtype), 0, []
    for name, layer in list(dit.named_modules()):
        scale = layer._buffers.pop("weight_scale", None)
        if scale is None:
            continue
        if ops is not None and scale.numel() == 1 and hasattr(layer, "in_features"):
            parent, _, leaf = name.rpartition(".")
            setattr(dit.get_submodule(parent) if parent else dit, leaf, _quantized_linear(ops, layer, scale))
            kept += 1
            continue
        weight = layer.weight.data.to(torch.float32)
        weight.mul_(scale.reshape(()) if scale.numel() == 1 else scale.reshape(-1, *[1] * (weight.ndim - 1)))
        layer.weight = torch.nn.Parameter(weight.to(dtype), requires_grad=False)
        dequantized.append(name)
    if dequantized:
        log.info("Magic141: %d scaled-fp8 layers dequantized to %s at load (per-channel scales, or a ComfyUI "
                 "without its per-layer fp8 format), e.g. %s", len(dequantized), dtype, dequantized[0])
    return kept
