"""Save MP4 and Long Video also give ComfyUI's native VIDEO: on a real server, Save MP4's VIDEO goes into native Save
Video and Get Video Components; every file carries the workflow, and the frames keep their colour."""

from __future__ import annotations

import numpy as np
import pytest
from comfy_server import ComfyServer
from PIL import Image

from magic141_core.video.mp4 import read_mp4, read_mp4_metadata

COLOUR = (40, 180, 60)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ComfyServer(tmp_path_factory.mktemp("native_video"))
    yield srv
    srv.stop()


def test_our_nodes_declare_a_video_output(server):
    info = server.get("/object_info")
    assert info["Magic141SaveMP4"]["output"] == ["IMAGE", "VIDEO"]
    assert info["Magic141LongVideo"]["output"] == ["IMAGE", "STRING", "VIDEO", "IMAGE", "STRING"]  # appended only
    assert info["Magic141LongVideo"]["output_name"][2] == "video"


def test_save_mp4_video_feeds_native_save_video_and_get_video_components(server):
    workflow = {"nodes": [], "links": [], "note": "native video test"}
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 9,
                                                     "color": (COLOUR[0] << 16) | (COLOUR[1] << 8) | COLOUR[2]}},
        "2": {"class_type": "Magic141SaveMP4", "inputs": {"images": ["1", 0], "fps": 24.0, "quality": 19,
                                                          "filename_prefix": "native/clip"}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 1], "filename_prefix": "native/copy",
                                                    "format": "mp4", "codec": "h264"}},
        "4": {"class_type": "GetVideoComponents", "inputs": {"video": ["2", 1]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "native/frame"}},
    }
    history = server.wait(server.queue(prompt, extra_pnginfo={"workflow": workflow}))
    assert history["status"]["status_str"] == "success", history["status"]
    out = server.base / "output" / "native"
    ours, copy = sorted(out.glob("clip_*.mp4")), sorted(out.glob("copy_*.mp4"))
    assert len(ours) == 1 and len(copy) == 1
    for path in (ours[0], copy[0]):  # both files carry the workflow (drop either on ComfyUI to reopen it)
        assert '"native video test"' in read_mp4_metadata(path)["workflow"]
        frames, fps = read_mp4(path)
        assert frames.shape == (9, 48, 64, 3) and fps == 24.0
        assert np.abs(frames[:, 8:40, 8:56].reshape(-1, 3).mean(0) - COLOUR).max() <= 2
    pngs = sorted(out.glob("frame_*.png"))
    assert len(pngs) == 9  # Get Video Components gave every frame
    centre = np.asarray(Image.open(pngs[4]))[8:40, 8:56].reshape(-1, 3).mean(0)
    assert np.abs(centre - COLOUR).max() <= 2
