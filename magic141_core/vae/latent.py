"""The latent space: the encoder's Gaussian posterior, and the one scaling factor between VAE and transformer.

Two latent spaces exist and only these two helpers cross between them:
- UNSCALED: what the VAE encodes to and decodes from. `encode` returns a distribution over it, `decode` expects it,
  and ComfyUI's LATENT type carries it (as native VAE Encode / VAE Decode do).
- SCALED = unscaled x 0.476986: what the transformer sees. The reference latent (the prior's `encode(...).sample(seed)`)
  and the sampler's noise live here; the sampler's result goes back through `unscale_latent` before decoding.
"""

from __future__ import annotations

import torch

from ..sampling.noise import make_noise

SCALING_FACTOR = 0.476986  # HunyuanVideo VAE; the DiT was trained on latent x this


def scale_latent(latent: torch.Tensor) -> torch.Tensor:
    """VAE latent -> transformer latent (x 0.476986)."""
    return latent * SCALING_FACTOR


def unscale_latent(latent: torch.Tensor) -> torch.Tensor:
    """Transformer latent -> VAE latent (/ 0.476986), ready for `decode`."""
    return latent / SCALING_FACTOR


class LatentDistribution:
    """Diagonal Gaussian over the unscaled latent: `mean` and `logvar`, each [B, 16, T, h, w].

    `moments` is the encoder output [B, 32, T, h, w]: mean channels first, then log-variance (clamped to [-30, 20]
    as in the reference). The official pipeline draws a sample for the reference image (`sample(seed)`); `mode()` is
    the mean.
    """

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, seed: int) -> torch.Tensor:
        """mean + std * noise [B, 16, T, h, w] in the mean's dtype and device; the noise is drawn by the pack's RNG
        helper (`sampling.noise.make_noise`: CPU, fp32) from a generator seeded with `seed`, e.g. a long video's
        `stream_seed(seed, "posterior sample", window)`. With an fp32 mean it equals diffusers'
        `latent_dist.sample(torch.Generator().manual_seed(seed))`, the official pipeline's draw."""
        noise = make_noise(tuple(self.mean.shape), seed)
        return self.mean + self.std * noise.to(self.mean.device, self.mean.dtype)

    def to(self, *args, **kwargs) -> "LatentDistribution":
        return LatentDistribution(torch.cat([self.mean, self.logvar], dim=1).to(*args, **kwargs))
