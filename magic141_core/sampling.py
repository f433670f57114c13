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
STEPS_RANGE = (1, 100)  # the nodes' range; the distilled model uses 4
SHIFT_RANGE = (0.01, 100.0)  # the nodes' range; below about 1e-7 the fp32 schedule's first sigma is 1/0 = inf
SEED_RANGE = (0, 2**64 - 1)  # the nodes' range (ComfyUI's seed widgets); torch's generator takes 64 bits


def check_shift(shift: float) -> float:
    """`shift` as a float when it is a number in SHIFT_RANGE, else ValueError naming the value and the range."""
    low, high = SHIFT_RANGE
    try:
        value = float(shift)
    except (TypeError, ValueError):
        value = math.nan
    if not (low <= value <= high):  # NaN fails too
        raise ValueError(f"shift must be a number from {low} to {high:g}, got {shift!r}; Magic141 uses 5.0")
    return value


def check_seed(seed: int) -> int:
    """`seed` when it is a whole number in SEED_RANGE, else ValueError naming the value and the range (a larger
    seed would silently wrap around to another one)."""
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, int) or not (low <= seed <= high):
        raise ValueError(f"seed must be a whole number from {low} to {high} (2**64 - 1), got {seed!r}")
    return seed


def flow_sigmas(steps: int, shift: float = 5.0) -> torch.Tensor:
    """sigma' = shift*sigma / (1 + (shift-1)*sigma) over sigma = linspace(1, 0, steps+1); fp32 like the reference
    (diffusers' FlowMatchEulerDiscreteScheduler with a static shift, as the official Magic141 sampler uses).

    4 steps, shift 5: 1, 0.9375, 0.8333, 0.625, 0 (timesteps 1000, 937.5, 833.33, 625).
    Raises ValueError for steps outside STEPS_RANGE or a shift outside SHIFT_RANGE (every caller passes here, so a
    shift that would make the schedule non-finite never reaches the sampler).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not (STEPS_RANGE[0] <= steps <= STEPS_RANGE[1]):
        raise ValueError(f"steps must be a whole number from {STEPS_RANGE[0]} to {STEPS_RANGE[1]}, got {steps!r}; "
                         "the distilled model uses 4")
    shift = check_shift(shift)
    sigmas = torch.linspace(1, 0, steps + 1)
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def timesteps(sigmas: torch.Tensor) -> torch.Tensor:
    """The model's timestep input for each step: sigma x 1000 (the final sigma 0 is not a step)."""
    return sigmas[:-1] * NUM_TRAIN_TIMESTEPS


def make_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal noise drawn on the CPU in fp32, so a seed gives the same video on every device.
    `seed` must be in SEED_RANGE (ValueError otherwise)."""
    generator = torch.Generator("cpu").manual_seed(check_seed(int(seed)))
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
