"""Attention, 3-D rotary position embedding, and the text-padding key mask.

One attention function serves every block. It calls PyTorch's fused scaled-dot-product attention, which picks
its kernel per device and dtype (flash / memory-efficient on CUDA, the flash CPU kernel on CPU). On a CPU without
native half-precision units the model already computes in fp32 (see `runtime/device.py`); there the fused fp32 kernel is
also the fastest we measured (`benchmarks/dit_forward.py`).

Under sequence parallelism (`magic141_core.parallel`) the model activates its rank's `VideoShard` around the blocks;
`attention` then hands q, k, v to it, which wraps the same kernel in the Ulysses all-to-alls.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache

import torch
import torch.nn.functional as F
from einops import rearrange

from ..runtime.interrupt import check_interrupt, interrupt_check_installed

_SHARD: ContextVar = ContextVar("magic141_sequence_shard", default=None)


@contextmanager
def sequence_shard(shard) -> Iterator[None]:
    """Inside this `with`, `attention` goes through `shard.attention` (a `parallel.VideoShard`); None: unchanged."""
    token = _SHARD.set(shard)
    try:
        yield
    finally:
        _SHARD.reset(token)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
              transformer_options: dict | None = None) -> torch.Tensor:
    """q, k, v: [B, H, L, Dh]; key_mask: [B, 1, 1, L] bool (True = attend) or None -> [B, L, H*Dh].

    `transformer_options` (the host's per-forward options) is not read here: a host that routes attention through
    its own entry point passes that function as its layer factory's `attention` (`dit.layers.CoreOps`)."""
    shard = _SHARD.get()
    if shard is not None:  # sequence parallel: L is this rank's video tokens + all text tokens
        return shard.attention(q, k, v, key_mask)
    out = in_query_chunks(lambda rows: F.scaled_dot_product_attention(rows, k, v, attn_mask=key_mask), q, k, dim=2)
    return rearrange(out, "b h l d -> b l (h d)")


def in_query_chunks(attend, q: torch.Tensor, k: torch.Tensor, dim: int) -> torch.Tensor:
    """`attend(q)` for q [B, H, L, Dh] against keys k [B, H, S, Dh], cancellable: on the CPU with a cancel hook
    installed, over chunks of query rows (`_query_chunk`), checking for a cancel before each, the results written
    along `dim` (the query axis of attend's output) into one tensor. Exact: each query row's softmax is independent
    of the others. Every attention entry point (ours, ComfyUI's in nodes/host/comfy_ops.py) goes through here."""
    rows = _query_chunk(q, k)
    if rows >= q.shape[2]:
        return attend(q)
    out = None
    for start in range(0, q.shape[2], rows):
        check_interrupt()
        part = attend(q[:, :, start : start + rows])
        if out is None:
            out = part.new_empty(part.shape[:dim] + (q.shape[2],) + part.shape[dim + 1:])
        out.narrow(dim, start, part.shape[dim]).copy_(part)
    return out


CPU_CHUNK_SCORES = 1 << 26  # query x key x head scores per cancellable chunk on the CPU (about 1 s on 2 cores)


def _query_chunk(q: torch.Tensor, k: torch.Tensor) -> int:
    """Query rows per attention call: all of them, unless a cancel hook is installed and the work runs on the CPU,
    where one 540p attention takes minutes; then chunks of about `CPU_CHUNK_SCORES` scores (GPUs stay unsplit:
    there a whole block takes well under a second)."""
    if q.device.type != "cpu" or not interrupt_check_installed():
        return q.shape[2]
    return max(256, CPU_CHUNK_SCORES // max(1, k.shape[2] * q.shape[0] * q.shape[1]))


def text_key_mask(num_valid: torch.Tensor, img_len: int, txt_len: int) -> torch.Tensor | None:
    """Key mask [B, 1, 1, img_len + txt_len] that hides text padding; None when no sample has padding.

    `num_valid` [B] counts each sample's valid (leading) text tokens, as diffusers and the official flash-attention
    `cu_seqlens` do. Padding tokens never become keys, so they cannot change a video token.
    """
    if bool((num_valid >= txt_len).all()):
        return None
    positions = torch.arange(img_len + txt_len, device=num_valid.device)
    return (positions[None] < img_len + num_valid[:, None])[:, None, None, :]


@lru_cache(maxsize=8)
def rope_table(
    grid: tuple[int, int, int], txt_len: int, axes: tuple[int, int, int], theta: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T*H*W + txt_len, head_dim] (fp32) for the joint sequence [video ; text].

    Video tokens, in (t, h, w) raster order, rotate interleaved pairs of each axis' slice of the head dim by
    position * theta^(-2i/d). Text tokens get the identity rotation (cos 1, sin 0): HunyuanVideo applies RoPE to
    video tokens only, and this lets one elementwise op cover the whole joint sequence. Cached per shape.
    """
    positions = torch.stack(
        torch.meshgrid(*(torch.arange(n, dtype=torch.float32, device=device) for n in grid), indexing="ij"),
        dim=-1,
    ).reshape(-1, 3)  # [T*H*W, 3]
    angles = []
    for axis, dim in enumerate(axes):
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim)  # [dim/2]
        angles.append(torch.outer(positions[:, axis], freqs).repeat_interleave(2, dim=1))  # [N, dim]
    angles = torch.cat(angles, dim=1)  # [N, head_dim]
    text = torch.zeros(txt_len, angles.shape[1], device=device)
    angles = torch.cat([angles, text])
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin) in fp32. x: [B, H, L, Dh]."""
    xf = x.float()
    x0, x1 = xf.unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack([-x1, x0], dim=-1).flatten(-2)
    return (xf * cos + rotated * sin).to(x.dtype)
