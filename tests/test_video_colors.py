"""MP4 colours: every file is BT.709 limited range and tagged so, and decoders that honour the tags (the ffmpeg
binary, and ComfyUI's own Load Video through PyAV) give back the colours that went in, also after 5 save/load
cycles. Flat frames, so chroma subsampling and compression cannot hide a matrix or range error."""

from __future__ import annotations

import subprocess

import av
import imageio_ffmpeg
import numpy as np
import pytest

from magic141_core.video.mp4 import Mp4Writer, read_mp4, write_mp4

SATURATED = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 255, 255), (255, 0, 255), (255, 255, 0), (255, 128, 0),
             (40, 180, 60)]  # the last one is the reproduction (BT.601 vs BT.709 decodes 22 apart)
GREYS = [(v, v, v) for v in (0, 16, 50, 100, 128, 180, 235, 255)]
COLOURS = np.array(SATURATED + GREYS, dtype=np.uint8)

# AVColorSpace / AVColorRange / AVColorPrimaries / AVColorTransferCharacteristic values for BT.709, limited ("tv")
BT709, LIMITED = 1, 1


def flat_frames(colours: np.ndarray, size: int = 32) -> np.ndarray:
    """One flat frame per colour: uint8 [len(colours), size, size, 3]."""
    return np.ascontiguousarray(np.broadcast_to(colours[:, None, None, :], (len(colours), size, size, 3)))


def centre_colours(frames: np.ndarray) -> np.ndarray:
    """The mean colour of each frame's centre (away from the edges), rounded: int [F, 3]."""
    h, w = frames.shape[1:3]
    return frames[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4].reshape(len(frames), -1, 3).mean(1).round().astype(int)


@pytest.fixture(scope="module")
def load_video(comfy_base):
    """ComfyUI's own video reader (what Load Video and VIDEO inputs use: PyAV, `to_ndarray('rgb24')`) as uint8."""
    from comfy_api.input_impl import VideoFromFile

    def load(path) -> np.ndarray:
        images = VideoFromFile(str(path)).get_components().images
        return (images.numpy() * 255).round().astype(np.uint8)

    return load


def test_stream_is_tagged_bt709_limited_range(tmp_path):
    path = write_mp4(tmp_path / "c.mp4", flat_frames(COLOURS[:2]), fps=24)
    with av.open(str(path)) as container:
        cc = container.streams.video[0].codec_context
        tags = (cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range)
        frame = next(container.decode(video=0))
        frame_tags = (frame.colorspace, frame.color_primaries, frame.color_trc, frame.color_range)
    assert tags == frame_tags == (BT709, BT709, BT709, LIMITED)
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True)
    assert "yuv420p(tv, bt709, progressive)" in probe.stderr.decode()  # all three BT.709, limited range


def test_flat_colours_come_back_within_2_from_ffmpeg_and_comfyui_load_video(tmp_path, load_video):
    path = write_mp4(tmp_path / "c.mp4", flat_frames(COLOURS), fps=24)
    by_ffmpeg, by_comfyui = centre_colours(read_mp4(path)[0]), centre_colours(load_video(path))
    assert np.abs(by_ffmpeg - COLOURS).max() <= 2, np.c_[COLOURS, by_ffmpeg]
    assert np.abs(by_comfyui - COLOURS).max() <= 2, np.c_[COLOURS, by_comfyui]


def test_five_save_load_cycles_stay_within_3(tmp_path):
    frames = flat_frames(COLOURS)
    for cycle in range(5):
        frames = read_mp4(write_mp4(tmp_path / f"cycle{cycle}.mp4", frames, fps=24))[0]
    assert np.abs(centre_colours(frames) - COLOURS).max() <= 3, np.c_[COLOURS, centre_colours(frames)]


def test_load_video_save_mp4_loop_adds_no_drift_per_cycle(tmp_path, load_video):
    """ComfyUI's Load Video decodes with swscale's fast rounding, which loses about 1 unit per decode on saturated
    colours whatever the file holds (measured: 8 after 5 cycles on (0, 255, 255); exact decodes: 1, stable). What the
    pack controls is the file: each cycle's file, read by Load Video, is within 2 of the frames saved into it."""
    frames = flat_frames(COLOURS)
    for cycle in range(5):
        decoded = load_video(write_mp4(tmp_path / f"cycle{cycle}.mp4", frames, fps=24))
        assert np.abs(centre_colours(decoded) - centre_colours(frames)).max() <= 2, cycle
        frames = decoded


def test_streamed_file_of_long_video_has_the_same_colours_and_tags(tmp_path, load_video):
    """Long Video and the CLI stream windows through Mp4Writer, and a stopped run keeps a partial file: same colours."""
    frames = flat_frames(COLOURS)
    with Mp4Writer(tmp_path / "long.mp4", fps=24, keep_partial=True) as writer:
        for window in np.split(frames, 4):
            writer.write(window)
    writer = Mp4Writer(tmp_path / "stopped.mp4", fps=24, keep_partial=True)
    writer.write(frames)
    partial = writer.abort()
    for path in (tmp_path / "long.mp4", partial):
        assert np.abs(centre_colours(load_video(path)) - COLOURS).max() <= 2
        with av.open(str(path)) as container:
            cc = container.streams.video[0].codec_context
            assert (cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range) == (BT709, BT709, BT709, LIMITED)
