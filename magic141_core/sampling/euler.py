"""The Euler loop of flow matching: x <- x + v * (sigma_next - sigma) in fp32, one velocity call per step, exactly as
the official scheduler (diffusers' FlowMatchEulerDiscreteScheduler) steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


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
