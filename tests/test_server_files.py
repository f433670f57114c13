"""Files and numbers on a real ComfyUI server (issue 22 §2-3, issue 20 §5): an output prefix through a symlink out of
output/ is refused and the next prompt runs; a killed run's hidden temporary video is cleaned up by the next save
and never listed as an output; a NaN duration, which ComfyUI's range check lets through, gets one clear message."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from comfy_server import ComfyServer
from PIL import Image
from run_sh_server import CPU_SIZE, api_prompt, error_of, mp4s_on_disk, outputs_mp4

from magic141_core.runtime.atomic import _host


@pytest.fixture(scope="module")
def server(tmp_path_factory, comfy_base, demo_models):
    base = tmp_path_factory.mktemp("comfy_server_files")
    (base / "models").symlink_to(comfy_base / "models", target_is_directory=True)  # the session's demo models
    (base / "input").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(
        base / "input" / "example.png")
    srv = ComfyServer(base)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def test_a_prefix_through_a_symlink_out_of_output_is_refused_and_the_next_prompt_runs(server, object_info,
                                                                                     tmp_path):
    (server.base / "output").mkdir(exist_ok=True)
    (server.base / "output" / "link").symlink_to(tmp_path, target_is_directory=True)
    prompt, _ = api_prompt(server, object_info, "image_to_video", Magic141ImageToVideo=CPU_SIZE,
                           Magic141SaveMP4={"filename_prefix": "link/x"})
    assert "filename_prefix 'link/x' points outside the output folder" in error_of(server, prompt)
    assert list(tmp_path.iterdir()) == []

    # a run killed earlier (SIGKILL: no cleanup) left its hidden temporary video in the folder it was writing to
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = server.base / "output" / "files"
    folder.mkdir()
    stale = folder / f".ok_00001_.m141tmp-{_host()}-{int(dead.stdout)}.abcd1234.partial.mp4"
    stale.write_bytes(b"half a video")
    before = mp4s_on_disk(server)
    prompt, _ = api_prompt(server, object_info, "image_to_video", Magic141ImageToVideo=CPU_SIZE,
                           Magic141SaveMP4={"filename_prefix": "files/ok"})
    history = server.wait(server.queue(prompt))
    assert history["status"]["status_str"] == "success", history["status"]
    (video,) = outputs_mp4(server, history)
    assert mp4s_on_disk(server) - before == {video.relative_to(server.base)}
    assert not stale.exists() and [p.name for p in folder.iterdir()] == [video.name]


def test_a_nan_duration_passes_comfyuis_range_check_and_gets_our_message(server, object_info):
    prompt, _ = api_prompt(server, object_info, "long_video", Magic141LongVideo={
        "resolution": "custom", "width": 64, "height": 48, "duration": "nan", "unit": "windows", "window_length": 5,
        "context_frames": 1, "filename_prefix": "never"})  # ComfyUI turns "nan" into float NaN, which no min/max comparison stops
    assert "the number of windows must be a whole number from 1 to 3600, got nan" in error_of(server, prompt)
    assert not list((server.base / "output").glob("never*"))
