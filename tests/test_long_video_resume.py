"""Editing a long video instead of starting over (issue 30): every window remembered in the sidecar, a re-roll from
window k that reuses the windows before it bit for bit (not rendered again) and starts window k from exactly its
old hand-over, a resume after Cancel or a killed process that gives the uninterrupted run's file, and sidecars that
cannot be trusted refused with one message before anything is written. Tiny random models, 32 x 32, 9-frame
windows (`test_long_video`'s)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_long_video import WINDOW, FakeEncoders, prior_image

from magic141_core import tiny
from magic141_core.dit.loading import random_dit
from magic141_core.vae import random_vae, tiny_vae
from magic141_core.video.long_video import CoreFrameVAE, LongVideoSettings, generate_long_video
from magic141_core.video.mp4 import read_mp4
from magic141_core.video.resume import LongVideoFile, check_continues, check_models, continued_board, first_window
from magic141_core.video.sidecar import RecordError, SidecarReader, fingerprint, locate_sidecar, sidecar_folder
from magic141_core.video.windows import storyboard

SETTINGS = LongVideoSettings(seed=7, fps=8, steps=2)
BOARD = storyboard("a cat sits\nthe cat stands\nthe cat walks\nthe cat runs", 4)
FRAMES = [9, 4, 4, 4]  # window 0 writes all 9 frames, each later one 9 - 5 context frames


@pytest.fixture(scope="module")
def models():
    return random_dit(tiny(), seed=1), CoreFrameVAE(random_vae(tiny_vae(), seed=2))


def render(models, video: LongVideoFile, settings=SETTINGS, stop_at=None):
    """Run the windows `video` asks for; returns the windows whose first step ran. `stop_at`: Cancel (raise
    KeyboardInterrupt) in that window's second step."""
    dit, vae = models
    started = []

    def on_step(window, step):
        if step.index == 0:
            started.append(window)
        if window == stop_at and step.index == 1:
            raise KeyboardInterrupt

    with video:
        generate_long_video(dit, FakeEncoders(), vae, prior_image(), video.prompts, WINDOW, video.write,
                            settings, plan=video.plan, shots=video.shots, resume=video.handover, on_step=on_step,
                            on_window=video.window_done)
    return started


def new_video(path, settings=SETTINGS, board=BOARD):
    return LongVideoFile.create(path, settings, board, prior_image(), WINDOW)


def continue_video(models, old_path, new_path, window=None, settings=SETTINGS, board=None):
    old = SidecarReader.read(sidecar_folder(old_path))
    first = first_window(old, window)
    check_continues(old, settings, 32, 32, WINDOW, 0, prior_image())
    check_models(old, {})
    video = LongVideoFile.resume(new_path, old, first, settings, continued_board(old, first, board))
    return render(models, video, settings)


def snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def full(models, tmp_path_factory):
    """An uninterrupted 4-window video with its sidecar."""
    path = tmp_path_factory.mktemp("full") / "long.mp4"
    assert render(models, new_video(path)) == [0, 1, 2, 3]
    return path


def test_the_sidecar_records_every_window(full):
    record = SidecarReader.read(locate_sidecar(full)).record
    assert record.complete and record.video == "long.mp4" and (record.width, record.height) == (32, 32)
    assert [w["prompt"] for w in record.windows] == [p.text for p in BOARD]
    assert [w["frames"] for w in record.windows] == FRAMES and all(w["seed"] == 7 for w in record.windows)
    # the video is its windows' own files joined packet for packet: each window decodes to the same pixels in both
    # (a join that encoded again would lose a generation; a reused window would then differ from its old self)
    windows = [read_mp4(sidecar_folder(full) / w["segment"]["name"])[0] for w in record.windows]
    assert [len(w) for w in windows] == FRAMES and (np.concatenate(windows) == read_mp4(full)[0]).all()
    # locate_sidecar takes the folder, its record.json, the video or a stopped run's partial video
    folder = sidecar_folder(full)
    assert {locate_sidecar(p) for p in (folder, full, full.with_name("long_partial_2.mp4"))} == {folder}


def test_resume_after_cancel_gives_the_uninterrupted_video(models, full, tmp_path):
    """Cancel in window 3: the partial video holds windows 1-2, the sidecar remembers them, and the resumed run
    renders only windows 3-4 into a new file whose frames equal the uninterrupted run's, bit for bit."""
    stopped = tmp_path / "stopped.mp4"
    with pytest.raises(KeyboardInterrupt):
        render(models, new_video(stopped), stop_at=2)
    assert not stopped.exists() and len(read_mp4(tmp_path / "stopped_partial.mp4")[0]) == 9 + 4
    assert not (sidecar_folder(stopped) / "window_0002.mp4").exists()  # the unfinished window left nothing
    with pytest.raises(KeyboardInterrupt):
        render(models, new_video(tmp_path / "early.mp4"), stop_at=0)
    assert not list(tmp_path.glob("early*"))  # stopped before a window was finished: nothing is kept
    before = snapshot(tmp_path)
    assert continue_video(models, stopped, tmp_path / "resumed.mp4") == [2, 3]  # nothing rendered twice
    resumed, uninterrupted = read_mp4(tmp_path / "resumed.mp4")[0], read_mp4(full)[0]
    assert resumed.shape == uninterrupted.shape and (resumed == uninterrupted).all()
    assert all(snapshot(tmp_path)[name] == value for name, value in before.items())  # nothing written over


def test_a_reroll_changes_only_the_windows_from_k(models, full, tmp_path):
    """Re-roll from window 3 with another seed: windows 1-2 are the old file's frames bit for bit (their encoded
    files are linked, not rendered or encoded again), windows 3-4 are new. With the old seed the re-roll gives the
    old windows back: window 3 started from exactly the hand-over it had."""
    old = read_mp4(full)[0]
    reseeded = dataclasses.replace(SETTINGS, seed=8, cfg=1.5)  # sampling settings are the window's own
    assert continue_video(models, full, tmp_path / "reseeded.mp4", window=2, settings=reseeded) == [2, 3]
    new = read_mp4(tmp_path / "reseeded.mp4")[0]
    cut = 9 + 4
    assert (new[:cut] == old[:cut]).all() and (new[cut:] != old[cut:]).any()
    for name in ("window_0000.mp4", "window_0001.safetensors"):
        assert (sidecar_folder(full) / name).stat().st_ino == (tmp_path / "reseeded.m141" / name).stat().st_ino
    record = SidecarReader.read(tmp_path / "reseeded.m141").record
    assert [(w["seed"], w["cfg"]) for w in record.windows] == [(7, 1.0), (7, 1.0), (8, 1.5), (8, 1.5)]
    continue_video(models, full, tmp_path / "same.mp4", window=2)
    assert (read_mp4(tmp_path / "same.mp4")[0] == old).all()


def test_a_reroll_with_a_new_prompt_and_more_windows(models, full, tmp_path):
    board = storyboard("x\ny\nthe cat jumps\nthe cat lands\nthe cat sleeps", 5)
    continue_video(models, full, tmp_path / "longer.mp4", window=2, board=board)
    record = SidecarReader.read(tmp_path / "longer.m141").record
    assert [w["prompt"] for w in record.windows] == ["a cat sits", "the cat stands", "the cat jumps", "the cat lands",
                                                     "the cat sleeps"]  # the reused windows keep theirs
    assert len(read_mp4(tmp_path / "longer.mp4")[0]) == sum(FRAMES) + 4


CRASH = """
import sys, time, torch
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
import test_long_video_resume as t
from magic141_core import tiny
from magic141_core.dit.loading import random_dit
from magic141_core.vae import random_vae, tiny_vae
from magic141_core.video.long_video import CoreFrameVAE, generate_long_video
models = random_dit(tiny(), seed=1), CoreFrameVAE(random_vae(tiny_vae(), seed=2))
video = t.new_video({path!r})
def on_step(window, step):
    if window == 2 and step.index == 1:
        open({marker!r}, "w").close()
        time.sleep(600)
with video:
    generate_long_video(models[0], t.FakeEncoders(), models[1], t.prior_image(), [p.text for p in t.BOARD], t.WINDOW,
                        video.write, t.SETTINGS, plan=video.plan, shots=video.shots, resume=video.handover,
                        on_step=on_step, on_window=video.window_done)
"""


def test_resume_after_the_process_is_killed_mid_window(models, full, tmp_path):
    """SIGKILL in window 3 (no Python cleanup runs): no video file exists, the sidecar holds windows 1-2, and the
    resumed run completes into a new file equal to the uninterrupted one; the killed run's files stay as they were."""
    tests = Path(__file__).parent
    path, marker = tmp_path / "killed.mp4", tmp_path / "in_window_3"
    script = CRASH.format(repo=str(tests.parent), tests=str(tests), path=str(path), marker=str(marker))
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert not path.exists() and not list(tmp_path.glob("killed_partial*"))
    old = SidecarReader.read(sidecar_folder(path))
    assert len(old.record.windows) == 2 and not old.record.complete and first_window(old, None) == 2
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError, match="killed.m141 already exists"):
        LongVideoFile.resume(path, old, 2, SETTINGS, continued_board(old, 2, None))
    continue_video(models, path, tmp_path / "after_kill.mp4")
    assert (read_mp4(tmp_path / "after_kill.mp4")[0] == read_mp4(full)[0]).all()
    after = snapshot(tmp_path)
    assert all(after[name] == value for name, value in before.items())


def test_fingerprints_tell_models_apart(models):
    dit, vae = models
    assert fingerprint(dit) == fingerprint(random_dit(tiny(), seed=1)) != fingerprint(random_dit(tiny(), seed=3))
    assert fingerprint(vae) and fingerprint(vae) != fingerprint(dit) and fingerprint(None) == ""


def rewrite(record_file: Path, change) -> None:
    """Edit record.json's body with `change` and store it with a valid checksum (a crafted, not a careless, edit)."""
    import hashlib

    from magic141_core.video.sidecar import _canonical

    data = json.loads(record_file.read_text())
    change(data["record"])
    data["checksum"] = hashlib.sha256(_canonical(data["record"])).hexdigest()
    record_file.write_text(json.dumps(data))


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.write_text(f.read_text().replace("the cat walks", "the dog walks")), "was changed after it was "
     "written .*edited by hand"),
    (lambda f: f.write_text(f.read_text()[:500]), "is not valid JSON .*truncated"),
    (lambda f: f.write_bytes(b" " * (17 << 20)), "holds more than 16 MiB"),
    (lambda f: rewrite(f, lambda r: r["windows"][0]["segment"].update(name="../../outside.mp4")),
     "missing or out of range .*a bare file name"),
    (lambda f: rewrite(f, lambda r: r.update(width=33)), "missing or out of range .*multiple of 16"),
    (lambda f: rewrite(f, lambda r: r["windows"][1]["state"].update(bytes=1 << 40)), "more than a file of this "
     "video can hold"),
    (lambda f: (f.parent / "window_0000.mp4").write_bytes((f.parent / "window_0000.mp4").read_bytes()[:-100]),
     "window_0000.mp4 is not the file the record names .*truncated"),
    (lambda f: (f.parent / "window_0001.safetensors").unlink(), "window_0001.safetensors is missing"),
])
def test_a_damaged_sidecar_is_refused_and_nothing_is_written(models, full, tmp_path, damage, message):
    copy = tmp_path / "copy.m141"
    copy.mkdir()
    for file in sidecar_folder(full).iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    damage(copy / "record.json")
    with pytest.raises(ValueError, match=message):  # RecordError, or read_text's budget
        old = SidecarReader.read(copy)
        LongVideoFile.resume(tmp_path / "new.mp4", old, 2, SETTINGS, continued_board(old, 2, None))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.m141"]


def test_a_sidecar_that_leads_outside_the_allowed_folders_is_refused(full, tmp_path):
    allowed = tmp_path / "output"
    copy = allowed / "copy.m141"
    copy.mkdir(parents=True)
    for file in sidecar_folder(full).iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes((copy / "window_0000.safetensors").read_bytes())
    (copy / "window_0000.safetensors").unlink()
    (copy / "window_0000.safetensors").symlink_to(secret)
    old = SidecarReader.read(copy, roots=[allowed])
    with pytest.raises(RecordError, match="window_0000.safetensors is a link to a file outside the allowed folders"):
        old.handover(1)
    (allowed / "linked.m141").symlink_to(sidecar_folder(full))  # the whole sidecar a link out
    with pytest.raises(RecordError, match="outside the allowed folders"):
        SidecarReader.read(allowed / "linked.m141", roots=[allowed])


def test_a_sidecar_of_another_size_model_or_prior_is_refused(full):
    old = SidecarReader.read(sidecar_folder(full))
    with pytest.raises(RecordError, match="differs from the video recorded in long.m141 in: size 64x32 \\(recorded "
                                          "32x32\\), context_frames 1 \\(recorded 5\\). A video continues"):
        check_continues(old, dataclasses.replace(SETTINGS, context_frames=1), 64, 32, WINDOW, 0)
    with pytest.raises(RecordError, match="was made with another transformer \\(fingerprint none, this one abc: other"):
        check_models(old, {"transformer": "abc"})
    with pytest.raises(RecordError, match="the prior image is not the one long.m141 was made with"):
        check_continues(old, SETTINGS, 32, 32, WINDOW, 0, prior_image().flip(1))
    check_continues(old, dataclasses.replace(SETTINGS, seed=1, steps=4, shift=3.0, guidance=2.0), 32, 32, WINDOW, 0)
    with pytest.raises(RecordError, match="all 4 windows of long.m141 are finished .* nothing to resume"):
        first_window(old, None)
    with pytest.raises(RecordError, match="re-roll from window 1 to 5"):
        first_window(old, 5)


def test_long_video_node_refuses_a_resume_outside_output_and_a_lone_from_window(pack, comfy_base):
    from conftest import run_node
    from test_motion_context import long_video_inputs

    node = pack.NODE_CLASS_MAPPINGS["Magic141LongVideo"]
    before = sorted((comfy_base / "output").rglob("*"))
    with pytest.raises(ValueError, match="from_window 3 re-rolls a recorded video: give its sidecar as resume"):
        run_node(node, **long_video_inputs(pack, from_window=3))
    for resume in ("../input/x.m141", "/etc", "Magic141/../../x.m141"):
        with pytest.raises(ValueError, match="must be a path inside the output folder"):
            run_node(node, **long_video_inputs(pack, resume=resume))
    (comfy_base / "output" / "out_link.m141").symlink_to(comfy_base / "input", target_is_directory=True)
    with pytest.raises(ValueError, match="points outside the output folder"):
        run_node(node, **long_video_inputs(pack, resume="out_link.m141"))
    (comfy_base / "output" / "out_link.m141").unlink()
    with pytest.raises(FileNotFoundError, match="is not a long video's sidecar"):
        run_node(node, **long_video_inputs(pack, resume="Magic141/none_00001_.mp4"))
    assert sorted((comfy_base / "output").rglob("*")) == before  # nothing written


def test_report_node_gives_the_figures_and_the_worst_seam_strip(pack, full):
    """The node on the video's frames as IMAGE, with the window layout from its widgets: the same figures as the
    core on the decoded file, its verdict first, and the strip of the worst seam (two frames before, two from it)."""
    from conftest import run_node

    from magic141_core.video.seams import measure_seams
    from magic141_core.video.windows import WindowPlan

    frames = torch.from_numpy(read_mp4(full)[0]).float() / 255
    out = run_node(pack.NODE_CLASS_MAPPINGS["Magic141LongVideoReport"], window_length=WINDOW, context_frames=5,
                   frames=frames)
    text, image = out["result"]
    plan = WindowPlan(4, WINDOW, 5)
    want = measure_seams(frames.numpy(), plan.seams(), plan.window_starts())
    assert text.splitlines()[0] == want.verdict() == out["ui"]["text"][0]
    assert text.endswith(want.details()) and len(want.details().splitlines()) == 3 + 4  # 3 seams, 4 windows
    worst = max(want.seams, key=lambda s: s[1])[0]
    assert image.shape == (1, 32, 4 * 32, 3) and torch.equal(image[0, :, 64:96], frames[worst])
    with pytest.raises(ValueError, match="connect the video or its frames"):
        run_node(pack.NODE_CLASS_MAPPINGS["Magic141LongVideoReport"], window_length=9, context_frames=5)


def test_a_full_disk_stops_the_run_and_it_resumes_elsewhere(models, full, tmp_path):
    """The video's folder fills up in the middle of the run (a 96 KiB tmpfs): the error names the full disk, the
    sidecar keeps every window finished before it, and the run resumes into another folder (another file system: the
    reused files are copied, not linked) to the uninterrupted run's frames."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)], capture_output=True)
    assert mounted.returncode == 0, f"a full disk is made as a tmpfs (root, as test_server_hostile): {mounted.stderr}"
    try:
        with pytest.raises(OSError, match="the disk is full"):
            render(models, new_video(disk / "full.mp4"))
        old = SidecarReader.read(disk / "full.m141")
        assert 1 <= len(old.record.windows) < 4
        continue_video(models, disk / "full.mp4", tmp_path / "elsewhere.mp4")
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert (read_mp4(tmp_path / "elsewhere.mp4")[0] == read_mp4(full)[0]).all()
