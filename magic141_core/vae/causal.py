"""Causal layers and the state that lets a clip be processed chunk by chunk with (almost) one-pass results.

A `CausalConv3d` pads time only on the past side: kt-1 copies of frame 0 at the start of a clip (replicate
padding), so output frame t sees input frames <= t. Space is replicate-padded on both sides.

In temporal chunks, each conv prepends, instead of replicated frame 0, the frames of the previous chunk its next
window needs: the outputs are exactly those of one pass. `GroupNorm` however normalises over every frame it is given,
and one pass normalises over the whole clip, which a stream cannot see; with a state it normalises each chunk with
the statistics of all frames of the tile so far (deviation from the reference, which has no chunks: a running
estimate is closer to the whole-clip statistics than the chunk's own, and equals them on the last chunk).

`CausalState` carries, per layer: conv frames, GroupNorm running moments, mid-block attention keys/values, and
which layers have seen the clip's first frame. One state belongs to one spatial tile of one clip; `None` means
"the whole clip in one pass" (the reference computation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..dit.layers import cast
from ..runtime.interrupt import check_interrupt, interrupt_check_installed

_ONEDNN = torch.backends.mkldnn.is_available()
_ONEDNN_MIN_FLOPS = 2e7  # below this the im2col kernel is as fast


class CausalState:
    """What one chunk of a tile leaves for the next chunk of the same tile.

    `attention_frames` bounds how many earlier latent frames of keys/values the mid-block attention keeps, so the
    state's size depends on the tile, never on the clip's length.
    """

    def __init__(self, attention_frames: int = 20):
        if attention_frames < 0:
            raise ValueError(f"attention_frames must be >= 0, got {attention_frames}")
        self.attention_frames = attention_frames
        self._tensors: dict[nn.Module, object] = {}

    def get(self, layer: nn.Module):
        return self._tensors.get(layer)

    def put(self, layer: nn.Module, value) -> None:
        self._tensors[layer] = value

    def first_pass(self, layer: nn.Module) -> bool:
        """True the first time `layer` asks (its input holds the clip's frame 0), False afterwards."""
        first = layer not in self._tensors
        self._tensors.setdefault(layer, True)
        return first

    def to(self, device: torch.device | str) -> "CausalState":
        """Move every carried tensor (e.g. to the CPU between chunks when decoding on a GPU); in place."""
        for layer, value in self._tensors.items():
            if isinstance(value, torch.Tensor):
                self._tensors[layer] = value.to(device)
            elif isinstance(value, tuple):
                self._tensors[layer] = tuple(v.to(device) for v in value)
        return self


class CausalConv3d(nn.Module):
    """x [B, C_in, T, H, W] -> [B, C_out, T', H', W'] with past-only temporal padding (checkpoint key `conv.*`).

    With stride 1 in time T' = T; with stride 2, T' = (T + kt - 1 - kt) // 2 + 1 (4k+1 -> 2k+1 in the encoder).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride=1):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride)
        kt, kh, kw = self.conv.kernel_size
        self.time_pad, self.space_pad = kt - 1, (kh // 2, kw // 2)

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        past = state.get(self) if state is not None and self.time_pad else None
        x = self._pad(x, past)  # [B, C, time_pad (or carried) + T, H + 2ph, W + 2pw]
        if state is not None and self.time_pad:
            kt, st = self.conv.kernel_size[0], self.conv.stride[0]
            next_window = ((x.shape[2] - kt) // st + 1) * st
            state.put(self, x[:, :, next_window:].clone())  # a copy: a view would pin all of x
        return conv3d(x, cast(self.conv.weight, x), cast(self.conv.bias, x), self.conv.stride)

    def _pad(self, x: torch.Tensor, past: torch.Tensor | None) -> torch.Tensor:
        """Replicate-pad space, prepend `past` (or replicated frame 0) in time: one copy of x instead of two."""
        (ph, pw), tp = self.space_pad, self.time_pad
        if not (ph or pw or tp):
            return x
        B, C, T, H, W = x.shape
        p = tp if past is None else past.shape[2]
        out = x.new_empty(B, C, p + T, H + 2 * ph, W + 2 * pw)
        body = out[:, :, p:]
        body[:, :, :, ph : ph + H, pw : pw + W] = x
        if ph:
            body[:, :, :, :ph, pw : pw + W] = x[:, :, :, :1]
            body[:, :, :, ph + H :, pw : pw + W] = x[:, :, :, -1:]
        if pw:
            body[..., :pw] = body[..., pw : pw + 1]
            body[..., pw + W :] = body[..., pw + W - 1 : pw + W]
        if p:
            out[:, :, :p] = body[:, :, :1] if past is None else past
        return out


CPU_CANCEL_FLOPS = 1e11  # work per cancellable convolution piece on the CPU (about 0.1-1 s on 2 cores)


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride) -> torch.Tensor:
    """F.conv3d without padding; on a CPU in fp32 sizeable convolutions always go to oneDNN.

    F.conv3d sends inputs with N*C*T*H <= 20480 (few channels, short chunks, thin tiles) to an im2col kernel that is
    5-10x slower than oneDNN; a chunked decode produces many such inputs. Same arithmetic, same results to ~1e-6.

    Cancellable: on a CPU with a host's interrupt check installed, a convolution of more than `CPU_CANCEL_FLOPS`
    (one 540p conv of a chunk takes seconds to minutes there) runs in pieces of output frames with the check between
    them. Each output frame sees the same input frames either way (same results to ~1e-6); GPUs stay unsplit.
    """
    flops = 2 * weight[0].numel() * weight.shape[0] * x.shape[0] * math.prod(x.shape[2:])
    kt, st = weight.shape[2], stride[0] if isinstance(stride, (tuple, list)) else stride
    frames = (x.shape[2] - kt) // st + 1
    if x.device.type != "cpu" or flops <= CPU_CANCEL_FLOPS or frames < 2 or not interrupt_check_installed():
        return _conv3d(x, weight, bias, stride, flops)
    per = max(1, int(frames * CPU_CANCEL_FLOPS / flops))
    out = None
    for j0 in range(0, frames, per):
        j1 = min(j0 + per, frames)
        check_interrupt()
        piece = _conv3d(x[:, :, j0 * st : (j1 - 1) * st + kt], weight, bias, stride, flops * (j1 - j0) / frames)
        if out is None:
            out = piece.new_empty(*piece.shape[:2], frames, *piece.shape[3:])
        out[:, :, j0:j1] = piece
    return out


def _conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, flops: float) -> torch.Tensor:
    if x.device.type == "cpu" and x.dtype == torch.float32 and _ONEDNN and flops > _ONEDNN_MIN_FLOPS:
        return torch.ops.aten.mkldnn_convolution(x.contiguous(), weight, bias, [0, 0, 0], list(stride), [1, 1, 1], 1)
    return F.conv3d(x, weight, bias, stride)


def pointwise(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1x1 nn.Conv3d (`quant_conv`, `post_quant_conv`) in the input's dtype."""
    return F.conv3d(x, cast(conv.weight, x), cast(conv.bias, x))


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm over [B, C, T, H, W] in the input's dtype; with a state, over all frames of the tile so far."""

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        weight, bias = cast(self.weight, x), cast(self.bias, x)
        if state is None:
            return F.group_norm(x, self.num_groups, weight, bias, self.eps)
        x, B, C, G = x.contiguous(), x.shape[0], x.shape[1], self.num_groups
        past = state.get(self)
        # this chunk normalised by its own statistics (the final result when it is the first chunk), and them
        out, mean, rstd = torch.native_group_norm(
            x, weight if past is None else None, bias if past is None else None, B, C, x[0, 0].numel(), G, self.eps
        )
        count = torch.full((B, G), x[0].numel() // G, dtype=torch.float64, device=x.device)
        mean, var = mean.double().view(B, G), (rstd.double().view(B, G) ** -2 - self.eps).clamp_(min=0)
        if past is None:
            state.put(self, (count, mean, var * count))
            return out
        count0, mean0, m2_0 = past  # Chan et al.: merge (count, mean, M2) of earlier frames with this chunk's
        total = count0 + count
        delta = mean - mean0
        merged_mean = mean0 + delta * count / total
        merged_m2 = m2_0 + var * count + delta.square() * count0 * count / total
        state.put(self, (total, merged_mean, merged_m2))
        # y = (x - m_chunk) r_chunk  ->  (x - m) r w + b  =  y (r / r_chunk) w + ((m_chunk - m) r w + b)
        r = (merged_m2 / total + self.eps).rsqrt()
        scale = (r / rstd.double().view(B, G)).repeat_interleave(C // G, dim=1) * weight.double()  # [B, C]
        shift = ((mean - merged_mean) * r).repeat_interleave(C // G, dim=1) * weight.double() + bias.double()
        shape = (B, C) + (1,) * (x.ndim - 2)
        return out.mul_(scale.to(x.dtype).view(shape)).add_(shift.to(x.dtype).view(shape))
