"""Seeds and noise: the pack's one random-number policy. Every random draw goes through this module.

A draw belongs to a *stream* named by (seed, purpose, window): the sampler's initial noise, the VAE posterior sample
of a reference, the noise augmentation of a re-encoded reference (`PURPOSES`), for window k of a long video (0 for a
single clip). Each stream is a CPU `torch.Generator` seeded with `stream_seed(seed, purpose, window)` and drawn in
fp32 on the CPU, so a seed gives the same video on every device and every run. Streams are independent: their seeds
are a 64-bit BLAKE2b hash of (seed, purpose, window), so no draw repeats another's numbers (before this policy the
reference's posterior sample was the first values of the initial noise, and the augmentation re-added that same
noise; the official code draws them independently).

One stream keeps its plain seed: the initial noise of window 0 is seeded with `seed` itself, as ComfyUI's KSampler
seeds its noise (`comfy.sample.prepare_noise`), so Magic141 Sampler and a native KSampler start from the same noise
for the same seed (tests/test_native.py compares them).
"""

from __future__ import annotations

import hashlib

import torch

SEED_RANGE = (0, 2**64 - 1)  # the nodes' range (ComfyUI's seed widgets); torch's generator takes 64 bits
INITIAL_NOISE, POSTERIOR_SAMPLE, NOISE_AUGMENTATION = "initial noise", "posterior sample", "noise augmentation"
PURPOSES = (INITIAL_NOISE, POSTERIOR_SAMPLE, NOISE_AUGMENTATION)


def check_seed(seed: int) -> int:
    """`seed` when it is a whole number in SEED_RANGE, else ValueError naming the value and the range (a larger
    seed would silently wrap around to another one)."""
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, int) or not (low <= seed <= high):
        raise ValueError(f"seed must be a whole number from {low} to {high} (2**64 - 1), got {seed!r}")
    return seed


def stream_seed(seed: int, purpose: str, window: int = 0) -> int:
    """The generator seed (in SEED_RANGE) of the stream (seed, purpose, window): `seed` itself for the initial noise
    of window 0 (ComfyUI's convention), else the first 8 bytes of BLAKE2b("magic141/<purpose>/<window>/<seed>") as a
    little-endian integer. Raises ValueError for a seed outside SEED_RANGE, a purpose not in PURPOSES or a negative
    window."""
    check_seed(seed)
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError(f"window must be a whole number >= 0, got {window!r}")
    if purpose == INITIAL_NOISE and window == 0:
        return seed
    digest = hashlib.blake2b(f"magic141/{purpose}/{window}/{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def make_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal noise [shape] drawn on the CPU in fp32 from a generator seeded with `seed` (ValueError
    outside SEED_RANGE): the primitive under every stream. Equal to ComfyUI's `prepare_noise` for the same seed."""
    generator = torch.Generator("cpu").manual_seed(check_seed(int(seed)))
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def stream_noise(shape: tuple[int, ...], seed: int, purpose: str, window: int = 0) -> torch.Tensor:
    """Standard normal noise [shape], fp32 on the CPU, from the stream (seed, purpose, window) (see `stream_seed`)."""
    return make_noise(shape, stream_seed(seed, purpose, window))
