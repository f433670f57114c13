"""Seeds and noise: every random draw of sampling starts here, on the CPU in fp32, so a seed gives the same video on
every device."""

from __future__ import annotations

import torch

SEED_RANGE = (0, 2**64 - 1)  # the nodes' range (ComfyUI's seed widgets); torch's generator takes 64 bits


def check_seed(seed: int) -> int:
    """`seed` when it is a whole number in SEED_RANGE, else ValueError naming the value and the range (a larger
    seed would silently wrap around to another one)."""
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, int) or not (low <= seed <= high):
        raise ValueError(f"seed must be a whole number from {low} to {high} (2**64 - 1), got {seed!r}")
    return seed


def make_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal noise drawn on the CPU in fp32, so a seed gives the same video on every device.
    `seed` must be in SEED_RANGE (ValueError otherwise)."""
    generator = torch.Generator("cpu").manual_seed(check_seed(int(seed)))
    return torch.randn(shape, generator=generator, dtype=torch.float32)
