"""Few-step flow-matching sampling: the shifted sigma schedule and the Euler loop (Magic141's 4-step DMD2 sampler).

Flow matching here: x_sigma = (1 - sigma) x_0 + sigma * noise, the model predicts v = noise - x_0, and the Euler
step is x <- x + v * (sigma_next - sigma), in fp32, exactly as the official scheduler does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

NUM_TRAIN_TIMESTEPS = 1000


def flow_sigmas(steps: int, shift: float = 5.0) -> torch.Tensor:
    """sigma' = shift*sigma / (1 + (shift-1)*sigma) over sigma = linspace(1, 0, steps+1); fp32 like the reference.

    4 steps, shift 5: 1, 0.9375, 0.8333, 0.625, 0 (timesteps 1000, 937.5, 833.33, 625).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1, got {steps!r}; the distilled model uses 4")
    if not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a positive number, got {shift!r}; Magic141 uses 5.0")
    sigmas = torch.linspace(1, 0, steps + 1)
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def timesteps(sigmas: torch.Tensor) -> torch.Tensor:
    """The model's timestep input for each step: sigma x 1000 (the final sigma 0 is not a step)."""
    return sigmas[:-1] * NUM_TRAIN_TIMESTEPS


def make_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal noise drawn on the CPU in fp32, so a seed gives the same video on every device."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=generator, dtype=torch.float32)


@dataclass
class Step:
    index: int  # 0-based step just finished
    total: int
    x: torch.Tensor  # the latent after this step
    denoised: torch.Tensor  # the model's current estimate of the clean latent (for previews)


def euler_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callable[[Step], None] | None = None,
) -> torch.Tensor:
    """Integrate the flow ODE from sigmas[0] to sigmas[-1]; one `velocity(x, sigma)` call per step.

    `callback` runs after every step (progress, previews); raising from it stops sampling between steps.
    """
    x = noise.float()
    total = len(sigmas) - 1
    for i in range(total):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        v = velocity(x, sigma).float()
        denoised = x - sigma * v  # x_0 estimate
        x = x + v * (sigma_next - sigma)
        if callback is not None:
            callback(Step(i, total, x, denoised))
    return x
