"""Start-image preparation: the official resolution buckets, resize + centre crop or pad, and layout conversions.

Magic141 picks the bucket whose aspect ratio is nearest the image's (absolute difference of width/height), resizes
the image so it covers the bucket while keeping its aspect ratio, and crops the centre (datasets/test_image.py of
the official repository): `fit="crop"`. `fit="pad"` (letterbox) instead resizes the whole image to fit inside and
fills the rest with black bars, so nothing is cut off (a portrait's head). The bars are plain pixels of the start
image: no mask tells the model they are padding, so it treats them as part of the scene and they usually stay as
bars through the clip (crop them from the video afterwards). Images here are float tensors [B, H, W, C] in 0..1
(ComfyUI's IMAGE layout).
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


FITS = ("crop", "pad")


def fit_image(images: torch.Tensor, width: int, height: int, fit: str = "crop") -> torch.Tensor:
    """[B, H, W, C] in 0..1 -> [B, height, width, C] keeping the aspect ratio (bilinear, antialiased).

    fit "crop": cover width x height and crop the centre (the official preparation). fit "pad": fit inside and
    centre on black (letterbox / pillarbox bars; no mask marks them, see the module docstring).
    Raises ValueError for another `fit` or a tensor that is not [B, H, W, C].
    """
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}: crop (fill the frame, cut the edges) or pad "
                         "(keep the whole image, add black bars)")
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C], got shape {tuple(images.shape)}")
    _, h, w, _ = images.shape
    if (w, h) == (width, height):
        return images
    wider = w / h > width / height
    if wider == (fit == "crop"):  # crop a wider image / pad a taller one: match heights
        new_h, new_w = height, int(height * w / h)
    else:
        new_w, new_h = width, int(width * h / w)
    new_h, new_w = (max(height, new_h), max(width, new_w)) if fit == "crop" else (min(height, new_h), min(width, new_w))
    new_h, new_w = max(1, new_h), max(1, new_w)
    x = F.interpolate(images.movedim(-1, 1).float(), size=(new_h, new_w), mode="bilinear", antialias=True,
                      align_corners=False).clamp(0, 1)
    if fit == "crop":
        top, left = (new_h - height) // 2, (new_w - width) // 2
        return x[:, :, top:top + height, left:left + width].movedim(1, -1).to(images.dtype)
    out = x.new_zeros(x.shape[0], x.shape[1], height, width)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[:, :, top:top + new_h, left:left + new_w] = x
    return out.movedim(1, -1).to(images.dtype)


def rgb(images: torch.Tensor) -> torch.Tensor:
    """Drop an alpha channel, expand grey to RGB: [B, H, W, C] -> [B, H, W, 3]."""
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must be [B, H, W, 1|3|4], got shape {tuple(images.shape)}")
    if images.shape[-1] == 1:
        return images.expand(*images.shape[:-1], 3)
    return images[..., :3]
