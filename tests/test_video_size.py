"""The one video size policy (`video.start_image.video_size`) that Image To Video, Long Video and the CLI share:
the combo's entries say what they do, draft sizes per bucket, auto by device, and the entries of older workflows
("540p", "720p", "custom") mean what they meant."""

from __future__ import annotations

import re

import pytest

from magic141_core.video.start_image import (
    AUTO,
    BUCKETS,
    CUSTOM,
    DRAFT,
    DRAFT_DIVISOR,
    DRAFT_FRAMES,
    DRAFT_LONG,
    DRAFT_WINDOW_FRAMES,
    DRAFT_WINDOWS,
    draft_bucket,
    size_choices,
    size_mode,
    video_size,
)

# width x height of the draft frame per 540p bucket (w:h): each side / 6, rounded down to a multiple of 16
DRAFT_SIZES = {(16, 9): (160, 80), (4, 3): (128, 96), (1, 1): (112, 112), (3, 4): (96, 128), (9, 16): (80, 160)}


def test_the_labels_say_what_the_entries_do():
    assert re.fullmatch(r"auto \(540p on a GPU, draft on CPU\)", AUTO)
    assert f"1/{DRAFT_DIVISOR} size" in DRAFT and f"<={DRAFT_FRAMES} frames" in DRAFT
    assert f"<={DRAFT_WINDOWS} windows of <={DRAFT_WINDOW_FRAMES} frames" in DRAFT_LONG
    assert f"1/{DRAFT_DIVISOR} size" in DRAFT_LONG
    for long_video in (False, True):
        choices = size_choices(long_video)
        assert choices[0] == AUTO and {"540p", "720p", CUSTOM} <= set(choices)  # older workflows' entries stay
        assert len(choices) == len(set(choices)) == 5
    assert DRAFT in size_choices() and DRAFT_LONG in size_choices(long_video=True)


@pytest.mark.parametrize("ratio", sorted(DRAFT_SIZES))
def test_draft_is_the_540p_bucket_at_a_sixth_of_each_side(ratio):
    bucket = BUCKETS["540p"][ratio]
    width, height = DRAFT_SIZES[ratio]
    assert draft_bucket(*ratio) == (width, height)
    assert width % 16 == 0 and height % 16 == 0
    assert bucket[0] / 6 - 16 < width <= bucket[0] / 6 and bucket[1] / 6 - 16 < height <= bucket[1] / 6
    size = video_size(DRAFT, 100 * ratio[0], 100 * ratio[1], 81)
    assert (size.width, size.height, size.frames, size.mode) == (width, height, DRAFT_FRAMES, "draft")


@pytest.mark.parametrize("device, expected", [("cpu", ("draft", 160, 80, 17)), ("cuda", ("540p", 960, 544, 81)),
                                              ("cuda:1", ("540p", 960, 544, 81)), ("mps", ("540p", 960, 544, 81))])
def test_auto_is_540p_on_an_accelerator_and_draft_on_the_cpu(device, expected):
    size = video_size(AUTO, 1920, 1080, 81, device)
    assert (size.mode, size.width, size.height, size.frames) == expected
    assert size_mode("auto", device) == expected[0]  # the CLI's short name
    assert size.describe().startswith(f"auto on {device.split(':')[0]} -> {expected[0]}: "
                                      f"{expected[1]}x{expected[2]}, {expected[3]} frames")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_entries_of_older_workflows_are_unchanged_on_any_device(device):
    for resolution in BUCKETS:
        for (w, h), bucket in BUCKETS[resolution].items():
            size = video_size(resolution, 10 * w, 10 * h, 81, device)
            assert (size.width, size.height, size.frames, size.mode) == (*bucket, 81, resolution)
            assert size.with_windows(90).windows == 90
    size = video_size(CUSTOM, 1920, 1080, 121, device, custom=(64, 48))
    assert (size.width, size.height, size.frames) == (64, 48, 121)
    assert size.describe() == "custom: 64x48, 121 frames"


def test_draft_caps_frames_and_windows_and_says_so():
    size = video_size(DRAFT, 512, 512, 81)
    assert size.describe() == "draft: 112x112, 17 frames (81 asked, the draft's cap)"
    assert video_size(DRAFT, 512, 512, 9).frames == 9  # shorter clips stay as asked
    long = video_size(DRAFT_LONG, 512, 512, 81, long_video=True).with_windows(90)
    assert (long.frames, long.windows) == (9, 2)  # 17 frames in all, like a draft clip
    assert long.describe().endswith("9 frames (81 asked, the draft's cap), 2 windows (90 asked, the draft's cap)")
    assert video_size(DRAFT_LONG, 512, 512, 5, long_video=True).with_windows(1).describe() == \
        "draft: 112x112, 5 frames, 1 window"


def test_bad_entries_and_lengths_are_refused_before_any_cap():
    with pytest.raises(ValueError, match="length must be 4k\\+1 frames, got 80"):
        video_size(DRAFT, 512, 512, 80)  # never hidden by the cap to 17
    with pytest.raises(ValueError, match="resolution must be auto, draft, 540p, 720p or custom, got '1080p'"):
        video_size("1080p", 512, 512, 81)
    with pytest.raises(ValueError, match="custom needs a width and a height"):
        video_size(CUSTOM, 512, 512, 81)


# ------------------------------------------------------------------------------------ the official centre crop
def official_crop(w: int, h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(resized height, width, crop top, left) as the official preparation computes them, written out: Magic141's
    datasets/test_image.py resizes to cover (new = int(side x ratio) on the free side), then torchvision's
    CenterCrop takes crop_top = int(round((image_height - crop_height) / 2.)) (Python's round: half to even)."""
    ratio = w / h
    if ratio > width / height:
        new_h, new_w = height, int(height * ratio)
    else:
        new_w, new_h = width, int(width / ratio)
    return new_h, new_w, int(round((new_h - height) / 2.)), int(round((new_w - width) / 2.))


# overshoots 0..7 on either side, then sizes that need a real resize (104x40 -> 48x32 overshoots by 35: 18, not 17)
CROPS = [(48 + d, 32, 48, 32) for d in range(8)] + [(48, 32 + d, 48, 32) for d in range(8)] + [
    (104, 40, 48, 32), (67, 31, 32, 16), (1919, 1080, 960, 544), (1080, 1921, 544, 960), (333, 250, 832, 624),
    (97, 101, 720, 720), (641, 479, 160, 80)]


@pytest.mark.parametrize("w, h, width, height", CROPS, ids=lambda v: str(v))
def test_centre_crop_is_torchvisions_to_the_pixel(w, h, width, height):
    import torch
    import torch.nn.functional as F

    from magic141_core.video.start_image import fit_image

    image = torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(w * h))
    new_h, new_w, top, left = official_crop(w, h, width, height)
    resized = F.interpolate(image.movedim(-1, 1), size=(new_h, new_w), mode="bilinear", antialias=True,
                            align_corners=False).clamp(0, 1)
    want = resized[:, :, top:top + height, left:left + width].movedim(1, -1)
    assert torch.equal(fit_image(image, width, height, "crop"), want)


def test_the_half_pixel_goes_to_the_even_offset():
    """The rule in numbers (overshoot -> offset): floor division would give 0, 1, 2, 3, 17."""
    from magic141_core.video.start_image import center_crop_offsets

    assert [center_crop_offsets(32, 48 + d, 32, 48)[1] for d in (1, 3, 5, 7, 35)] == [0, 2, 2, 4, 18]
@pytest.mark.parametrize("source, frame", [((300, 180), (160, 80)), ((180, 300), (80, 160)), ((200, 200), (96, 128))],
                         ids=["wider", "taller", "square-into-portrait"])
def test_crop_keeps_the_centre_of_an_aspect_preserving_resize(source, frame):
    """fit "crop", the official preparation: scale the image to cover the frame keeping its aspect ratio, keep the
    centre. Reference from geometry alone: the image is a ramp (red = x, green = y at each pixel centre, in 0..1),
    which a resize keeps linear, so each output pixel must hold the source point its centre maps to. Measured
    within 0.03 pixel of the resized image; bound: one pixel (the integer resize and crop offset may round by up to
    half a pixel each); a top crop or a squashed image is 8 to 16 pixels off."""
    import torch

    from magic141_core.video.start_image import fit_image

    (w, h), (width, height) = source, frame
    xs, ys = (torch.arange(w) + 0.5) / w, (torch.arange(h) + 0.5) / h
    image = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.full((h, w), 0.5)], -1)[None]
    out = fit_image(image, width, height, "crop")
    assert out.shape == (1, height, width, 3)
    scale = max(width / w, height / h)  # cover the frame
    want_x = ((torch.arange(width) + 0.5) + (w * scale - width) / 2) / (w * scale)
    want_y = ((torch.arange(height) + 0.5) + (h * scale - height) / 2) / (h * scale)
    inner = (slice(2, -2), slice(2, -2))  # the resize filter sees past the image's edge in the outer 2 pixels
    assert (out[0, ..., 0] - want_x[None, :])[inner].abs().max() <= 1 / (w * scale)
    assert (out[0, ..., 1] - want_y[:, None])[inner].abs().max() <= 1 / (h * scale)
    assert torch.allclose(out[0, ..., 2], torch.full((height, width), 0.5))
