"""One clip: conditioning + reference latent + seed -> denoised latent (noise, schedule, guidance and the Euler loop
put together), with the memory it needs checked first."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..dit.config import LATENT_CHANNELS
from ..runtime.errors import check_memory, oom_advice
from ..vae.shapes import SPATIAL_COMPRESSION, latent_frames
from .conditioning import Conditioning
from .euler import Step, euler_sample
from .guidance import GuidedVelocity, device_of
from .noise import make_noise
from .schedule import flow_sigmas

SIZE_MULTIPLE = 16  # VAE x2 patch
MAX_SIDE = 4096  # the nodes' largest width / height


def latent_shape(frames: int, height: int, width: int, batch: int = 1) -> tuple[int, int, int, int, int]:
    """[B, 16, T, H/8, W/8] for a clip; height and width must be positive multiples of 16, at most MAX_SIDE
    (ValueError naming the value and the nearest allowed one)."""
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value < SIZE_MULTIPLE or value % SIZE_MULTIPLE:
            near = max(SIZE_MULTIPLE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE) if value > 0 else SIZE_MULTIPLE
            raise ValueError(f"{name} must be a positive multiple of 16, got {value}; use {min(near, MAX_SIDE)}")
        if value > MAX_SIDE:
            raise ValueError(f"{name} must be at most {MAX_SIDE}, got {value}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return (batch, LATENT_CHANNELS, latent_frames(frames), height // SPATIAL_COMPRESSION, width // SPATIAL_COMPRESSION)


def sampling_bytes(model, shape: tuple[int, ...], batch_factor: int = 1) -> int:
    """A LOWER bound of the memory (bytes) one DiT forward over a latent of `shape` [B, 16, T, h, w] needs: per video
    token, a single-stream block's input and fused projection (q, k, v and the 4x MLP: 8 x hidden values) at 2 bytes
    (the smallest compute dtype), for this rank's share under sequence parallelism; x2 for batched CFG
    (`batch_factor`). Weights, attention and text tokens come on top, so real use is always higher."""
    config = getattr(model, "config", None)
    if config is None:
        return 0
    pt, ph, pw = config.patch_size
    tokens = shape[0] * batch_factor * math.ceil(shape[2] / pt) * (shape[3] // ph) * (shape[4] // pw)
    parallel = getattr(model, "parallel", None)
    if parallel is not None:
        tokens = math.ceil(tokens / parallel.world_size)
    return tokens * config.hidden_size * 8 * 2


def sample_latent(
    model,
    cond: Conditioning,
    shape: tuple[int, ...],
    *,
    steps: int = 4,
    shift: float = 5.0,
    guidance: float = 1.0,
    seed: int = 39,
    callback: Callable[[Step], None] | None = None,
) -> torch.Tensor:
    """Denoise seeded noise of `shape` ([B, 16, T, h, w], scaled latent space) in `steps` Euler steps.

    `cond.reference` is the start image's scaled latent [B or 1, 16, L, h, w] (L = 1; a long video's motion context:
    L = 2..4); it is passed unchanged at every step and its frames of the result are denoised like every other frame
    (never overwritten), as in the official sampler. `seed` seeds the initial noise (`noise.make_noise`; a long
    video's window k passes `noise.stream_seed(seed, "initial noise", k)`). Returns the fp32 latent on the model's
    device.
    """
    if cond.reference is not None and tuple(cond.reference.shape[-2:]) != tuple(shape[-2:]):
        raise ValueError(
            f"the start image's latent is {tuple(cond.reference.shape[-2:])} but the video latent is "
            f"{tuple(shape[-2:])}; encode the start image at the video's width and height"
        )
    velocity = GuidedVelocity(model, cond, guidance)
    sigmas = flow_sigmas(steps, shift)  # validates steps and shift before anything is allocated
    what = f"sampling a {shape[2]}-latent-frame {shape[3] * 8}x{shape[4] * 8} clip"
    check_memory(what, sampling_bytes(model, shape, 2 if velocity.cfg else 1), device_of(model))
    with oom_advice(what), torch.inference_mode():
        noise = make_noise(shape, seed).to(device_of(model))
        return euler_sample(velocity, noise, sigmas.to(noise.device), callback)
