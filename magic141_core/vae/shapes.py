"""The VAE's shape rules: 8x spatial and 4x temporal compression, 4k+1 frames, and the checks that say what to fix.

Pixel frame 0 maps to latent frame 0 alone (the causal VAE encodes it by itself); every later latent frame holds 4
pixel frames. So F = 4k+1 pixel frames <-> k+1 latent frames, and latent frames [a, b) decode to pixel frames
[`pixel_start(a)`, `pixel_start(b)`).
"""

from __future__ import annotations

import torch

SPATIAL_COMPRESSION = 8  # pixels per latent pixel, each side
TEMPORAL_COMPRESSION = 4  # pixel frames per latent frame after the first


def latent_frames(frames: int) -> int:
    """Latent frames for `frames` pixel frames, which must be 4k+1."""
    if not isinstance(frames, int) or frames < 1 or (frames - 1) % TEMPORAL_COMPRESSION:
        k = max((int(frames) - 1) // TEMPORAL_COMPRESSION, 0) if isinstance(frames, (int, float)) else 0
        options = sorted({TEMPORAL_COMPRESSION * k + 1, TEMPORAL_COMPRESSION * (k + 1) + 1})
        raise ValueError(f"length must be 4k+1 frames, got {frames}; use {' or '.join(map(str, options))}")
    return (frames - 1) // TEMPORAL_COMPRESSION + 1


def pixel_frames(latents: int) -> int:
    """Pixel frames decoded from `latents` latent frames: 4(T-1)+1."""
    return TEMPORAL_COMPRESSION * (latents - 1) + 1


def pixel_start(latent_index: int) -> int:
    """First pixel frame belonging to latent frame `latent_index` (0 -> 0, j -> 4j-3)."""
    return 0 if latent_index == 0 else TEMPORAL_COMPRESSION * (latent_index - 1) + 1


def check_video(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Validate encoder input and return it as [B, C, F, H, W] (a 4-D [B, C, H, W] image becomes F = 1)."""
    if x.ndim == 4:
        x = x.unsqueeze(2)
    if x.ndim != 5:
        raise ValueError(
            f"expected frames shaped [B, {channels}, F, H, W] (or one image [B, {channels}, H, W]), "
            f"got {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        hint = "; channels come second — move them with x.movedim(-1, 1)" if x.shape[-1] == channels else ""
        raise ValueError(f"the VAE encodes {channels}-channel frames, got {x.shape[1]} channels{hint}")
    latent_frames(x.shape[2])
    for name, value in (("height", x.shape[3]), ("width", x.shape[4])):
        if value < SPATIAL_COMPRESSION or value % SPATIAL_COMPRESSION:
            near = max(SPATIAL_COMPRESSION, round(value / SPATIAL_COMPRESSION) * SPATIAL_COMPRESSION)
            raise ValueError(
                f"{name} must be a positive multiple of {SPATIAL_COMPRESSION}, got {value}; resize or crop to {near} "
                "(the Magic141 transformer needs multiples of 16)"
            )
    if not x.is_floating_point():
        raise ValueError(f"frames must be floating point in [-1, 1], got {x.dtype}")
    return x


def check_latent(z: torch.Tensor, channels: int) -> torch.Tensor:
    """Validate decoder input: [B, channels, T, h, w], unscaled."""
    if z.ndim != 5:
        raise ValueError(f"expected a video latent shaped [B, {channels}, T, h, w], got {tuple(z.shape)}")
    if z.shape[1] != channels:
        raise ValueError(
            f"the VAE decodes {channels}-channel latents, got {z.shape[1]} channels; "
            "pass the 16-channel latent (not the 33-channel transformer input)"
        )
    if min(z.shape[2:]) < 1:
        raise ValueError(f"the latent has an empty dimension: {tuple(z.shape)}")
    if not z.is_floating_point():
        raise ValueError(f"the latent must be floating point, got {z.dtype}")
    return z
