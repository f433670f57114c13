"""Building blocks of the causal 3-D VAE: GroupNorm, residual block, resamplers, causal mid-block attention.

Every block takes `(x, state)`: `state` is the tile's `CausalState` when a clip is processed in temporal chunks,
`None` for one pass over the whole clip. Attribute names are the checkpoint keys (`resnets.N.conv1.conv.weight`,
`downsamplers.0.conv.conv.weight`, `attentions.0.to_q.weight`, ...). Layers compute in their input's dtype and cast
weights on the fly (see `magic141_core.runtime.device`).

GroupNorm statistics (over a tile, and over its frames so far) and the attention's context (a tile, a bounded
number of earlier frames) are the only places where a tiled or chunked pass can differ from one pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..dit.layers import Linear
from ..runtime.interrupt import check_interrupt, interrupt_check_installed
from . import causal
from .causal import CausalConv3d, CausalState, GroupNorm

EPS = 1e-6


class ResnetBlock(nn.Module):
    """x [B, C_in, T, H, W] -> [B, C_out, T, H, W]: (GroupNorm, SiLU, causal conv) x 2 plus a (1x1x1) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = GroupNorm(groups, in_channels, eps=EPS)
        self.conv1 = CausalConv3d(in_channels, out_channels)
        self.norm2 = GroupNorm(groups, out_channels, eps=EPS)
        self.conv2 = CausalConv3d(out_channels, out_channels)
        self.conv_shortcut = CausalConv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, state), inplace=True), state)
        h = self.conv2(F.silu(self.norm2(h, state), inplace=True), state)
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x, state)
        return h.add_(shortcut)


class Downsample(nn.Module):
    """Strided causal conv: [B, C, T, H, W] -> [B, C, T', H/s, W/s], T' = (T-1)/2+1 when the time stride is 2."""

    def __init__(self, channels: int, factors: tuple[int, int]):
        super().__init__()
        t, s = factors
        self.conv = CausalConv3d(channels, channels, 3, stride=(t, s, s))

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        return self.conv(x, state)


class Upsample(nn.Module):
    """Nearest upsampling then a causal conv: [B, C, T, H, W] -> [B, C, T', sH, sW].

    The clip's frame 0 is only upsampled in space; every other frame also in time, so 1 + (T-1) frames become
    1 + t(T-1) (a chunk without frame 0 becomes tT).
    """

    def __init__(self, channels: int, factors: tuple[int, int]):
        super().__init__()
        self.factors = factors
        self.conv = CausalConv3d(channels, channels, 3)

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        t, s = self.factors
        first = state is None or state.first_pass(self)
        parts = []
        if first:
            parts.append(F.interpolate(x[:, :, 0], scale_factor=(s, s), mode="nearest").unsqueeze(2))
            x = x[:, :, 1:]
        if x.shape[2]:
            # a non-contiguous 5-D input can give wrong results in nearest3d (pytorch#81665)
            parts.append(F.interpolate(x.contiguous(), scale_factor=(t, s, s), mode="nearest"))
        x = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
        return self.conv(x, state)


class CausalAttention(nn.Module):
    """Single-head self-attention over all pixels of the current and earlier frames, plus a residual.

    x [B, C, T, H, W] -> same shape. Frame f attends to every pixel of frames <= f (block-causal), computed one
    query frame at a time without a mask (exactly the reference's -inf mask, without its (THW)^2 tensor). With a
    state, keys and values of up to `state.attention_frames` earlier frames are kept for the next chunk.
    """

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = GroupNorm(groups, channels, eps=EPS)
        self.to_q = Linear(channels, channels)
        self.to_k = Linear(channels, channels)
        self.to_v = Linear(channels, channels)
        self.to_out = nn.ModuleList([Linear(channels, channels)])

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        B, C, T, H, W = x.shape
        hw = H * W
        tokens = rearrange(self.group_norm(x, state), "b c t h w -> b (t h w) c")
        q, k, v = (proj(tokens).unsqueeze(1) for proj in (self.to_q, self.to_k, self.to_v))  # [B, 1, T*hw, C]
        past = state.get(self) if state is not None else None
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # [B, 1, (P+T)*hw, C]
        earlier = k.shape[2] // hw - T
        out = torch.empty_like(q)
        # cancellable on a CPU with the host's check installed, where one 540p query frame is seconds of work: query
        # rows in pieces of about `causal.CPU_CANCEL_FLOPS`, the check between them (each row's softmax is independent)
        cancellable = x.device.type == "cpu" and interrupt_check_installed()
        for f in range(T):
            visible = (earlier + f + 1) * hw
            rows = max(64, int(causal.CPU_CANCEL_FLOPS // (4 * visible * C))) if cancellable else hw
            for r0 in range(f * hw, (f + 1) * hw, rows):
                r1 = min(r0 + rows, (f + 1) * hw)
                if rows < hw:
                    check_interrupt()
                out[:, :, r0:r1] = F.scaled_dot_product_attention(q[:, :, r0:r1], k[:, :, :visible], v[:, :, :visible])
        if state is not None and state.attention_frames:
            keep = min(earlier + T, state.attention_frames) * hw
            state.put(self, (k[:, :, -keep:].clone(), v[:, :, -keep:].clone()))
        out = self.to_out[0](out.squeeze(1))  # [B, T*hw, C]
        return x + rearrange(out, "b (t h w) c -> b c t h w", t=T, h=H, w=W)


class MidBlock(nn.Module):
    """resnet -> causal attention -> resnet at the lowest resolution; shape-preserving."""

    def __init__(self, channels: int, groups: int, attention: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([CausalAttention(channels, groups)] if attention else [])

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        x = self.resnets[0](x, state)
        for attention in self.attentions:
            x = attention(x, state)
        return self.resnets[1](x, state)


class DownBlock(nn.Module):
    """`layers` resnets, then a Downsample when the level has one (`downsamplers.0`)."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, factors: tuple[int, int]):
        super().__init__()
        widths = [in_channels] + [out_channels] * layers
        self.resnets = nn.ModuleList([ResnetBlock(a, b, groups) for a, b in zip(widths[:-1], widths[1:])])
        self.downsamplers = nn.ModuleList([Downsample(out_channels, factors)] if factors != (1, 1) else [])

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        for layer in (*self.resnets, *self.downsamplers):
            x = layer(x, state)
        return x


class UpBlock(nn.Module):
    """`layers` resnets, then an Upsample when the level has one (`upsamplers.0`)."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, factors: tuple[int, int]):
        super().__init__()
        widths = [in_channels] + [out_channels] * layers
        self.resnets = nn.ModuleList([ResnetBlock(a, b, groups) for a, b in zip(widths[:-1], widths[1:])])
        self.upsamplers = nn.ModuleList([Upsample(out_channels, factors)] if factors != (1, 1) else [])

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        for layer in (*self.resnets, *self.upsamplers):
            x = layer(x, state)
        return x
