"""Colour matching in CIELAB: the drift guard of long videos.

Each window of a long video starts from the previous window's last frames; small colour shifts compound over a
minute. Matching those context frames' per-channel mean and standard deviation in L*a*b* (a perceptual space, so
lightness and the two opponent colour axes are corrected independently) to a fixed anchor (the frames the video
started from) stops that; matching them to the previous window follows it. Images are float [..., H, W, 3] sRGB
in 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_RGB_TO_XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                            [0.2126729, 0.7151522, 0.0721750],
                            [0.0193339, 0.1191920, 0.9503041]])
_TO_XYZ_T = _RGB_TO_XYZ.T.contiguous()  # right-multiplied; contiguous: torch's batched matmul with a transposed
_TO_RGB_T = torch.linalg.inv(_RGB_TO_XYZ).T.contiguous()  # view as the right operand is ~300x slower on CPU
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])  # D65
_EPS, _KAPPA = 216 / 24389, 24389 / 27


def _linear(srgb):
    return torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def _gamma(linear):
    linear = linear.clamp(min=0)
    return torch.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    xyz = _linear(rgb.float()) @ _TO_XYZ_T.to(rgb.device) / _WHITE.to(rgb.device)
    f = torch.where(xyz > _EPS, xyz.clamp(min=1e-12) ** (1 / 3), (_KAPPA * xyz + 16) / 116)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    fy = (lab[..., 0] + 16) / 116
    f = torch.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = torch.where(f ** 3 > _EPS, f ** 3, (116 * f - 16) / _KAPPA) * _WHITE.to(lab.device)
    return _gamma(xyz @ _TO_RGB_T.to(lab.device)).clamp(0, 1)


@dataclass(frozen=True)
class ColorStats:
    """The colour statistics a match aims at: per-channel mean and standard deviation in L*a*b* ([3] each, fp32), over
    every pixel of every frame they were taken from. Six numbers: what a long video keeps as its colour anchor."""

    mean: torch.Tensor  # [3] L*, a*, b*
    std: torch.Tensor  # [3]


def color_stats(frames: torch.Tensor) -> ColorStats:
    """`ColorStats` of `frames` [..., H, W, 3] (sRGB float 0..1), taken over all frames together (one frame's L*a*b*
    at a time, so memory follows one frame, not the clip)."""
    flat = frames.reshape(-1, *frames.shape[-3:])  # [F, H, W, 3]
    moments = []
    for frame in flat:
        lab = rgb_to_lab(frame).reshape(-1, 3)
        moments.append(torch.stack([lab.mean(0), lab.var(0, unbiased=False)]))
    means, variances = torch.stack(moments).unbind(1)  # [F, 3] each; every frame has the same pixel count
    mean = means.mean(0)
    return ColorStats(mean, (variances + (means - mean) ** 2).mean(0).sqrt())


def match_color(frames: torch.Tensor, reference: torch.Tensor | ColorStats, strength: float = 1.0) -> torch.Tensor:
    """`frames` [..., H, W, 3] (sRGB float 0..1) with their L*a*b* per-channel mean and std moved to `reference`'s
    (frames, or their `color_stats`); `strength` 0..1 blends. One transform for all of `frames` together (a clip is
    matched as a whole, so its frames keep their differences: no flicker), computed in fp32 one frame at a time and
    returned in the frames' dtype. Reinhard et al. 2001, "Color Transfer between Images", in CIELAB."""
    target = reference if isinstance(reference, ColorStats) else color_stats(reference)
    own = color_stats(frames)
    scale = target.std.to(frames.device) / own.std.clamp(min=1e-5).to(frames.device)
    out = torch.empty(frames.shape, dtype=frames.dtype, device=frames.device)
    flat, flat_out = frames.reshape(-1, *frames.shape[-3:]), out.view(-1, *frames.shape[-3:])
    for frame, dest in zip(flat, flat_out):
        lab = rgb_to_lab(frame)
        matched = (lab - own.mean.to(lab.device)) * scale + target.mean.to(lab.device)
        dest.copy_(lab_to_rgb(lab + strength * (matched - lab)))
    return out
