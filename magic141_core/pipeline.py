"""One clip: conditioning + reference latent + seed -> denoised latent, with the model's guidance handled once.

Guidance, following model.md:
- a checkpoint with an applied guidance embedder (HunyuanVideo `guidance_in`, or Magic141 `text_guidance_in` when
  `model.apply_text_guidance` is set) receives the scale as an input: one forward per step;
- otherwise guidance 1.0 (Magic141's distilled default) is one plain forward per step;
- otherwise real classifier-free guidance: unconditional and conditional in ONE batched forward per step,
  v = v_uncond + g (v_cond - v_uncond), as the official sampler computes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .conditioning import Conditioning, TextConditioning
from .config import LATENT_CHANNELS
from .errors import check_memory, oom_advice
from .finite import DIT_ADVICE, check_finite
from .sampling import NUM_TRAIN_TIMESTEPS, Step, euler_sample, flow_sigmas, make_noise
from .vae.shapes import SPATIAL_COMPRESSION, latent_frames

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


class GuidedVelocity:
    """velocity(x, sigma) for the sampler: the DiT under one of the three guidance modes above."""

    def __init__(self, model, cond: Conditioning, guidance: float):
        if not math.isfinite(guidance) or guidance < 0:
            raise ValueError(f"guidance must be a finite number >= 0, got {guidance}; Magic141 is distilled at 1.0")
        self.model, self.guidance, self.device = model, float(guidance), _device_of(model)
        self.embedded = model.guidance_embedder is not None
        self.cfg = not self.embedded and self.guidance != 1.0
        if self.cfg and cond.negative is None:
            raise ValueError(
                f"guidance {guidance} on a model without a guidance embedder runs classifier-free guidance, "
                "which needs the negative prompt's conditioning; encode it, or use guidance 1.0"
            )
        self.parts = [cond.negative, cond.positive] if self.cfg else [cond.positive]
        self.reference = None if cond.reference is None else cond.reference.to(self.device)
        self._inputs = None  # text and reference for one batch size, built on the first step

    def _batched(self, batch: int):
        if self._inputs is None or self._inputs[0] != batch:
            text = TextConditioning.cat([p.repeat_to(batch) for p in self.parts]).to(self.device)
            reference = self.reference
            if reference is not None and self.cfg and reference.shape[0] > 1:
                reference = torch.cat([reference, reference])
            self._inputs = (batch, text, reference)
        return self._inputs[1:]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        text, reference = self._batched(x.shape[0])
        batch = text.batch_size
        t = (sigma * NUM_TRAIN_TIMESTEPS).expand(batch).to(self.device)
        guidance = torch.full((batch,), self.guidance, device=self.device) if self.embedded else None
        x_in = (torch.cat([x, x]) if self.cfg else x).to(self.device)
        v = self.model(
            x_in, t, text.tokens, text.mask, text.pooled, reference=reference, guidance=guidance
        ).float()
        check_finite(v, f"the transformer (denoising at timestep {t[0].item():.0f})", _activation_dtype(self.model),
                     DIT_ADVICE)
        if self.cfg:
            v_uncond, v_cond = v.chunk(2)
            v = v_uncond + self.guidance * (v_cond - v_uncond)
        return v.to(x.device)


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


def _activation_dtype(model) -> torch.dtype:
    return getattr(model, "activation_dtype", next(model.parameters()).dtype)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


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

    `cond.reference` is the start image's scaled latent [B or 1, 16, 1, h, w]; it is passed unchanged at every step
    and frame 0 of the result is denoised like every other frame (never overwritten), as in the official sampler.
    Returns the fp32 latent on the model's device.
    """
    if cond.reference is not None and tuple(cond.reference.shape[-2:]) != tuple(shape[-2:]):
        raise ValueError(
            f"the start image's latent is {tuple(cond.reference.shape[-2:])} but the video latent is "
            f"{tuple(shape[-2:])}; encode the start image at the video's width and height"
        )
    velocity = GuidedVelocity(model, cond, guidance)
    sigmas = flow_sigmas(steps, shift)  # validates steps and shift before anything is allocated
    what = f"sampling a {shape[2]}-latent-frame {shape[3] * 8}x{shape[4] * 8} clip"
    check_memory(what, sampling_bytes(model, shape, 2 if velocity.cfg else 1), _device_of(model))
    with oom_advice(what), torch.inference_mode():
        noise = make_noise(shape, seed).to(_device_of(model))
        return euler_sample(velocity, noise, sigmas.to(noise.device), callback)
