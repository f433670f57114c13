"""A large PNG read for a small output is decoded in strips (`video/png_strips.py`) and gives the very bytes
the full decode gives: per colour type (L, LA, RGB, RGBA, palette, with and without tRNS), with every PNG filter
type written by hand (so each strip's first row is unfiltered against the previous strip's last row), odd sizes
that are not a multiple of the reduction factor, all 8 EXIF orientations (eXIf before or after the pixels); damaged,
truncated and over-long image data give the reader's clear errors, and inflating never goes past the header."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from magic141_core.video import image_files, png_strips
from magic141_core.video.image_files import ImageFileError, open_rgb

RNG = np.random.default_rng(20)
COVER = (6, 6)  # a 37 x 47 file is reduced by 3 for it: boxes of 3 x 3, a partial column and a partial row left
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def pixels(height: int, width: int, channels: int) -> np.ndarray:
    """uint8 [H, W, C] of smooth ramps plus noise: every filter has non-trivial residuals."""
    y, x = np.mgrid[0:height, 0:width]
    ramp = (x * 5 + y * 3)[..., None] + np.arange(channels) * 40
    return ((ramp + RNG.integers(0, 60, (height, width, channels))) % 256).astype(np.uint8)


def filtered_rows(image: np.ndarray, bpp: int) -> bytes:
    """The PNG filter step (specification, section 9), row y with filter type y % 5: None, Sub, Up, Average, Paeth."""
    height = image.shape[0]
    rows = image.reshape(height, -1).astype(np.int32)
    out, prior = [], np.zeros_like(rows[0])
    for y, raw in enumerate(rows):
        a = np.concatenate([np.zeros(bpp, np.int32), raw[:-bpp]])  # left
        c = np.concatenate([np.zeros(bpp, np.int32), prior[:-bpp]])  # upper left
        b, kind = prior, y % 5
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        predictor = [0, a, b, (a + b) // 2, paeth][kind]
        out.append(bytes([kind]) + ((raw - predictor) & 0xFF).astype(np.uint8).tobytes())
        prior = raw
    return b"".join(out)


def write_png(path, image: np.ndarray, colour_type: int, *, before=b"", after=b"", data: bytes | None = None,
              split: int = 97) -> None:
    """A PNG written by hand: IHDR, `before` chunks, the zlib data of `filtered_rows` (or `data`) in IDAT chunks of
    `split` bytes, `after` chunks, IEND."""
    height, width = image.shape[:2]
    data = zlib.compress(filtered_rows(image, CHANNELS[colour_type])) if data is None else data
    idat = b"".join(png_strips.chunk(b"IDAT", data[i:i + split]) for i in range(0, len(data), split))
    path.write_bytes(png_strips.SIGNATURE + png_strips.chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8,
                                                                                 colour_type, 0, 0, 0))
                     + before + idat + after + png_strips.chunk(b"IEND", b""))


def exif_chunk(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return png_strips.chunk(b"eXIf", exif.tobytes()[6:])  # without the "Exif\0\0" prefix, as PNG stores it


PALETTE = png_strips.chunk(b"PLTE", RNG.integers(0, 256, 3 * 200, np.uint8).tobytes())  # 200 entries of 256


@pytest.fixture
def small_strips(monkeypatch):
    """Strips of a few rows (they hold 4 MiB otherwise): a 47-row file becomes many strips."""
    monkeypatch.setattr(image_files, "_STRIP_BYTES", 200)


def full_decode(path, monkeypatch):
    """The reader's full-size decode of the same file (Pillow decodes it whole, then turns and reduces it)."""
    with monkeypatch.context() as m:
        m.setattr(image_files, "_png_reduced", lambda *args: None)
        return open_rgb(path, cover=COVER)


def assert_strips_equal_full(path, monkeypatch):
    with Image.open(path) as header:
        assert image_files._png_reduced(path, header, COVER) is not None  # the strip path takes this file
    streamed = open_rgb(path, cover=COVER)
    full = full_decode(path, monkeypatch)
    assert streamed.mode == full.mode == "RGB" and streamed.size == full.size, (streamed.size, full.size)
    assert streamed.tobytes() == full.tobytes()
    return streamed


CASES = {  # name: (colour type, chunks before the pixels)
    "grey": (0, b""),
    "grey_trns": (0, png_strips.chunk(b"tRNS", struct.pack(">H", 77))),
    "grey_alpha": (4, b""),
    "rgb": (2, b""),
    "rgb_trns": (2, png_strips.chunk(b"tRNS", struct.pack(">HHH", 10, 20, 30))),
    "rgba": (6, b""),
    "palette": (3, PALETTE),
    "palette_trns": (3, PALETTE + png_strips.chunk(b"tRNS", RNG.integers(0, 256, 60, np.uint8).tobytes())),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_kind_with_every_filter_is_the_full_decode(tmp_path, monkeypatch, small_strips, name):
    monkeypatch.setattr(png_strips, "_PIECE", 50)  # each 97-byte IDAT chunk is read in two pieces
    colour_type, before = CASES[name]
    image = pixels(47, 37, CHANNELS[colour_type])
    if colour_type == 3:
        image = image % 230  # indices past the 200-entry palette too: Pillow's handling of them is kept
    write_png(tmp_path / "hand.png", image, colour_type, before=before)
    assert assert_strips_equal_full(tmp_path / "hand.png", monkeypatch).size == (13, 16)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_the_full_decode(tmp_path, monkeypatch, small_strips, orientation):
    """eXIf before the pixels for odd orientations, after them (read by Pillow only after decoding) for even."""
    late = orientation % 2 == 0
    write_png(tmp_path / "turned.png", pixels(47, 37, 4), 6, before=b"" if late else exif_chunk(orientation),
              after=exif_chunk(orientation) if late else b"")
    size = assert_strips_equal_full(tmp_path / "turned.png", monkeypatch).size
    assert size == ((16, 13) if orientation >= 5 else (13, 16))


@pytest.mark.parametrize("strip_bytes", [200, 4 << 20])
def test_pillow_written_files_are_the_full_decode(tmp_path, monkeypatch, strip_bytes):
    """Files as Pillow writes them (its encoder picks the filters): RGB, RGBA, palette with tRNS; in strips of 32
    rows, and whole (one strip of 600 kB: ten stored deflate blocks)."""
    monkeypatch.setattr(image_files, "_STRIP_BYTES", strip_bytes)
    rgb = pixels(515, 389, 3)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(pixels(301, 203, 4)).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(tmp_path / "p.png",
                                                                                     transparency=5)
    for name in ("rgb.png", "rgba.png", "p.png"):
        assert_strips_equal_full(tmp_path / name, monkeypatch)


def test_other_pngs_keep_the_full_decode(tmp_path):
    """16-bit and 1-bit PNGs are not strippable (their raw rows are not Pillow's bytes): decoded whole, as before."""
    Image.fromarray((pixels(40, 40, 1)[..., 0].astype(np.uint16) * 257)).save(tmp_path / "grey16.png")
    Image.fromarray(pixels(40, 40, 1)[..., 0] > 128).save(tmp_path / "bilevel.png")
    for name in ("grey16.png", "bilevel.png"):
        assert not png_strips.scan(tmp_path / name).strippable
        assert open_rgb(tmp_path / name, cover=COVER).size == (14, 14)  # reduced by 3 after the full decode


def test_damaged_pngs_are_refused_with_the_file_name(tmp_path, small_strips):
    image = pixels(47, 37, 3)
    rows = filtered_rows(image, 3)
    write_png(tmp_path / "good.png", image, 2)
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    idat = data.index(b"IDAT") + 10
    (tmp_path / "crc.png").write_bytes(data[:idat] + bytes([data[idat] ^ 1]) + data[idat + 1:])
    write_png(tmp_path / "short.png", image, 2, data=zlib.compress(rows[: len(rows) // 2]))
    write_png(tmp_path / "filter.png", image, 2, data=zlib.compress(b"\x07" + rows[1:]))
    for name, problem in [("cut", "truncated"), ("crc", "bad CRC in an IDAT chunk"), ("short", "truncated"),
                          ("filter", "")]:
        with pytest.raises(ImageFileError, match=rf"{name}\.png is damaged or truncated \(.*{problem}"):
            open_rgb(tmp_path / f"{name}.png", cover=COVER)


def test_image_data_beyond_the_header_is_refused_without_inflating_it(tmp_path):
    """One extra row, and a 64 MiB run of zeros behind the rows (64 kB compressed): both refused; the zeros are
    not inflated (at most one byte past the last row is ever produced: Python allocates under 1 MiB meanwhile)."""
    image = pixels(47, 37, 3)
    rows = filtered_rows(image, 3)
    write_png(tmp_path / "extra_row.png", image, 2, data=zlib.compress(rows + rows[-112:]))
    bomb = zlib.compressobj(9)
    data = bomb.compress(rows) + b"".join(bomb.compress(bytes(1 << 20)) for _ in range(64)) + bomb.flush()
    write_png(tmp_path / "zeros.png", image, 2, data=data, split=1 << 16)
    for name in ("extra_row", "zeros"):
        tracemalloc.start()
        try:
            with pytest.raises(ImageFileError, match=rf"{name}\.png is damaged.*inflates beyond the 37 x 47 pixels"):
                open_rgb(tmp_path / f"{name}.png", cover=COVER)
            assert tracemalloc.get_traced_memory()[1] < 1 << 20
        finally:
            tracemalloc.stop()
