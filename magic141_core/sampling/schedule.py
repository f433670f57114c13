"""The shifted flow-matching sigma schedule of Magic141's 4-step DMD2 sampler, and its timesteps.

Flow matching here: x_sigma = (1 - sigma) x_0 + sigma * noise, the model predicts v = noise - x_0, and the Euler
step is x <- x + v * (sigma_next - sigma), in fp32, exactly as the official scheduler does.
"""

from __future__ import annotations

import math

import torch

NUM_TRAIN_TIMESTEPS = 1000
STEPS_RANGE = (1, 100)  # the nodes' range; the distilled model uses 4
SHIFT_RANGE = (0.01, 100.0)  # the nodes' range; below about 1e-7 the fp32 schedule's first sigma is 1/0 = inf


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
