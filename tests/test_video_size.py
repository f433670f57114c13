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
    EARLIER_DRAFT_LONG,
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
    assert video_size(DRAFT_LONG, 512, 512, 5, long_video=True).with_windows(1).describe(24) == \
        "draft: 112x112, 1 window of 5 frames = 5 frames = 0.2 s at 24 fps"


@pytest.mark.parametrize("asked, made", [(1, 1), (3, 3), (4, 4), (19, 4), (90, 4)])
def test_a_long_video_draft_renders_the_windows_asked_up_to_its_cap(asked, made):
    """Windows are counted at the window length asked (what the node shows); the draft renders the first ones, up to
    DRAFT_WINDOWS, each shortened to DRAFT_WINDOW_FRAMES; 540p renders them all."""
    long = video_size(AUTO, 1920, 1080, 81, "cpu", long_video=True).with_windows(asked)
    assert (long.frames, long.windows, long.mode) == (DRAFT_WINDOW_FRAMES, made, "draft") and DRAFT_WINDOWS == 4
    assert video_size(AUTO, 1920, 1080, 81, "cuda", long_video=True).with_windows(asked).windows == asked


def test_a_long_video_says_its_length_in_seconds_and_why_it_is_short():
    from magic141_core.video.windows import WindowPlan, windows_for

    asked = windows_for(60, 24.0, 81)  # 18: 18 x 80 + 1 = 1441 frames
    long = video_size(AUTO, 1920, 1080, 81, "cpu", long_video=True).with_windows(asked)
    assert long.describe(24.0, "60 s") == (
        "auto on cpu -> draft: 160x80, 4 windows of 9 frames = 33 frames = 1.4 s at 24 fps (60 s asked = 18 windows "
        "of 81 frames; a draft renders at most 4 windows of at most 9 frames: for all of it choose resolution 540p, "
        "or custom, whose window_length applies)")
    assert video_size(CUSTOM, 1920, 1080, 5, custom=(64, 48), long_video=True).with_windows(3).describe(24.0) == \
        "custom: 64x48, 3 windows of 5 frames = 13 frames = 0.5 s at 24 fps"  # nothing cut: nothing to explain
    gpu = video_size(AUTO, 1920, 1080, 81, "cuda", long_video=True).with_windows(asked).describe(24.0, "60 s")
    assert gpu == "auto on cuda -> 540p: 960x544, 18 windows of 81 frames = 1441 frames = 60.0 s at 24 fps"
    # with motion context (5 frames, the default) each later window adds F - 5 frames: the plan's total is said
    asked = windows_for(60, 24.0, 81, 5)  # 19: 81 + 18 x 76 = 1449 frames
    long = video_size(AUTO, 1920, 1080, 81, "cpu", long_video=True).with_windows(asked)
    assert long.describe(24.0, "60 s", WindowPlan(long.windows, long.frames, 5).total).startswith(
        "auto on cpu -> draft: 160x80, 4 windows of 9 frames = 21 frames = 0.9 s at 24 fps (60 s asked = 19 windows "
        "of 81 frames; ")


def test_the_earlier_long_video_draft_entry_still_means_two_windows():
    (entry,) = EARLIER_DRAFT_LONG  # saved by workflows before the cap was 4: it says 2, it renders 2
    assert "<=2 windows" in entry and entry not in size_choices(long_video=True)
    assert video_size(entry, 512, 512, 81, long_video=True).with_windows(19).windows == 2


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
