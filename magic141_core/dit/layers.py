"""Small building blocks of the HunyuanVideo / Magic141 DiT: casting layers, the layer factory, embedders, norms,
modulation.

Every layer runs in the dtype of its input (the model's *compute* dtype) and casts its weights to it on the fly.
That is what lets a bf16 checkpoint compute in fp32 on a CPU without native bf16 matmuls (see `runtime/device.py`), the
way ComfyUI's `manual_cast` ops do, and an fp8 checkpoint keep fp8 weights in memory (cast, and scaled, per layer as
it is used). When weight and input dtypes match, the cast is a no-op.

The model builds its weight layers through a factory (`operations`, as ComfyUI's models take one): `CoreOps` here,
plain torch; inside ComfyUI the host passes `comfy.ops` classes (with an `attention` function added), so ComfyUI's
partial loading, weight casting and patches reach every layer. Both build the same layers with the same names.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import attention


def cast(param: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if param is None else param.to(device=like.device, dtype=like.dtype)


def cast_weight(layer: nn.Module, like: torch.Tensor) -> torch.Tensor:
    """`layer.weight` in `like`'s dtype and device, times `layer.weight_scale` when it has one (a scaled fp8 weight:
    one scale, or one per output channel; `weights.fp8`), computed in that dtype at every use."""
    weight = cast(layer.weight, like)
    scale = getattr(layer, "weight_scale", None)
    if scale is None:
        return weight
    scale = cast(scale, like)
    scale = scale.reshape(()) if scale.numel() == 1 else scale.reshape(-1, *[1] * (weight.ndim - 1))
    if weight.dtype == layer.weight.dtype:  # `cast` may have returned the stored weight itself: never scale it in place
        return weight * scale
    return weight.mul_(scale)  # the cast's own copy (fp8 -> float always copies): one temporary, not two


class Linear(nn.Linear):
    """nn.Linear that computes in its input's dtype (fp8 weights cast, and scaled, at use)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, cast_weight(self, x), cast(self.bias, x))


class LayerNorm(nn.LayerNorm):
    """Affine LayerNorm that computes in its input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, cast(self.weight, x), cast(self.bias, x), self.eps)


class RMSNorm(nn.Module):
    """RMSNorm over the last dim, normalised in fp32 (HunyuanVideo's q/k norm, eps 1e-6). Arguments as torch's
    `nn.RMSNorm` (always affine)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6, elementwise_affine: bool = True, device=None,
                 dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(normalized_shape, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)
        return normed * cast(self.weight, x)


def layer_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm without affine parameters, as every adaLN-modulated norm of the DiT."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, first: int = 0) -> torch.Tensor:
    """adaLN: x [B, L, D] * (1 + scale) + shift, with shift and scale [B, 1, D].

    Token replace (HunyuanVideo-I2V v2): shift and scale are [B, 2, D], row 0 for the first `first` tokens (the
    clean reference frames, modulated at timestep 0), row 1 for the rest, as the official code and diffusers'
    `HunyuanVideoTokenReplaceAdaLayerNormZero` compute it. Only those `first` tokens take extra memory."""
    if shift.shape[1] == 1:
        return torch.addcmul(shift, x, 1 + scale)
    out = torch.addcmul(shift[:, 1:], x, 1 + scale[:, 1:])
    out[:, :first] = torch.addcmul(shift[:, :1], x[:, :first], 1 + scale[:, :1])
    return out


def gated(x: torch.Tensor, gate: torch.Tensor, first: int = 0) -> torch.Tensor:
    """The gated residual branch gate * x, x [B, L, D]; gate [B, 1, D], or [B, 2, D] under token replace (row 0 for
    the first `first` tokens, see `modulate`)."""
    if gate.shape[1] == 1:
        return gate * x
    out = gate[:, 1:] * x
    out[:, :first] = gate[:, :1] * x[:, :first]
    return out


class Modulation(nn.Module):
    """vec [B, D] -> `factor` modulation vectors, each [B, 1, D] (order as the checkpoint: shift, scale, gate ...).
    Under token replace vec is [B, 2, D] (timestep-0 vector, then the step's) and each output [B, 2, D]."""

    def __init__(self, hidden_size: int, factor: int, operations=None):
        super().__init__()
        self.factor = factor
        self.linear = (operations or CoreOps).Linear(hidden_size, factor * hidden_size)

    def forward(self, vec: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.linear(F.silu(vec))  # [B, factor * D], or [B, 2, factor * D] under token replace
        return (out if vec.ndim == 3 else out.unsqueeze(1)).chunk(self.factor, dim=-1)


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of (fractional) timesteps [B], cos half first, computed in fp32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """t [B] -> [B, D]: sinusoid(256) -> Linear -> SiLU -> Linear (`mlp.0`, `mlp.2`)."""

    def __init__(self, hidden_size: int, frequency_dim: int = 256, operations=None):
        super().__init__()
        ops = operations or CoreOps
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(ops.Linear(frequency_dim, hidden_size), nn.SiLU(),
                                 ops.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_dim).to(dtype))


class MLPEmbedder(nn.Module):
    """CLIP pooled vector [B, 768] -> [B, D] (`vector_in.in_layer`, `vector_in.out_layer`)."""

    def __init__(self, in_dim: int, hidden_size: int, operations=None):
        super().__init__()
        ops = operations or CoreOps
        self.in_layer = ops.Linear(in_dim, hidden_size)
        self.out_layer = ops.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class TextProjection(nn.Module):
    """Mean-pooled text [B, C] -> [B, D] (`linear_1`, `linear_2`, SiLU between)."""

    def __init__(self, in_dim: int, hidden_size: int, operations=None):
        super().__init__()
        ops = operations or CoreOps
        self.linear_1 = ops.Linear(in_dim, hidden_size)
        self.linear_2 = ops.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class MLP(nn.Module):
    """fc1 -> activation -> fc2."""

    def __init__(self, dim: int, hidden: int, activation, operations=None):
        super().__init__()
        ops = operations or CoreOps
        self.fc1 = ops.Linear(dim, hidden)
        self.fc2 = ops.Linear(hidden, dim)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class PatchConv3d(nn.Conv3d):
    """Conv3d computing in its input's dtype. With kernel = stride and no padding (the patch embedding) it is a
    linear map of non-overlapping patches, computed as one matmul: faster than a convolution on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = cast(self.weight, x), cast(self.bias, x)
        if self.kernel_size != self.stride or any(self.padding) or self.groups != 1:
            return F.conv3d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        pt, ph, pw = self.kernel_size
        patches = rearrange(x, "b c (t pt) (h ph) (w pw) -> b t h w (c pt ph pw)", pt=pt, ph=ph, pw=pw)
        return F.linear(patches, weight.flatten(1), bias).movedim(-1, 1)  # [B, D, T/pt, H/ph, W/pw]


class CoreOps:
    """The layer factory without a host: the casting torch layers above and `dit.attention.attention`. A host may
    pass any class with the same members (ComfyUI's `comfy.ops` classes have the four layers; `attention` defaults
    to this one when missing)."""

    Linear = Linear
    LayerNorm = LayerNorm
    RMSNorm = RMSNorm
    Conv3d = PatchConv3d
    attention = staticmethod(attention)


def attention_of(operations) -> callable:
    """The attention function of a layer factory: `attention(q, k, v, key_mask, transformer_options)`."""
    return getattr(operations or CoreOps, "attention", attention)


class PatchEmbed(nn.Module):
    """Video latent [B, C, T, H, W] -> tokens [B, T*H/2*W/2, D] through a Conv3d with kernel = stride = patch."""

    def __init__(self, patch_size: tuple[int, int, int], in_channels: int, hidden_size: int, operations=None):
        super().__init__()
        self.patch_size = patch_size
        self.proj = (operations or CoreOps).Conv3d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(x), "b d t h w -> b (t h w) d")
