"""Hand-set stand-ins that make the long-video runner measurable without a trained model (benchmarks/
long_video_seams.py and the tests): a lossless frame VAE for striped pictures, and two transformers that each do
one known thing to the frames they are conditioned on.

The real VAE compresses 4 frames into one latent frame and 8 x 8 pixels into one latent pixel; a trained one
reconstructs motion inside those 4 frames, which the demo's pass-through VAE cannot (it repeats each latent frame
4 times: a pan would decode as a staircase). `StripeVAE` keeps the real latent shapes [1, 16, T, H/8, W/8] and the
causal frame count (1 + 4(T-1) frames) but is exact for pictures that vary along x only (vertical stripes): each
latent frame holds the x-profiles of its 4 frames (colour c of slot s in channel 3s + c, profile sample x at latent
row x % 8, column x // 8), so H must be at least 64. Any motion along x, shifts by whole pixels included, survives a
round trip bit for bit, so what a measurement sees is the runner's hand-over, not a VAE's blur.

The transformers read their reference latent (the context: 1 + 4(L-1) frames), decide the window's frames (its
"clean" latent), and return the velocity that lands on exactly those at the last step of any schedule
(v = (x - target) / sigma, one Euler step from sigma to 0 reaches target): the context frames rendered again, then
- `PanDiT`: the pan the context shows continued: the last context frame shifted along x by the context's speed
  (whole pixels per frame, from the cross-correlation of consecutive context frames). Shown one frame, it sees no
  motion and holds it still, as the pass-through demo does: the classic one-frame seam of a sliding window;
- `DarkenDiT`: the last context frame 1 % darker and blurred by 1 % (a [1, 2, 1] / 4 filter mixed in at 1 %),
  every new frame alike: the compounding case of colour drift, once rounded to 8 bits by the runner.
Both are `torch.nn.Module`s with the DiT's call signature; time, prompt and guidance do not matter to them.
"""

from __future__ import annotations

import torch

from ..vae.latent import SCALING_FACTOR

SLOTS = 4  # frames per latent frame (the causal VAE's temporal compression)
ROWS = 8  # latent rows holding one profile (x = 8 * column + row)


class StripeVAE:
    """A `video.long_video.FrameVAE` that is lossless for vertical-stripe frames [F, H, W, 3] (H >= 64, W a multiple
    of 8): latent = 2 x colour - 1 per profile sample (unscaled, about the real VAE's range)."""

    compute_dtype = torch.float32

    def encode_frames(self, frames: torch.Tensor, seed: int) -> torch.Tensor:
        """[1 + 4(L-1), H, W, 3] -> [1, 16, L, H/8, W/8]; the rows are averaged (exact for stripes). No sampling."""
        count, height, width, _ = frames.shape
        if height < 8 * ROWS or width % 8 or (count - 1) % SLOTS:
            raise ValueError(f"StripeVAE needs 1 + 4k frames of height >= 64 and width a multiple of 8, got "
                             f"{tuple(frames.shape)}")
        profiles = frames.float().mean(1) * 2 - 1  # [F, W, 3]
        groups = [profiles[:1].expand(SLOTS, -1, -1)] + list(profiles[1:].split(SLOTS) if count > 1 else ())
        latent = torch.zeros(1, 16, len(groups), height // 8, width // 8)
        for t, group in enumerate(groups):  # [4, W, 3] -> channels 3s + c, rows x % 8, columns x // 8
            packed = group.reshape(SLOTS, width // 8, ROWS, 3).permute(0, 3, 2, 1).reshape(3 * SLOTS, ROWS, -1)
            latent[0, : 3 * SLOTS, t, :ROWS] = packed
        return latent

    def decode_frames(self, latent: torch.Tensor):
        """[1, 16, T, h, w] -> one chunk [1 + 4(T-1), 8h, 8w, 3] float 0..1 (latent frame 0 gives its last slot)."""
        _, _, frames, h, w = latent.shape
        packed = latent[0, : 3 * SLOTS, :, :ROWS].float().cpu()  # [12, T, 8, w]
        profiles = packed.reshape(SLOTS, 3, frames, ROWS, w).permute(2, 0, 4, 3, 1).reshape(frames, SLOTS, 8 * w, 3)
        profiles = torch.cat([profiles[0, -1:], profiles[1:].reshape(-1, 8 * w, 3)])  # [1 + 4(T-1), W, 3]
        yield ((profiles + 1) / 2).clamp(0, 1)[:, None].expand(-1, 8 * h, -1, -1)


class _TargetDiT(torch.nn.Module):
    """A stand-in transformer whose velocity lands on `window(context, frames)` at the last step."""

    guidance_embedder = None

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # a device for the sampler

    def window(self, context: torch.Tensor, frames: int) -> torch.Tensor:
        """The window's frames [frames, W, 3] (profiles in latent units) from the context's [n, W, 3]."""
        raise NotImplementedError

    def forward(self, x, t, tokens=None, mask=None, pooled=None, reference=None, guidance=None):
        vae = StripeVAE()
        _, _, latent_frames, h, w = x.shape
        context = next(vae.decode_frames(reference / SCALING_FACTOR))[:, 0]  # [n, W, 3] in 0..1
        frames = self.window(context, 1 + SLOTS * (latent_frames - 1))  # [F, W, 3] in 0..1
        pictures = frames[:, None].expand(-1, 8 * h, -1, -1)
        target = vae.encode_frames(pictures, 0).to(x) * SCALING_FACTOR
        sigma = (t / 1000).view(-1, 1, 1, 1, 1).to(x)
        return (x - target) / sigma


def pan_speed(context: torch.Tensor) -> int:
    """The whole-pixel shift per frame along x that best maps each context frame [n, W, 3] onto the next (the median
    over consecutive pairs; circular cross-correlation); 0 for a single frame."""
    if len(context) < 2:
        return 0
    signal = context - context.mean(1, keepdim=True)
    spectra = torch.fft.rfft(signal, dim=1)  # [n, W/2+1, 3]
    correlation = torch.fft.irfft(spectra[1:] * spectra[:-1].conj(), n=context.shape[1], dim=1).sum(-1)  # [n-1, W]
    shifts = correlation.argmax(1)
    shifts = torch.where(shifts > context.shape[1] // 2, shifts - context.shape[1], shifts)
    return int(shifts.median())


class PanDiT(_TargetDiT):
    """Continues the pan its context shows (holds a single frame still)."""

    def window(self, context, frames):
        speed, last = pan_speed(context), context[-1]
        new = [torch.roll(last, speed * (i + 1), dims=0) for i in range(frames - len(context))]
        return torch.cat([context, torch.stack(new)])


class DarkenDiT(_TargetDiT):
    """Renders the last context frame 1 % darker and 1 % blurred in every new frame."""

    def window(self, context, frames):
        last = context[-1]
        blurred = (torch.roll(last, 1, 0) + 2 * last + torch.roll(last, -1, 0)) / 4
        new = 0.99 * (0.99 * last + 0.01 * blurred)
        return torch.cat([context, new.expand(frames - len(context), -1, -1)])


def pan_clip(frames: int, width: int = 96, height: int = 64, speed: int = 2, seed: int = 0) -> torch.Tensor:
    """A vertical-stripe clip [frames, height, width, 3] float 0..1 panning `speed` whole pixels per frame (frame i
    is frame 0 shifted by speed x i, circularly): a smooth random profile, the same in every run."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, width // 8, generator=generator)
    profile = torch.nn.functional.interpolate(coarse, size=width, mode="linear", align_corners=False)[0].T  # [W, 3]
    profile = (torch.round(profile * 255) / 255).clamp(0, 1)  # 8-bit values: rounding never moves them
    return torch.stack([torch.roll(profile, speed * i, 0) for i in range(frames)])[:, None].expand(-1, height, -1, -1)
