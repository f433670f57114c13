"""MP4 writing: decodable, right frame count/size/fps, metadata round trip, atomic and partial behaviour."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from magic141_core.video.mp4 import Mp4Writer, read_mp4, read_mp4_metadata, write_mp4


def smooth_frames(count: int, height: int, width: int) -> torch.Tensor:
    """Gradients that drift per frame: content H.264 in yuv420p keeps well (unlike per-pixel noise)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    t = torch.arange(count).view(-1, 1, 1) / count
    return torch.stack([(x + t) % 1, y.expand(count, -1, -1), (x * y + t) % 1], dim=-1)


def test_written_video_decodes_with_the_right_frames_and_metadata(tmp_path):
    frames = smooth_frames(9, 32, 48)
    workflow = {"nodes": [{"id": 1, "widgets_values": ["tricky = ; # \\ text\nwith newline"]}]}
    path = write_mp4(tmp_path / "clip.mp4", frames, fps=24, crf=10, metadata={"prompt": {"1": {}}, "workflow": workflow})
    decoded, fps = read_mp4(path)
    assert decoded.shape == (9, 32, 48, 3) and fps == 24.0
    assert np.abs(decoded.astype(float) / 255 - frames.numpy()).mean() < 0.03  # lossy, but the same frames
    tags = read_mp4_metadata(path)
    assert json.loads(tags["workflow"]) == workflow and json.loads(tags["prompt"]) == {"1": {}}
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temporary files left


def test_odd_sizes_are_padded_to_even(tmp_path):
    decoded, _ = read_mp4(write_mp4(tmp_path / "odd.mp4", torch.rand(3, 33, 47, 3), fps=8))
    assert decoded.shape == (3, 34, 48, 3)


def test_streamed_chunks_equal_one_write(tmp_path):
    frames = (torch.rand(10, 16, 16, 3) * 255).to(torch.uint8)
    with Mp4Writer(tmp_path / "a.mp4", fps=12, crf=0) as w:
        for chunk in frames.split(3):
            w.write(chunk)
    write_mp4(tmp_path / "b.mp4", frames, fps=12, crf=0)
    assert np.array_equal(read_mp4(tmp_path / "a.mp4")[0], read_mp4(tmp_path / "b.mp4")[0])


def test_an_error_mid_write_leaves_no_file_and_an_existing_file_is_never_replaced(tmp_path):
    target = tmp_path / "clip.mp4"
    write_mp4(target, torch.rand(2, 16, 16, 3), fps=8)
    before = target.read_bytes()
    with pytest.raises(FileExistsError, match="clip.mp4 already exists"):  # refused before any frame
        Mp4Writer(target, fps=8)
    with pytest.raises(KeyboardInterrupt):
        with Mp4Writer(tmp_path / "new.mp4", fps=8) as w:
            w.write(torch.rand(4, 16, 16, 3))
            raise KeyboardInterrupt
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_abort_can_keep_a_playable_partial_video(tmp_path):
    w = Mp4Writer(tmp_path / "long.mp4", fps=8, keep_partial=True)
    w.write(torch.rand(5, 16, 16, 3))
    partial = w.abort()
    assert partial.name == "long_partial.mp4" and read_mp4(partial)[0].shape[0] == 5
    assert not (tmp_path / "long.mp4").exists()


@pytest.mark.parametrize("kwargs, message", [({"fps": 0}, "fps"), ({"fps": 24, "crf": 60}, "crf")])
def test_bad_settings(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Mp4Writer(tmp_path / "x.mp4", **kwargs)


def test_size_change_and_bad_layout_are_refused(tmp_path):
    with pytest.raises(ValueError, match="size changed"):
        with Mp4Writer(tmp_path / "x.mp4", fps=8) as w:
            w.write(torch.rand(1, 16, 16, 3))
            w.write(torch.rand(1, 32, 16, 3))
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\]"):
        write_mp4(tmp_path / "y.mp4", torch.rand(3, 16, 16), fps=8)
    assert not any(tmp_path.iterdir())
