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
    from magic141_core.video.long_video import windows_for

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
