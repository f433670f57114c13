"""Run the VAE tile by tile and chunk by chunk: streaming decode, one-shot decode, tiled encode.

Each spatial tile is a separate causal stream: its temporal chunks run in clip order with one `CausalState`. Two
orders of the same steps:
- time-major (`decode_stream`): per chunk, every tile, blended and yielded before the next chunk. Only one chunk of
  frames is held, but every tile's state is kept at once: memory is flat in the clip's length.
- tile-major (`decode`, `encode`): per tile, every chunk, accumulated into the whole output. Only one tile's state
  is alive, so the memory floor is lower, but the output (the whole clip) is held anyway.
Both add the same weighted tiles in the same order, so they give bit-identical frames. With one tile and one chunk
no state is kept: exactly the reference's single pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import torch

from ..runtime.interrupt import check_interrupt
from .causal import CausalState
from .shapes import SPATIAL_COMPRESSION, check_latent, latent_frames, pixel_frames
from .tiling import Tiling, blend_ramps, chunk_spans, default_budget, pixel_span, plan_tiling, tile_spans

log = logging.getLogger(__name__)
Step = Callable[[torch.Tensor, "CausalState | None"], torch.Tensor]


def resolve_tiling(vae, latent_shape, tiling: Tiling | None, budget: int | None, decoder: bool, stream: bool) -> Tiling:
    """`tiling` as given, or planned from `budget` bytes (None: from the device's free memory)."""
    if tiling is not None:
        return tiling
    budget = default_budget(vae.device) if budget is None else int(budget)
    element_size = torch.empty((), dtype=vae.activation_dtype).element_size()
    plan = plan_tiling(vae.config, latent_shape, budget, element_size, decoder, stream=stream,
                       can_offload=stream and vae.device.type != "cpu")
    log.info("VAE %s of %s within %.2f GiB: %s", "decode" if decoder else "encode", tuple(latent_shape),
             budget / 2**30, plan)
    return plan


class _Split:
    """The tiles and chunks of one run; latent units in, `in_scale` / `out_scale` x for input / output pixels."""

    def __init__(self, tiling: Tiling, latent_shape, in_scale: int, out_scale: int, spans, out_spans):
        _, _, _, h, w = latent_shape
        rows, cols = tile_spans(h, tiling.tile_height, tiling.overlap), tile_spans(w, tiling.tile_width, tiling.overlap)
        row_w, col_w = blend_ramps(rows, out_scale), blend_ramps(cols, out_scale)
        self.tiles = [(r, c, wr[:, None] * wc[None, :]) for r, wr in zip(rows, row_w) for c, wc in zip(cols, col_w)]
        self.spans, self.out_spans = spans, out_spans  # temporal, input and output frames
        self.in_scale, self.out_scale, self.size = in_scale, out_scale, (h * out_scale, w * out_scale)
        self.tiling = tiling

    def new_state(self) -> CausalState | None:
        single = len(self.tiles) == 1 and len(self.spans) == 1
        return None if single else CausalState(self.tiling.attention_frames)

    def step(self, vae, fn: Step, x, tile, span, state, out_device) -> tuple[torch.Tensor, tuple[slice, slice]]:
        """Output of one tile over one temporal span, weighted for blending (float32 on `out_device`)."""
        check_interrupt()  # cancel between tiles and chunks
        (r0, r1), (c0, c1), weight = tile
        i = self.in_scale
        piece = x[:, :, span[0] : span[1], r0 * i : r1 * i, c0 * i : c1 * i]
        y = fn(piece.to(device=vae.device, dtype=vae.activation_dtype), state).to(out_device, torch.float32)
        o = self.out_scale
        if len(self.tiles) > 1:
            y.mul_(weight.to(out_device))
        return y, (slice(r0 * o, r1 * o), slice(c0 * o, c1 * o))

    def weight_sum(self, out_device) -> torch.Tensor | None:
        if len(self.tiles) == 1:
            return None
        total = torch.zeros(self.size, device=out_device)
        for (r0, r1), (c0, c1), weight in self.tiles:
            total[r0 * self.out_scale : r1 * self.out_scale, c0 * self.out_scale : c1 * self.out_scale] += weight
        return total


def _time_major(vae, fn: Step, x, split: _Split, out_device, callback) -> Iterator[torch.Tensor]:
    """Per temporal span, the blended outputs of all tiles (float32 [B, C, f, H, W])."""
    states = [split.new_state() for _ in split.tiles]
    offload = split.tiling.offload_state and vae.device.type != "cpu" and states[0] is not None
    park = torch.device("cpu") if offload else None
    weight_sum = split.weight_sum(out_device)
    for done, span in enumerate(split.spans, start=1):
        out = None
        for tile, state in zip(split.tiles, states):
            if park is not None:
                state.to(vae.device)
            y, (rows, cols) = split.step(vae, fn, x, tile, span, state, out_device)
            if park is not None:
                state.to(park)
            if weight_sum is None:
                out = y
                continue
            if out is None:
                out = torch.zeros(*y.shape[:3], *split.size, device=out_device)
            out[..., rows, cols].add_(y)
        if weight_sum is not None:
            out.div_(weight_sum)
        if callback is not None:
            callback(done, len(split.spans))
        yield out


def _tile_major(vae, fn: Step, x, split: _Split, out: torch.Tensor, callback) -> torch.Tensor:
    """Fill `out` (zeros, [B, C, frames, H, W]) tile by tile; returns it blended."""
    total = len(split.tiles) * len(split.spans)
    for t, tile in enumerate(split.tiles):
        state = split.new_state()
        for s, (span, (f0, f1)) in enumerate(zip(split.spans, split.out_spans)):
            y, (rows, cols) = split.step(vae, fn, x, tile, span, state, out.device)
            if len(split.tiles) == 1:
                out[:, :, f0:f1] = y
            else:
                out[:, :, f0:f1, rows, cols].add_(y)
            if callback is not None:
                callback(t * len(split.spans) + s + 1, total)
    weight_sum = split.weight_sum(out.device)
    return out if weight_sum is None else out.div_(weight_sum)


def decode_split(z, tiling: Tiling) -> _Split:
    """How a latent `z` (B, C, T, H, W) is cut into temporal chunks and spatial tiles for decoding."""
    spans = chunk_spans(z.shape[2], tiling.chunk_frames)
    return _Split(tiling, z.shape, 1, SPATIAL_COMPRESSION, spans, [pixel_span(a, b) for a, b in spans])


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """Decoder output (about [-1, 1]) -> frames in [0, 1], in place."""
    return pixels.mul_(0.5).add_(0.5).clamp_(0.0, 1.0)


@torch.no_grad()
def decode_chunks(vae, z, tiling=None, budget=None, callback=None, output_device=None) -> Iterator[torch.Tensor]:
    """Generator behind `HunyuanVideoVAE.decode_stream`: frames [B, 3, f, 8h, 8w] in [0, 1], chunk by chunk."""
    tiling = resolve_tiling(vae, z.shape, tiling, budget, decoder=True, stream=True)
    out_device = torch.device(output_device) if output_device is not None else z.device
    for frames in _time_major(vae, vae.decode_pixels, z, decode_split(z, tiling), out_device, callback):
        yield to_unit_range(frames)


@torch.no_grad()
def decode_into(vae, z, tiling=None, budget=None, callback=None, output_device=None) -> torch.Tensor:
    """One-shot decode, tile-major: [B, 3, 4(T-1)+1, 8h, 8w] float32 in [0, 1]."""
    z = check_latent(z, vae.config.latent_channels)
    tiling = resolve_tiling(vae, z.shape, tiling, budget, decoder=True, stream=False)
    out_device = torch.device(output_device) if output_device is not None else z.device
    split = decode_split(z, tiling)
    if len(split.tiles) == 1 and len(split.spans) == 1:
        frames = split.step(vae, vae.decode_pixels, z, split.tiles[0], split.spans[0], None, out_device)[0]
        if callback is not None:
            callback(1, 1)
        return to_unit_range(frames)
    B, _, T, h, w = z.shape
    out = torch.zeros(B, vae.config.out_channels, pixel_frames(T), *split.size, device=out_device)
    return to_unit_range(_tile_major(vae, vae.decode_pixels, z, split, out, callback))


@torch.no_grad()
def encode_tiled(vae, x: torch.Tensor, tiling: Tiling | None = None, budget: int | None = None) -> torch.Tensor:
    """Moments [B, 32, T, H/8, W/8] (float32, on x's device) of frames [B, 3, 4(T-1)+1, H, W], tile-major."""
    B, _, F, H, W = x.shape
    T = latent_frames(F)
    latent_shape = (B, vae.config.latent_channels, T, H // SPATIAL_COMPRESSION, W // SPATIAL_COMPRESSION)
    tiling = resolve_tiling(vae, latent_shape, tiling, budget, decoder=False, stream=False)
    spans = chunk_spans(T, tiling.chunk_frames)
    split = _Split(tiling, latent_shape, SPATIAL_COMPRESSION, 1, [pixel_span(a, b) for a, b in spans], spans)
    out = torch.zeros(B, 2 * vae.config.latent_channels, T, *split.size, device=x.device)
    return _tile_major(vae, vae.encode_moments, x, split, out, None)
