"""Shots (issue 30): a `[cut]` prompt line starts its window from a new prior, the next image of a batch or the image
CLIP retrieves from a folder for that line, and the seam report leaves cuts out. A tiny random CLIP; the right image
for each line is found by brute force (every image embedded on its own, the best cosine), not by the index."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_long_video import WINDOW, FakeEncoders, SpyVAE, prior_image
from tiny_clip import WORDS, save_tiny_clip

from magic141_core import tiny
from magic141_core.dit.loading import random_dit
from magic141_core.priors import ClipEmbedder, FolderPrior, ImageIndex
from magic141_core.vae import random_vae, tiny_vae
from magic141_core.video.image_files import load_image
from magic141_core.video.long_video import LongVideoSettings, generate_long_video
from magic141_core.video.resume import LongVideoFile, continued_board
from magic141_core.video.seams import measure_seams, strip
from magic141_core.video.shots import shot_priors
from magic141_core.video.sidecar import SidecarReader
from magic141_core.video.start_image import fit_image
from magic141_core.video.windows import WindowPlan, WindowPrompt, storyboard

SETTINGS = LongVideoSettings(seed=3, fps=8, steps=1)


def test_the_cut_marker_starts_a_shot_and_repeats_continue_it():
    board = storyboard("a harbour at dawn\n\n[CUT]  a lighthouse at dusk \nthe beam turns\n[cut] the sea", 6)
    assert board == [WindowPrompt("a harbour at dawn"), WindowPrompt("a lighthouse at dusk", True),
                     WindowPrompt("the beam turns"), WindowPrompt("the sea", True), WindowPrompt("the sea"),
                     WindowPrompt("the sea")]
    with pytest.raises(ValueError, match="the first prompt line starts with \\[cut\\], but the first window starts"):
        storyboard("[cut] a lighthouse", 2)
    with pytest.raises(ValueError, match="prompt line 2 is only \\[cut\\]: write the new shot's prompt after it"):
        storyboard("a harbour\n[cut]", 2)
    plan = WindowPlan(4, 9, 5, cuts={2})
    assert [plan.new_frames(k) for k in range(4)] == [9, 4, 9, 4] and plan.seams() == [9, 22]  # frame 13: a cut
    assert plan.window_starts() == [0, 9, 13, 22]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six random images (different sizes) and a tiny CLIP; two prompts whose nearest images differ."""
    root = tmp_path_factory.mktemp("priors")
    rng = np.random.default_rng(5)
    for i in range(6):
        pixels = rng.integers(0, 255, (30 + 2 * i, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"img{i}.png")
    embedder = ClipEmbedder(save_tiny_clip(tmp_path_factory.mktemp("clip")))
    return root, embedder


def nearest(root, embedder, prompt):
    """The brute-force answer: each file embedded alone, the highest cosine with the prompt's embedding."""
    files = sorted(root.glob("*.png"))
    images = torch.cat([embedder.embed_images([Image.open(f).convert("RGB")]) for f in files])
    return files[int((images @ embedder.embed_text([prompt])[0]).argmax())]


def two_prompts(root, embedder):
    phrases = [f"a {a} {b}" for a in WORDS[3:9] for b in WORDS[9:15]]
    first = phrases[0]
    other = next(p for p in phrases if nearest(root, embedder, p) != nearest(root, embedder, first))
    return first, other


def render(video, models):
    dit, vae = models
    encoders, spy = FakeEncoders(), SpyVAE(vae)
    with video:
        generate_long_video(dit, encoders, spy, prior_image(), video.prompts, WINDOW, video.write, SETTINGS,
                            plan=video.plan, shots=video.shots, resume=video.handover, on_window=video.window_done)
    return encoders, spy


def test_each_cut_starts_from_the_image_retrieved_for_its_line(folder, tmp_path):
    root, embedder = folder
    first, other = two_prompts(root, embedder)
    index = ImageIndex(root)
    index.update(embedder)
    board = storyboard(f"the harbour\n[cut] {first}\nthe same shot\n[cut] {other}", 4)
    shots, sources = shot_priors(board, 32, 32, folder=FolderPrior(index, embedder))
    assert set(shots) == {1, 3}
    for k, prompt in ((1, first), (3, other)):
        want = nearest(root, embedder, prompt)
        assert sources[k].startswith(f"retrieved {want.name} (score ")
        assert torch.equal(shots[k], fit_image(load_image(want), 32, 32))

    models = random_dit(tiny(), seed=1), random_vae(tiny_vae(), seed=2)
    video = LongVideoFile.create(tmp_path / "story.mp4", SETTINGS, board, prior_image(), WINDOW, shots=shots,
                                 shot_sources=sources)
    encoders, spy = render(video, models)
    anchors = [image for _, image in encoders.calls]  # the VLM's identity anchor per window: its shot's prior
    for k, want in enumerate([prior_image(), shots[1], shots[1], shots[3]]):
        assert torch.equal(anchors[k], want), k
    for k in (1, 3):  # a cut's window starts from its image alone, not the video's last frames
        assert torch.equal(spy.encoded[k], shots[k])
    assert spy.encoded[2].shape[0] == 5  # within a shot: the motion context as usual
    record = SidecarReader.read(tmp_path / "story.m141").record
    assert [w["frames"] for w in record.windows] == [9, 9, 4, 9]
    assert record.shots == {"1": sources[1], "3": sources[3]}

    # a re-roll inside the second shot keeps its prior (from the sidecar, no retrieval)
    old = SidecarReader.read(tmp_path / "story.m141")
    again = LongVideoFile.resume(tmp_path / "again.mp4", old, 2, SETTINGS, continued_board(old, 2, None))
    encoders, _ = render(again, models)
    assert torch.equal(encoders.calls[0][1], shots[1]) and torch.equal(encoders.calls[1][1], shots[3])


def test_cuts_take_the_images_of_a_batch_in_order():
    board = storyboard("a\n[cut] b\nc\n[cut] d", 4)
    images = torch.rand(2, 20, 40, 3)
    shots, sources = shot_priors(board, 32, 32, images=images)
    assert torch.equal(shots[3], fit_image(images[1:], 32, 32)) and sources == {1: "shot image 1", 3: "shot image 2"}
    assert set(shot_priors(board, 32, 32, images=images, first=2)[0]) == {3}  # a re-roll from window 3
    with pytest.raises(ValueError, match="cut 2 \\(window 4\\) takes shot image 2, but the batch holds 1"):
        shot_priors(board, 32, 32, images=images[:1])
    with pytest.raises(ValueError, match="windows 2, 4\\) each start a new shot .* none is given"):
        shot_priors(board, 32, 32)


def test_the_report_leaves_cuts_out_and_keeps_the_worst_seam():
    """Frames brightening 1/255 a frame; seams at 9 (a jump of 10/255) and 22 (a jump of 30/255), a cut at 13 (a
    jump of 100/255). The cut is neither a seam nor motion inside a window, the drift starts again at it, and the
    strip shows frames 20-23."""
    plan = WindowPlan(4, 9, 5, cuts={2})
    levels, level = [], 20.0
    for i in range(plan.total):
        level += {9: 10, 13: 100, 22: 30}.get(i, 1)
        levels.append(level)
    frames = [np.full((4, 6, 3), v / 255, np.float32) for v in levels]
    starts = plan.window_starts()
    report = measure_seams(frames, plan.seams(), starts, [starts[k] for k in plan.cuts])
    assert [frame for frame, _ in report.seams] == [9, 22] and report.seam_count == 2
    assert [round(d * 255, 3) for _, d in report.seams] == [10, 30] and round(report.within_diff * 255, 3) == 1
    assert np.allclose(np.array(report.window_drift) * 255 * np.sqrt(1 / 3), [8, 21, 8, 41], atol=1e-3)
    assert [f[0, 0, 0] * 255 for f in report.worst_frames] == pytest.approx(levels[20:24])
    assert strip(report.worst_frames).shape == (4, 24, 3)
    lines = report.details().splitlines()
    assert lines[1] == "seam 2 at frame 22: change 0.1176, 30.00x the motion inside windows (0.0039)"
    assert "the worst at frame 22, 30.00x" in report.verdict() and report.verdict().startswith("Seams: a visible")
