"""How a clip is split for encoding and decoding: spatial tiles, temporal chunks, blend weights, and a memory plan.

Pure functions of shapes and the config (no model), so plans are tested without running a network.

- Temporal chunks of `chunk_frames` latent frames are processed in order; each spatial tile keeps a `CausalState`
  across chunks, so causal convolutions see exactly the frames they would in one pass and nothing is recomputed.
- Spatial tiles overlap by `overlap` latent pixels and are cross-faded linearly over the shared band (weights
  summing to 1), since GroupNorm statistics and attention differ a little per tile.
- Memory: each tile's state holds the last 2 input frames of every causal conv (~1.1 MB per latent pixel in fp32 for
  the released VAE, ~9 GB for a whole 544x960 frame) plus bounded attention keys/values; a chunk adds its working
  set, proportional to `chunk_frames` x tile area. Neither grows with the clip's length. Streaming keeps every
  tile's state at once (or parks it on the CPU: `offload_state`); one-shot decode and encode run tile by tile and
  keep one (see `streaming.py`), but hold the whole output.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import torch

from .config import VAEConfig
from .shapes import SPATIAL_COMPRESSION, TEMPORAL_COMPRESSION, pixel_start

log = logging.getLogger(__name__)

WORK_FACTOR = 7  # live tensors the size of the largest padded activation at a chunk's peak (measured 5-6.5)
MIN_TILE = 8  # latent pixels (64 px): below this, tile borders dominate


@dataclass(frozen=True)
class Tiling:
    """A split of one decode or encode. Sizes are in latent pixels and latent frames (x8 pixels, x4 frames)."""

    tile_height: int | None = None  # None: the whole height in one tile
    tile_width: int | None = None
    overlap: int = 4  # latent pixels shared by neighbouring tiles and cross-faded (32 px)
    chunk_frames: int | None = 4  # latent frames per step (decode: 4n frames, the first step 4n+1); None = all
    attention_frames: int = 20  # earlier latent frames of attention context kept (20: exact for 81-frame clips)
    offload_state: bool = False  # park each tile's carried state on the CPU between chunks (GPU decoding)

    def __post_init__(self):
        for name in ("tile_height", "tile_width", "chunk_frames"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be None or a whole number >= 1, got {value!r}")
        if self.overlap < 0 or self.attention_frames < 0:
            raise ValueError(f"overlap and attention_frames must be >= 0, got {self.overlap}, {self.attention_frames}")
        for name in ("tile_height", "tile_width"):
            tile = getattr(self, name)
            if tile is not None and self.overlap >= tile:
                raise ValueError(f"overlap {self.overlap} must be smaller than {name} {tile}; use at most {tile // 2}")

    @classmethod
    def off(cls) -> "Tiling":
        """One pass over the whole clip: the reference computation (memory grows with length and size)."""
        return cls(tile_height=None, tile_width=None, chunk_frames=None)


def tile_spans(size: int, tile: int | None, overlap: int) -> list[tuple[int, int]]:
    """[start, end) of evenly spaced tiles covering `size`, neighbours overlapping by >= `overlap`."""
    if tile is None or tile >= size:
        return [(0, size)]
    count = math.ceil((size - overlap) / (tile - overlap))
    starts = [round(i * (size - tile) / (count - 1)) for i in range(count)]
    return [(s, s + tile) for s in starts]


def blend_ramps(spans: list[tuple[int, int]], scale: int) -> list[torch.Tensor]:
    """Per tile, 1-D weights over its `scale`x output: 1 inside, linear ramps across each shared band.

    Two tiles sharing a band get complementary ramps (their weights sum to 1 there).
    """
    ramps = []
    for i, (start, end) in enumerate(spans):
        s, e = start * scale, end * scale
        pos = torch.arange(s, e, dtype=torch.float32) + 0.5
        w = torch.ones(e - s)
        if i > 0 and spans[i - 1][1] * scale > s:
            w = torch.minimum(w, (pos - s) / (spans[i - 1][1] * scale - s))
        if i + 1 < len(spans) and spans[i + 1][0] * scale < e:
            w = torch.minimum(w, (e - pos) / (e - spans[i + 1][0] * scale))
        ramps.append(w)
    return ramps


def chunk_spans(latent_frames: int, chunk: int | None) -> list[tuple[int, int]]:
    """Latent frame ranges [a, b) processed one after another: frame 0 plus `chunk` frames, then `chunk` at a time.

    In pixels that is 4n+1 frames, then 4n: every chunk holds about the same number of frames.
    """
    if chunk is None or chunk + 1 >= latent_frames:
        return [(0, latent_frames)]
    return [(0, chunk + 1)] + [(a, min(a + chunk, latent_frames)) for a in range(chunk + 1, latent_frames, chunk)]


def pixel_span(a: int, b: int) -> tuple[int, int]:
    """Pixel frames [start, end) of latent frames [a, b)."""
    return pixel_start(a), pixel_start(b)


# -- memory model -------------------------------------------------------------------------------------------------


def _convs(config: VAEConfig, decoder: bool):
    """(in_channels, out_channels, spatial scale, frames per latent frame, carried frames) of every 3x3x3 causal conv,
    scales relative to the latent (1 = latent resolution)."""
    widths = config.block_out_channels[::-1] if decoder else config.block_out_channels
    layers = config.layers_per_block + (1 if decoder else 0)
    convs = []
    if decoder:
        s, r = 1, 1
        convs.append((config.latent_channels, widths[0], s, r, 2))
        convs += [(widths[0], widths[0], s, r, 2)] * 4  # mid block: 2 resnets x 2 convs
    else:
        s, r = SPATIAL_COMPRESSION, TEMPORAL_COMPRESSION
        convs.append((config.in_channels, widths[0], s, r, 2))
    for i, (t, f) in enumerate(config.resample_factors()):
        previous = widths[max(i - 1, 0)]
        for j in range(layers):
            convs += [(previous if j == 0 else widths[i], widths[i], s, r, 2), (widths[i], widths[i], s, r, 2)]
        if (t, f) != (1, 1):
            if decoder:
                s, r = s * f, r * t
                convs.append((widths[i], widths[i], s, r, 2))
            else:
                convs.append((widths[i], widths[i], s, r, 3 - t))
                s, r = s // f, r // t
    if not decoder:
        convs += [(widths[-1], widths[-1], s, r, 2)] * 4
    convs.append((widths[-1], config.out_channels if decoder else 2 * config.latent_channels, s, r, 2))
    return convs


def state_elements(config: VAEConfig, decoder: bool = True) -> int:
    """Carried conv-state elements per latent pixel of a tile (276,512 for the released decoder)."""
    return sum(frames * cin * s * s for cin, _, s, _, frames in _convs(config, decoder))


def peak_elements(config: VAEConfig, chunk: int, decoder: bool = True) -> int:
    """Elements of the largest padded conv input or output per latent pixel, for `chunk` latent frames (+1 for the
    first chunk's frame 0, +2 carried frames)."""
    return max(max(cin, cout) * s * s * (r * chunk + 3) for cin, cout, s, r, _ in _convs(config, decoder))


def estimate_bytes(
    config: VAEConfig, shape, tiling: Tiling, element_size: int, decoder: bool = True, stream: bool = True
) -> int:
    """Peak bytes of activations, carried state and output to decode (or encode) latent `shape` with `tiling`.

    `stream`: time-major (`decode_stream`: every tile's state alive, one chunk of output) rather than tile-major
    (`decode` / `encode`: one tile's state alive, the whole output). Weights are not counted.
    """
    B, _, T, h, w = shape
    rows = tile_spans(h, tiling.tile_height, tiling.overlap)
    cols = tile_spans(w, tiling.tile_width, tiling.overlap)
    areas = [(r1 - r0) * (c1 - c0) for r0, r1 in rows for c0, c1 in cols]
    chunk = T if tiling.chunk_frames is None else min(tiling.chunk_frames, T)
    mid = config.block_out_channels[-1]
    per_pixel_state = state_elements(config, decoder) + 2 * mid * min(tiling.attention_frames, T)
    resident = sum(areas) if stream and not tiling.offload_state else max(areas)
    state = per_pixel_state * resident if len(areas) > 1 or len(chunk_spans(T, chunk)) > 1 else 0
    work = WORK_FACTOR * peak_elements(config, chunk, decoder) * max(areas)
    frames = TEMPORAL_COMPRESSION * (chunk if stream else T)  # output frames held
    channels = 3 if decoder else 2 * config.latent_channels
    pixels = (SPATIAL_COMPRESSION**2 * frames) if decoder else (T + chunk)
    output = 4 * channels * pixels * (h * w + 2 * max(areas))  # float32 output plus one weighted tile
    return B * ((state + work) * element_size + output)


def default_budget(device: torch.device) -> int:
    """Bytes the VAE may use: 90 % of free GPU memory, or half of the available RAM (4 GiB if unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.9)
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        return available // 2
    except (OSError, StopIteration, ValueError):
        return 4 << 30


def plan_tiling(
    config: VAEConfig,
    shape,
    budget: int,
    element_size: int = 4,
    decoder: bool = True,
    base: Tiling | None = None,
    stream: bool = True,
    can_offload: bool = False,
) -> Tiling:
    """The least-split tiling of latent `shape` whose estimate fits `budget` bytes.

    Tries the whole frame with `base.chunk_frames` (default 4) down to 1 latent frame per chunk, then ever smaller
    square-ish tiles; with `can_offload` (GPU), parks carried state on the CPU before shrinking tiles. Never fails:
    if nothing fits, logs a warning and returns the split with the smallest estimate.
    """
    base = base or Tiling()
    _, _, T, h, w = shape
    longest_chunk = T if base.chunk_frames is None else min(base.chunk_frames, T)
    smallest, need = None, float("inf")
    for parts in range(1, max(h, w) + 1):
        side = math.ceil((max(h, w) + (parts - 1) * base.overlap) / parts)
        if parts > 1 and side < max(MIN_TILE, 2 * base.overlap):
            break
        tile = None if parts == 1 else side
        for offload in (False, True) if can_offload else (False,):
            for chunk in range(longest_chunk, 0, -1):
                candidate = replace(
                    base, tile_height=tile if tile and tile < h else None,
                    tile_width=tile if tile and tile < w else None, chunk_frames=chunk, offload_state=offload,
                )
                estimate = estimate_bytes(config, shape, candidate, element_size, decoder, stream)
                if estimate <= budget:
                    return candidate
                if estimate < need:
                    smallest, need = candidate, estimate
    log.warning(
        "VAE %s of a %s latent needs about %.1f GiB even split as finely as useful, but the budget is %.1f GiB; "
        "continuing with %s", "decode" if decoder else "encode", tuple(shape), need / 2**30, budget / 2**30, smallest,
    )
    return smallest
