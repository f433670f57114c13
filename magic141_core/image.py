"""Start-image preparation: the official resolution buckets, resize + centre crop, and layout conversions.

Magic141 picks the bucket whose aspect ratio is nearest the image's (absolute difference of width/height), resizes
the image so it covers the bucket while keeping its aspect ratio, and crops the centre (datasets/test_image.py of
the official repository). Images here are float tensors [B, H, W, C] in 0..1 (ComfyUI's IMAGE layout).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# width x height per aspect ratio (w:h), from the official code
BUCKETS = {
    "540p": {(9, 16): (544, 960), (3, 4): (624, 832), (1, 1): (720, 720), (4, 3): (832, 624), (16, 9): (960, 544)},
    "720p": {(9, 16): (704, 1248), (3, 4): (832, 1104), (1, 1): (960, 960), (4, 3): (1104, 832), (16, 9): (1248, 704)},
}


def nearest_bucket(width: int, height: int, resolution: str = "540p") -> tuple[int, int]:
    """(width, height) of the official bucket nearest the aspect ratio width / height."""
    if resolution not in BUCKETS:
        raise ValueError(f"resolution must be one of {sorted(BUCKETS)}, got {resolution!r}")
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    ratio = width / height
    w_h = min(BUCKETS[resolution], key=lambda r: abs(r[0] / r[1] - ratio))
    return BUCKETS[resolution][w_h]


def resize_center_crop(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize [B, H, W, C] to cover width x height keeping the aspect ratio (bilinear, antialiased), crop the centre."""
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C], got shape {tuple(images.shape)}")
    _, h, w, _ = images.shape
    if (w, h) == (width, height):
        return images
    ratio = w / h
    if ratio > width / height:  # wider than the target: match heights
        new_h, new_w = height, max(width, int(height * ratio))
    else:
        new_w, new_h = width, max(height, int(width / ratio))
    x = F.interpolate(images.movedim(-1, 1).float(), size=(new_h, new_w), mode="bilinear", antialias=True,
                      align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return x[:, :, top:top + height, left:left + width].movedim(1, -1).clamp(0, 1).to(images.dtype)


def rgb(images: torch.Tensor) -> torch.Tensor:
    """Drop an alpha channel, expand grey to RGB: [B, H, W, C] -> [B, H, W, 3]."""
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must be [B, H, W, 1|3|4], got shape {tuple(images.shape)}")
    if images.shape[-1] == 1:
        return images.expand(*images.shape[:-1], 3)
    return images[..., :3]
