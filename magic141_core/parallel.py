"""Sequence parallelism over torch.distributed (launched with `torchrun`): the DiT's video tokens split across ranks,
Ulysses attention, and the VAE decode split by spatial tiles.

DiT (DeepSpeed-Ulysses, arXiv 2309.14509): after the patch embedding each of the N ranks keeps 1/N of the video
tokens (zero-padded to a multiple of N; padding is masked out of every attention). Everything per token (norms,
modulation, linears, MLPs, RoPE with the rank's rows of the table, the final layer) runs on the rank's share. Around
each attention, one all-to-all turns q/k/v from [this rank's tokens, all heads] into [all tokens, this rank's heads];
the text tokens are on every rank already, so each rank takes its heads of them without communicating. A second
all-to-all returns the output to [this rank's tokens, all heads], with the text output of every head group riding
along. The final layer's output is all-gathered, so every rank holds the whole velocity and runs the same sampler on
the same (CPU-seeded) noise.

VAE: each spatial tile of the tiled decode is an independent causal stream, so ranks decode disjoint sets of tiles
and the tiles are blended in the single-process order: bit-identical to `vae.decode_stream` with the same `Tiling`.
(Splitting by temporal chunks is not: a chunk's GroupNorm statistics, causal-conv frames and attention context come
from every earlier chunk, so the last rank would have to decode the whole clip first.)

    sp = init_from_env("cuda")            # None outside torchrun
    sp.attach(dit)                        # heads must divide by N
    latent = sample_latent(dit, cond, shape)                    # identical on every rank
    for frames in decode_stream(sp, vae, unscale_latent(latent)):  # every rank gets every frame; rank 0 writes
        ...
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange

from .dit.attention import text_key_mask
from .vae.shapes import check_latent
from .vae.streaming import decode_split, resolve_tiling, to_unit_range
from .vae.tiling import MIN_TILE, Tiling, tile_spans

log = logging.getLogger(__name__)

TIMEOUT = timedelta(minutes=10)  # a rank stuck in a collective gives up after this (NCCL's default; gloo's is 30)


# ----------------------------------------------------------------------------------------------- the process group


@dataclass
class SequenceParallel:
    """This rank's place in a sequence-parallel group. Build with `init_from_env` (torchrun) or `from_group`."""

    rank: int
    world_size: int
    group: dist.ProcessGroup | None = None  # None: the default group
    device: torch.device = torch.device("cpu")  # where this rank's collectives run (cuda:LOCAL_RANK under NCCL)

    @classmethod
    def from_group(cls, group: dist.ProcessGroup | None = None, device: str | torch.device = "cpu"):
        return cls(dist.get_rank(group), dist.get_world_size(group), group, torch.device(device))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def check_heads(self, num_heads: int) -> None:
        if num_heads % self.world_size:
            ok = [n for n in range(1, num_heads + 1) if num_heads % n == 0]
            raise ValueError(f"sequence parallel splits the {num_heads} attention heads across processes, so the "
                             f"process count must divide {num_heads}; got {self.world_size}, use one of {ok}")

    def attach(self, model) -> None:
        """Make `model` (a `Magic141DiT`) run sequence-parallel on this group; `model.parallel = None` undoes it."""
        self.check_heads(model.config.num_heads)
        model.parallel = self

    def shard(self, video_len: int, txt_len: int, num_heads: int) -> "VideoShard":
        """This rank's share of one forward's joint sequence [video_len video tokens ; txt_len text tokens]."""
        self.check_heads(num_heads)
        return VideoShard(self, video_len, txt_len)

    def from_rank_zero(self, fn: Callable[[], object]) -> object:
        """fn() on rank 0 only; its result (tensors moved to the CPU) or its error reaches every rank.

        For work whose result must be the same bits everywhere and is too small to split (text encoding, the
        reference latent, file paths). If fn raises on rank 0, every rank raises, instead of waiting for it.
        """
        box = [None]
        error = None
        if self.is_main:
            try:
                box[0] = ("ok", _to_cpu(fn()))
            except Exception as e:  # sent to the other ranks, then re-raised here
                error, box[0] = e, ("error", f"{type(e).__name__}: {e}")
        dist.broadcast_object_list(box, src=0, group=self.group, device=self._object_device())
        if error is not None:
            raise error
        status, value = box[0]
        if status == "error":
            raise RuntimeError(f"rank 0 failed: {value}")
        return value

    def all_gather(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `x` (same shape on every rank), in rank order."""
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x, group=self.group)
        return parts

    def all_to_all(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, ...]: slice j goes to rank j; returns [N, ...] whose slice j came from rank j."""
        x = x.contiguous()  # the collectives read and write raw memory: both buffers must be contiguous
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x, group=self.group)
        return out

    def _object_device(self) -> torch.device | None:
        return self.device if dist.get_backend(self.group) == "nccl" else None


def init_from_env(device: str | torch.device) -> SequenceParallel | None:
    """Join the torchrun job described by the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    Returns None for a single process. A CUDA `device` becomes cuda:LOCAL_RANK and the backend NCCL; a CPU device
    uses gloo. End a successful run with `dist.destroy_process_group()`.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return None
    device = torch.device(device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT, device_id=device if device.type == "cuda" else None)
    sp = SequenceParallel.from_group(None, device)
    log.info("sequence parallel: rank %d of %d on %s (%s)", sp.rank, sp.world_size, device, backend)
    return sp


def _to_cpu(obj):
    """`obj` with every tensor inside (dataclasses, lists, tuples, dicts) moved to the CPU, ready to pickle."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return replace(obj, **{f.name: _to_cpu(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init})
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    return obj


# ------------------------------------------------------------------------------------------ the DiT's token split


class VideoShard:
    """One forward's split: rank r keeps padded video tokens [r L, (r+1) L), L = ceil(video_len / N), and every text
    token. The joint sequence every attention sees after the all-to-all is [all padded video ; text]."""

    def __init__(self, sp: SequenceParallel, video_len: int, txt_len: int):
        self.sp, self.video_len, self.txt_len = sp, video_len, txt_len
        self.local_len = math.ceil(video_len / sp.world_size)  # L
        self.padded_len = self.local_len * sp.world_size
        self.start = sp.rank * self.local_len

    def split(self, img: torch.Tensor) -> torch.Tensor:
        """Video tokens [B, Li, D] -> this rank's [B, L, D] (a copy, so the full sequence can be freed)."""
        img = F.pad(img, (0, 0, 0, self.padded_len - self.video_len))
        return img[:, self.start : self.start + self.local_len].clone()

    def leading(self, count: int) -> int:
        """How many of the first `count` video tokens (token replace's reference frames) are this rank's."""
        return max(0, min(count - self.start, self.local_len))

    def split_rope(self, rope: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE table (cos, sin) [Li + Lt, Dh] -> this rank's rows [L + Lt, Dh]; padding gets the identity."""
        def rows(table: torch.Tensor, identity: float) -> torch.Tensor:
            video = F.pad(table[: self.video_len], (0, 0, 0, self.padded_len - self.video_len), value=identity)
            return torch.cat([video[self.start : self.start + self.local_len], table[self.video_len :]])

        cos, sin = rope
        return rows(cos, 1.0), rows(sin, 0.0)

    def key_mask(self, num_valid: torch.Tensor) -> torch.Tensor | None:
        """Key mask [B, 1, 1, padded + Lt] over the gathered sequence: hides video padding and text padding."""
        if self.padded_len == self.video_len:
            return text_key_mask(num_valid, self.video_len, self.txt_len)
        positions = torch.arange(self.padded_len + self.txt_len, device=num_valid.device)
        video = positions < self.video_len
        text = (positions >= self.padded_len) & (positions[None] < self.padded_len + num_valid[:, None])  # [B, P]
        return (video | text)[:, None, None, :]

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask) -> torch.Tensor:
        """Ulysses attention. q, k, v: [B, H, L + Lt, Dh] (this rank's video tokens, then all text tokens).

        Returns [B, L + Lt, H*Dh], what `dit.attention.attention` returns for the same local tokens.
        """
        n, L = self.sp.world_size, self.local_len
        h = q.shape[1] // n  # heads per rank
        mine = slice(self.sp.rank * h, (self.sp.rank + 1) * h)
        # 1. video q/k/v by tokens -> by heads: head group j goes to rank j, which gets every rank's tokens
        video = torch.stack([t[:, :, :L] for t in (q, k, v)])  # [3, B, H, L, Dh]
        video = self.sp.all_to_all(video.unflatten(2, (n, h)).movedim(2, 0))  # [n (source rank), 3, B, h, L, Dh]
        video = video.movedim(0, 3).flatten(3, 4)  # [3, B, h, n*L, Dh]: all video tokens (rank order), my heads
        # 2. text is replicated: my heads of it, no communication
        q, k, v = (torch.cat([vid, t[:, mine, L:]], dim=2) for vid, t in zip(video, (q, k, v)))  # [B, h, nL+Lt, Dh]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)  # [B, h, nL + Lt, Dh]
        # 3. back by tokens: rank j gets its video tokens and the text, for my heads
        video_out = out[:, :, : n * L].unflatten(2, (n, L)).movedim(2, 0)  # [n (destination), B, h, L, Dh]
        text_out = out[:, :, n * L :].expand(n, -1, -1, -1, -1)  # [n, B, h, Lt, Dh]
        out = self.sp.all_to_all(torch.cat([video_out, text_out], dim=3))  # [n (head group), B, h, L + Lt, Dh]
        return rearrange(out, "n b h l d -> b l (n h d)")

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's final-layer output [B, L, C] -> every rank's, unpadded: [B, Li, C] on every rank."""
        return torch.cat(self.sp.all_gather(x), dim=1)[:, : self.video_len]


# ------------------------------------------------------------------------------------- the VAE decode, by tiles


def tiling_for_ranks(tiling: Tiling, latent_hw: tuple[int, int], ranks: int) -> Tiling:
    """`tiling` if it has at least `ranks` spatial tiles; else the rows x columns grid of at least `ranks` tiles
    (each side >= MIN_TILE and > 2 x overlap) that decodes the least area. `tiling` when no grid fits."""
    h, w = latent_hw
    overlap = tiling.overlap

    def tiles(th, tw):
        return tile_spans(h, th, overlap), tile_spans(w, tw, overlap)

    def count(th, tw):
        rows, cols = tiles(th, tw)
        return len(rows) * len(cols)

    if count(tiling.tile_height, tiling.tile_width) >= ranks:
        return tiling
    best, best_area = tiling, math.inf
    for n_rows in range(1, ranks + 1):
        n_cols = math.ceil(ranks / n_rows)
        th = None if n_rows == 1 else math.ceil((h + (n_rows - 1) * overlap) / n_rows)
        tw = None if n_cols == 1 else math.ceil((w + (n_cols - 1) * overlap) / n_cols)
        if any(t is not None and (t < MIN_TILE or t <= 2 * overlap) for t in (th, tw)) or count(th, tw) < ranks:
            continue
        rows, cols = tiles(th, tw)
        area = sum(b - a for a, b in rows) * sum(b - a for a, b in cols)
        if area < best_area:
            best, best_area = replace(tiling, tile_height=th, tile_width=tw), area
    return best


@torch.no_grad()
def decode_stream(
    sp: SequenceParallel,
    vae,
    z: torch.Tensor,
    tiling: Tiling | None = None,
    memory_budget: int | None = None,
    output_device: torch.device | str | None = None,
) -> Iterator[torch.Tensor]:
    """`vae.decode_stream(z, tiling)` with the spatial tiles split across ranks; call it on every rank.

    z: the same UNSCALED latent [B, 16, T, h, w] on every rank. Yields, on every rank, the frames of each temporal
    chunk, [B, 3, f, 8h, 8w] float32 in [0, 1], bit-identical to the single-process `decode_stream` with the same
    tiling. `tiling` None: rank 0 plans it from `memory_budget` (as `decode_stream` does), refined to at least one
    tile per rank (`tiling_for_ranks`). Rank r decodes tiles r, r+N, ...; each chunk's tiles are all-gathered and
    every rank blends them in tile order, exactly as `decode_stream` does.
    """
    z = check_latent(z, vae.config.latent_channels)
    if tiling is None:
        def plan():
            planned = resolve_tiling(vae, z.shape, None, memory_budget, decoder=True, stream=True)
            return tiling_for_ranks(planned, tuple(z.shape[3:]), sp.world_size)

        tiling = sp.from_rank_zero(plan)
        log.info("VAE decode on %d ranks: %s", sp.world_size, tiling)
    split = decode_split(z, tiling)
    n, comm = sp.world_size, sp.device
    out_device = torch.device(output_device) if output_device is not None else z.device
    mine = split.tiles[sp.rank :: n]
    per_rank = math.ceil(len(split.tiles) / n)
    states = [split.new_state() for _ in mine]
    (r0, r1), (c0, c1), _ = split.tiles[0]  # every tile has the same size (tile_spans)
    tile_size = ((r1 - r0) * split.out_scale, (c1 - c0) * split.out_scale)
    weight_sum = split.weight_sum(comm)
    for (f0, f1), (a, b) in zip(split.out_spans, split.spans):
        ys = [split.step(vae, vae.decode_pixels, z, tile, (a, b), state, comm)[0] for tile, state in zip(mine, states)]
        if len(ys) < per_rank:  # fewer tiles here than on rank 0: send zeros in their place
            ys += [torch.zeros(z.shape[0], vae.config.out_channels, f1 - f0, *tile_size, device=comm)]
        gathered = sp.all_gather(torch.stack(ys))  # N x [per_rank, B, 3, f, th, tw]; gathered[r][j] = tile j*N + r
        out, o = None, split.out_scale
        for i, ((t0, t1), (u0, u1), _) in enumerate(split.tiles):  # blend in tile order, as `decode_stream` does
            y = gathered[i % n][i // n]
            if weight_sum is None:
                out = y
                continue
            if out is None:
                out = torch.zeros(*y.shape[:3], *split.size, device=comm)
            out[..., t0 * o : t1 * o, u0 * o : u1 * o].add_(y)
        if weight_sum is not None:
            out.div_(weight_sum)
        yield to_unit_range(out).to(out_device)


# --------------------------------------------------------------------------- the long-video runner's seams


class RankZeroEncoders:
    """The text/image encoders on rank 0 only (the other ranks need not load them); every rank gets rank 0's
    conditioning, so the replicated text tokens are the same bits everywhere."""

    def __init__(self, sp: SequenceParallel, encoders):
        self.sp, self.encoders = sp, encoders

    def encode(self, *args, **kwargs):
        return self.sp.from_rank_zero(lambda: self.encoders.encode(*args, **kwargs))


class ParallelFrameVAE:
    """A `long_video.FrameVAE` for torchrun: encode on rank 0 (broadcast), decode split by tiles (`decode_stream`)."""

    def __init__(self, sp: SequenceParallel, frame_vae):
        self.sp, self.frame_vae = sp, frame_vae  # frame_vae: a `video.long_video.CoreFrameVAE`
        self.compute_dtype = frame_vae.compute_dtype

    def encode_frames(self, frames: torch.Tensor, seed: int) -> torch.Tensor:
        return self.sp.from_rank_zero(lambda: self.frame_vae.encode_frames(frames, seed))

    def decode_frames(self, latent: torch.Tensor) -> Iterator[torch.Tensor]:
        vae = self.frame_vae.vae
        for chunk in decode_stream(self.sp, vae, latent.to(vae.device), memory_budget=self.frame_vae.memory_budget,
                                   output_device="cpu"):
            yield chunk[0].movedim(0, -1)  # [f, H, W, 3]
