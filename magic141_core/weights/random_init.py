"""Deterministic random weights for any module: the tiny models tests and benchmarks build (never a trained model).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter from a seeded CPU generator: fan-in scaled normal weights, small biases, and norm
    weights near 1 (so modulations, gates and norms are all non-trivial). Same seed, same weights, any machine."""
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.copy_(random_value(name, param.shape, generator).to(param.dtype))
    return module


def random_value(name: str, shape, generator: torch.Generator) -> torch.Tensor:
    """One parameter's deterministic value (fp32), by the rule `randomize_` documents."""
    if len(shape) >= 2:
        return torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[1:]))
    if "norm" in name and name.endswith("weight"):
        return 1 + 0.1 * torch.randn(shape, generator=generator)
    return 0.02 * torch.randn(shape, generator=generator)
