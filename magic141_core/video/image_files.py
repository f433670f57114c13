"""Reading image files: one helper for every place the pack reads an image from disk (the CLI's --image, the
retrieval index, the retrieved prior, the demo scripts), so the image that is embedded, indexed, shown and animated
is one and the same, and the same as ComfyUI's Load Image makes of that file.

Load Image (ComfyUI 0.3.75, `nodes.LoadImage`) takes each frame, applies the EXIF orientation, divides 32-bit
integer images (mode "I") by 255, and converts to 8-bit RGB with PIL (alpha dropped, not composited; palettes
expanded; CMYK, grey and 1-bit converted). This module does the same for the first frame, with two deliberate
differences, both where Load Image gives a wrong picture:

- 16-bit single-channel images (modes "I;16", "I;16B", "I;16L", as Pillow >= 10 opens 16-bit grey PNGs) are
  scaled to 8 bits (x 255 / 65535, rounded); Load Image's `convert("RGB")` clips them, so nearly all of it is white.
- an image over Pillow's decompression-bomb limit (2 x `Image.MAX_IMAGE_PIXELS`, about 179 megapixels) raises
  `ImageFileError` naming the file and the fix, instead of Pillow's message without the name; a broken or truncated
  file is refused too (Load Image would fill the missing part with grey).

`cover=(width, height)`: the caller will resize the image to cover that size (a video bucket, CLIP's input).
The file is then decoded small where the format allows and box-reduced by an integer factor (`Image.reduce`),
always keeping at least twice the cover size, so memory follows the output size rather than the file's (an
8000 x 8000 start image for 540p) and the final antialiased resize is unchanged up to rounding
(tests/test_image_files.py measures it):
- JPEG: decoded at 1/2, 1/4 or 1/8 size by DCT scaling (`Image.draft`), then reduced.
- PNG, 8 bits per sample, not interlaced (grey, grey + alpha, RGB, RGBA, palette): decoded in strips of a few
  hundred rows by `png_strips`, each strip reduced as it comes, never the full-size image in memory; the bytes are
  exactly those of decoding the whole file and reducing it (tests/test_png_strips.py). The strip reader also
  checks the image data's CRCs and refuses image data that inflates beyond the size in the header (Pillow's full
  decode skips both checks; reads without `cover` still use it).
- everything else (16-bit and 1/2/4-bit PNGs, interlaced PNGs, other formats): decoded at full size, then reduced
  at once (8 bits per sample, never as float).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from . import png_strips

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}
_SWAPPED = {5, 6, 7, 8}  # EXIF orientations that turn the image by 90 degrees
_STRIP_BYTES = 4 << 20  # stored PNG bytes decoded per strip (a few hundred rows of an 8000-pixel-wide image)


class ImageFileError(ValueError):
    """An image file that cannot be used; the message names the file, the problem and what to do."""


def open_rgb(path: str | os.PathLike, cover: tuple[int, int] | None = None) -> Image.Image:
    """The first frame of an image file as an 8-bit RGB PIL image, as ComfyUI's Load Image makes it (see module).

    cover: (width, height) the image will later be resized to cover; the image is then decoded/reduced early to no
    less than twice that size (memory bounded by the output size). None: the full image.
    Raises FileNotFoundError for a missing file, ImageFileError (a ValueError) for a file that is not a readable
    image, is over the decompression-bomb limit, or is truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # over the hard limit still raises
            with Image.open(path) as image:
                if cover is not None:
                    _draft(image, cover)
                    reduced = _png_reduced(path, image, cover)
                    if reduced is not None:  # decoded in strips, never at full size
                        return _to_rgb(ImageOps.exif_transpose(reduced, in_place=True) or reduced)
                image.load()
                image = ImageOps.exif_transpose(image, in_place=True) or image  # no copy when not turned
                if cover is not None:
                    image = _reduce(image, cover)
                return _to_rgb(image)
    except Image.DecompressionBombError as e:
        raise ImageFileError(f"{path.name}: {e.args[0] if e.args else e} Refused as a possible decompression bomb; "
                             "downscale the image (e.g. to 4096 pixels on its long side) or choose another") from None
    except UnidentifiedImageError:
        raise ImageFileError(f"{path.name} is not an image Pillow can read (PNG, JPEG, WebP, BMP, GIF, TIFF); "
                             "convert it or choose another file") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data, bad EXIF
        raise ImageFileError(f"{path.name} is damaged or truncated ({e}); save it again or choose another file") \
            from None


def load_image(path: str | os.PathLike, cover: tuple[int, int] | None = None) -> torch.Tensor:
    """An image file as a ComfyUI IMAGE: float32 [1, H, W, 3] in 0..1 (8-bit values / 255, as Load Image).

    cover, errors: as `open_rgb`."""
    return rgb_to_tensor(open_rgb(path, cover))


def rgb_to_tensor(image: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> float32 [1, H, W, 3] in 0..1 (value / 255 in float32: the same numbers as Load Image's
    `np.array(image).astype(np.float32) / 255.0`, without its float temporary)."""
    pixels = np.array(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)  # writable
    return torch.from_numpy(pixels).to(torch.float32).div_(255.0)[None]


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the image as shown (EXIF orientation applied), read from the header only.

    Errors: as `open_rgb`."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                return (height, width) if _orientation(image) in _SWAPPED else (width, height)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except Exception:  # every reading problem gets open_rgb's message
        open_rgb(path)
        raise


def _orientation(image: Image.Image) -> int | None:
    """The EXIF orientation from the header, without decoding (Pillow's PNG `getexif` decodes the whole image to
    look for an eXIf chunk after the pixels; such late chunks are not seen here, only by the full read)."""
    if image.format == "PNG":
        exif = Image.Exif()
        if "exif" in image.info:
            exif.load(image.info["exif"])
        return exif.get(0x0112)
    return image.getexif().get(0x0112)


def _factor(size: tuple[int, int], cover: tuple[int, int]) -> int:
    """The largest integer reduction that keeps the image at least twice `cover` whichever way it is turned."""
    width, height = size
    need = 2 * max(cover)  # conservative: the short side must still cover twice the largest target side
    return max(1, math.floor(min(width, height) / need)) if need > 0 else 1


def _draft(image: Image.Image, cover: tuple[int, int]) -> None:
    factor = _factor(image.size, cover)
    if factor >= 2 and image.format == "JPEG":  # DCT scaling by 1/2, 1/4 or 1/8, never below the asked size
        image.draft(None, (math.ceil(image.size[0] / factor), math.ceil(image.size[1] / factor)))


def _reduce(image: Image.Image, cover: tuple[int, int]) -> Image.Image:
    factor = _factor(image.size, cover)
    return image if factor < 2 else _reducible(image).reduce(factor)


def _reducible(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT or image.mode in ("P", "1", "I", "F"):
        return _to_rgb(image)  # modes Image.reduce cannot average: convert first (same result as Load Image)
    return image


def _png_reduced(path: Path, image: Image.Image, cover: tuple[int, int]) -> Image.Image | None:
    """An 8-bit non-interlaced PNG decoded in strips (`png_strips`), each box-reduced as it comes: the same bytes
    as `_reduce` of the full decode, in the file's own orientation with `info` as Pillow's full decode gives it
    (the caller applies the EXIF orientation). None for other files, or when nothing would be reduced."""
    factor = _factor(image.size, cover)
    if image.format != "PNG" or factor < 2:
        return None
    layout = png_strips.scan(path)
    if not layout.strippable or image.mode != png_strips.MODES[layout.colour_type]:
        return None
    header = layout.header_image()
    right, bottom = _anchors(header.info)
    width, height = layout.width, layout.height
    # The full path reduces AFTER turning the image; a partial box (size not a multiple of the factor) then sits
    # on the far side of the turned image, so here the box grid starts from the corner that ends up top-left.
    first = height % factor if bottom else 0
    step = max(factor, _STRIP_BYTES // layout.stride // factor * factor)
    bounds = sorted({0, first, *range(first + step, height, step), height})
    left = width % factor if right else 0
    columns = [(0, left), (left, width)] if left else [(0, width)]
    out = None
    for start, strip, top in layout.strips(path, bounds):
        strip = _reducible(strip)
        for x0, x1 in columns:
            part = strip.reduce(factor, (x0, top, x1, strip.height))
            if out is None:
                out = Image.new(part.mode, (math.ceil(width / factor), math.ceil(height / factor)))
            out.paste(part, (math.ceil(x0 / factor), math.ceil(start / factor)))
    out.info = dict(header.info)
    return out


def _anchors(info: dict) -> tuple[bool, bool]:
    """(right, bottom): which corner of the file's pixels `ImageOps.exif_transpose` puts top-left for this info,
    found by turning a 2 x 2 probe the same way (so it follows Pillow for every orientation source: eXIf, XMP)."""
    probe = Image.new("L", (2, 2))
    probe.putdata([0, 1, 2, 3])
    probe.info = dict(info)
    corner = ImageOps.exif_transpose(probe).getpixel((0, 0))
    return bool(corner & 1), bool(corner & 2)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT:
        values = np.asarray(image, dtype=np.uint16).astype(np.float32)
        grey = np.round(values * (255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode == "I":  # as Load Image: 32-bit integer images are taken as 0..65535-ish, divided by 255
        image = image.point(lambda v: v * (1 / 255))
    return image if image.mode == "RGB" else image.convert("RGB")
