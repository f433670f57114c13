"""Image files are read as ComfyUI's own Load Image reads them (one file per kind, compared with the real node),
16-bit grey is scaled (not white), decompression bombs are refused by name, early reduction changes nothing, and the
image processors take 1-pixel-high images."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_clip import save_tiny_clip

from magic141_core.video.start_image import fit_image
from magic141_core.video.image_files import ImageFileError, image_size, load_image, open_rgb
from magic141_core.priors import ClipEmbedder, ImageIndex

RNG = np.random.default_rng(0)


def smooth(height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3] gradients with a little texture: content every codec keeps well."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width], dtype=np.float32)[:, None, None]
    rgb = np.stack([x, y, (x + y) / 2], -1) * 200 + RNG.integers(0, 40, (height, width, 3))
    return rgb.clip(0, 255).astype(np.uint8)


def _exif_rotated_jpeg(path):
    image = Image.fromarray(smooth(24, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(path, exif=exif.tobytes(), quality=95)


def _palette_with_transparency(path):
    image = Image.fromarray(smooth(24, 40)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image.info["transparency"] = 3
    image.save(path, transparency=3)


def _sixteen_bit_rgb(path):  # PNG with 16 bits per channel, written by hand (PIL cannot save RGB;16)
    import struct
    import zlib

    rows = smooth(8, 12).astype(">u2") * 257
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12, 8, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _animated_gif(path):
    frames = [Image.fromarray(smooth(16, 16)), Image.fromarray(255 - smooth(16, 16))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)


def _cmyk_jpeg(path):
    Image.fromarray(smooth(16, 24)).convert("CMYK").save(path, quality=95)


KINDS = {
    "rgb.png": lambda p: Image.fromarray(smooth(20, 30)).save(p),
    "rgba.png": lambda p: Image.fromarray(np.dstack([smooth(20, 30), RNG.integers(0, 255, (20, 30), np.uint8)])).save(p),
    "grey.png": lambda p: Image.fromarray(smooth(20, 30)[..., 0]).save(p),
    "grey_alpha.png": lambda p: Image.fromarray(smooth(20, 30)[..., :2].copy(), "LA").save(p),
    "bilevel.png": lambda p: Image.fromarray(smooth(20, 30)[..., 0] > 128).save(p),
    "palette_transparent.png": _palette_with_transparency,
    "rgb16.png": _sixteen_bit_rgb,
    "int32.tif": lambda p: Image.fromarray((smooth(20, 30)[..., 0].astype(np.int32) * 200)).save(p),
    "exif_rotated.jpg": _exif_rotated_jpeg,
    "cmyk.jpg": _cmyk_jpeg,
    "animated.gif": _animated_gif,
    "lossless.webp": lambda p: Image.fromarray(smooth(20, 30)).save(p, lossless=True),
}


@pytest.fixture(scope="module")
def load_image_node(comfy_base):
    """ComfyUI's real Load Image node, reading from the in-process ComfyUI's input folder."""
    import nodes

    def run(path):
        target = comfy_base / "input" / path.name
        target.write_bytes(path.read_bytes())
        return nodes.LoadImage().load_image(path.name)[0]

    return run


@pytest.mark.compat_only  # the reference is 0.3.75's Load Image (0.30.0's decodes through PyAV)
@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_file_kind_reads_as_load_image_reads_it(tmp_path, load_image_node, name):
    path = tmp_path / name
    KINDS[name](path)
    ours, native = load_image(path), load_image_node(path)[:1]  # Load Image gives every frame; a prior is frame 0
    assert ours.dtype == torch.float32 and ours.shape == native.shape, (ours.shape, native.shape)
    assert torch.equal(ours, native)
    assert image_size(path) == (ours.shape[2], ours.shape[1])  # header size, orientation applied


@pytest.mark.compat_only  # the reference is 0.3.75's Load Image (0.30.0's decodes through PyAV)
def test_sixteen_bit_grey_is_scaled_not_white(tmp_path, load_image_node):
    values = (np.arange(16 * 64).reshape(16, 64) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(values).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    ours = load_image(tmp_path / "grey16.png")[0, ..., 0].numpy() * 255
    assert np.abs(ours - values / 257).max() <= 0.5  # 65535 -> 255, rounded
    native = load_image_node(tmp_path / "grey16.png")[0, ..., 0].numpy()
    assert (native == 1).mean() > 0.9  # Load Image clips it: the reason this case is deliberately different


def _bomb(path):
    Image.new("1", (15000, 15000)).save(path)  # 225 megapixels, a few kB on disk


def test_decompression_bomb_is_refused_with_the_file_name(tmp_path):
    _bomb(tmp_path / "huge.png")
    for read in (open_rgb, image_size):
        with pytest.raises(ImageFileError, match=r"huge\.png.*decompression bomb.*downscale"):
            read(tmp_path / "huge.png")


def test_broken_files_are_refused_with_the_file_name(tmp_path):
    Image.fromarray(smooth(64, 64)).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageFileError, match=r"cut\.png is damaged or truncated"):
        open_rgb(tmp_path / "cut.png")
    with pytest.raises(ImageFileError, match=r"text\.png is not an image"):
        open_rgb(tmp_path / "text.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        open_rgb(tmp_path / "missing.png")


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    return ClipEmbedder(save_tiny_clip(tmp_path_factory.mktemp("clip")))


def test_a_folder_skips_a_bomb_with_a_warning_naming_it(tmp_path, embedder, caplog):
    Image.fromarray(smooth(30, 40)).save(tmp_path / "fine.png")
    _bomb(tmp_path / "huge.png")
    with caplog.at_level(logging.WARNING):
        stats = ImageIndex(tmp_path).update(embedder)
    assert (stats.embedded, stats.skipped) == (1, 1)
    assert any("huge.png" in r.getMessage() and "decompression bomb" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("size", [(1, 1), (5, 1), (1, 7)])
def test_one_pixel_high_or_wide_images_reach_both_image_processors(embedder, size):
    from magic141_core.text.images import llava_image_processor, pixel_values

    image = Image.fromarray(smooth(size[1], size[0]))
    assert pixel_values(llava_image_processor(), [image]).shape == (1, 3, 336, 336)
    assert embedder.embed_images([image]).shape == (1, 16)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_early_reduction_gives_the_same_fitted_image(tmp_path, fmt):
    """A 1904 x 1500 file fitted to a 320 x 240 video, decoded small (JPEG draft, box reduce) vs at full size."""
    path = tmp_path / f"big.{fmt.lower()}"
    Image.fromarray(smooth(1500, 1904)).save(path, format=fmt, quality=95)
    full = fit_image(load_image(path), 320, 240, "crop")
    reduced_image = load_image(path, cover=(320, 240))
    assert max(reduced_image.shape[1:3]) < 1000 and min(reduced_image.shape[1:3]) >= 2 * 320  # it was reduced
    reduced = fit_image(reduced_image, 320, 240, "crop")
    diff = (reduced - full).abs() * 255
    assert diff.mean() < 1.0 and diff.max() < 12, (diff.mean(), diff.max())


def test_exif_orientation_survives_early_reduction(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(smooth(900, 1600)).save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95)
    assert image_size(tmp_path / "turned.jpg") == (900, 1600)
    full, reduced = load_image(tmp_path / "turned.jpg"), load_image(tmp_path / "turned.jpg", cover=(200, 200))
    assert full.shape[1:3] == (1600, 900) and reduced.shape[1] > reduced.shape[2]  # portrait both ways
