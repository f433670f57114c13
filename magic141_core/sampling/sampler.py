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
    cfg: float = 1.0,
) -> torch.Tensor:
    """Denoise seeded noise of `shape` ([B, 16, T, h, w], scaled latent space) in `steps` Euler steps.

    `cond.reference` is the start latent, scaled, [B or 1, 16, L, h, w] (L >= 1 latent frames: the start image, or
    a long video's motion context, L = 2..4). Concat families (Magic141, HunyuanVideo-I2V v1, SkyReels-V1) get it
    unchanged at every step and every frame of the result is denoised (frame 0 never overwritten), as in the official
    samplers; token replace (HunyuanVideo-I2V v2) starts with its L frames set to it and never denoises them (the
    model's velocity there is 0), as diffusers' pipeline and ComfyUI's v2 noise mask keep them. `cfg` (1: none):
    classifier-free guidance on top of an embedded guidance, see `sampling.guidance`. `seed` seeds the initial noise
    (`noise.make_noise`; a long video's window k passes `noise.stream_seed(seed, "initial noise", k)`). Returns the
    fp32 latent on the model's device.
    """
    if cond.reference is not None and tuple(cond.reference.shape[-2:]) != tuple(shape[-2:]):
        raise ValueError(
            f"the start image's latent is {tuple(cond.reference.shape[-2:])} but the video latent is "
            f"{tuple(shape[-2:])}; encode the start image at the video's width and height"
        )
    velocity = GuidedVelocity(model, cond, guidance, cfg)
    sigmas = flow_sigmas(steps, shift)  # validates steps and shift before anything is allocated
    what = f"sampling a {shape[2]}-latent-frame {shape[3] * 8}x{shape[4] * 8} clip"
    check_memory(what, sampling_bytes(model, shape, 2 if velocity.cfg else 1), device_of(model))
    with oom_advice(what), torch.inference_mode():
        noise = make_noise(shape, seed).to(device_of(model))
        start = initial_latent(noise, velocity.reference, image_condition_of(model))
        return euler_sample(velocity, start, sigmas.to(noise.device), callback)


def image_condition_of(model) -> str:
    """How `model` (a core DiT, or anything with a `config` or an `image_condition`) takes the start image."""
    return getattr(getattr(model, "config", model), "image_condition", "concat_mask")


def initial_latent(noise: torch.Tensor, reference: torch.Tensor | None, image_condition: str) -> torch.Tensor:
    """Where sampling starts: `noise` [B, 16, T, h, w]; under token replace its first L frames are the reference
    [B or 1, 16, L, h, w] already (they are held there, never denoised). A new tensor; `noise` is not changed."""
    if image_condition != "token_replace" or reference is None:
        return noise
    start = noise.clone()
    start[:, :, : reference.shape[2]] = reference.to(noise)
    return start
