"""Colour matching in CIELAB: the drift guard of long videos.

Each window of a long video starts from the previous window's last frame; small colour shifts compound over a
minute. Matching the new reference frame's per-channel mean and standard deviation in L*a*b* (a perceptual space,
so lightness and the two opponent colour axes are corrected independently) to the original prior stops that.
Images are float [..., H, W, 3] sRGB in 0..1.
"""

from __future__ import annotations

import torch

_RGB_TO_XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                            [0.2126729, 0.7151522, 0.0721750],
                            [0.0193339, 0.1191920, 0.9503041]])
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])  # D65
_EPS, _KAPPA = 216 / 24389, 24389 / 27


def _linear(srgb):
    return torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def _gamma(linear):
    linear = linear.clamp(min=0)
    return torch.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    xyz = _linear(rgb.float()) @ _RGB_TO_XYZ.T.to(rgb.device) / _WHITE.to(rgb.device)
    f = torch.where(xyz > _EPS, xyz.clamp(min=1e-12) ** (1 / 3), (_KAPPA * xyz + 16) / 116)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    fy = (lab[..., 0] + 16) / 116
    f = torch.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = torch.where(f ** 3 > _EPS, f ** 3, (116 * f - 16) / _KAPPA) * _WHITE.to(lab.device)
    return _gamma(xyz @ torch.linalg.inv(_RGB_TO_XYZ).T.to(lab.device)).clamp(0, 1)


def match_color(image: torch.Tensor, reference: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """`image` with its L*a*b* per-channel mean and std moved to `reference`'s (`strength` 0..1 blends)."""
    lab, ref = rgb_to_lab(image), rgb_to_lab(reference)
    dims = tuple(range(lab.ndim - 3, lab.ndim - 1))  # H, W
    mean, std = lab.mean(dims, keepdim=True), lab.std(dims, keepdim=True).clamp(min=1e-5)
    ref_mean, ref_std = ref.mean(dims, keepdim=True), ref.std(dims, keepdim=True)
    matched = (lab - mean) / std * ref_std + ref_mean
    return lab_to_rgb(lab + strength * (matched - lab)).to(image.dtype)
