"""Deterministic random weights: the models tests build, and the built-in architecture demo.

These weights are NOT a trained model: a DiT built from them has the real architecture and produces abstract
motion only. Real checkpoints replace it.
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
            if param.ndim >= 2:
                fan_in = math.prod(param.shape[1:])
                values = torch.randn(param.shape, generator=generator) / math.sqrt(fan_in)
            elif "norm" in name and name.endswith("weight"):
                values = 1 + 0.1 * torch.randn(param.shape, generator=generator)
            else:
                values = 0.02 * torch.randn(param.shape, generator=generator)
            param.copy_(values.to(param.dtype))
    return module


def random_dit(config, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A `Magic141DiT` of `config` with deterministic random weights."""
    from .dit import Magic141DiT

    return randomize_(Magic141DiT(config), seed).to(dtype).eval().requires_grad_(False)
