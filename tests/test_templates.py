"""The templates as the Templates browser shows them: a real thumbnail beside each (served where the frontend asks
for it), and nodes that do not overlap once the frontend grows them to fit their slots and widgets."""

from __future__ import annotations

import json
import urllib.request
from urllib.parse import quote

import numpy as np
import pytest
from comfy_server import ComfyServer
from comfyui_env import PACK_NAME, REPO
from PIL import Image

TEMPLATES = sorted((REPO / "example_workflows").glob("*.json"))
TITLE = 30  # LiteGraph's title bar, drawn above a node's pos


def _boxes(path):
    nodes = json.loads(path.read_text())["nodes"]
    return [(n["id"], n["pos"][0], n["pos"][1] - TITLE, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
            for n in nodes], nodes


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_nodes_do_not_overlap_and_fit_their_widgets(path):
    boxes, nodes = _boxes(path)
    for node in nodes:  # at least a 20 px row per slot (inputs beside outputs) and a 20 px row per widget
        rows = max(len(node["inputs"]), len(node["outputs"]))
        assert node["size"][1] >= 20 * rows + 20 * len(node["widgets_values"]), (path.name, node["type"])
    for i, (a, ax0, ay0, ax1, ay1) in enumerate(boxes):
        for b, bx0, by0, bx1, by1 in boxes[i + 1:]:
            assert not (ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1), (path.name, a, b)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_every_template_has_a_real_thumbnail(path):
    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), f"run scripts/build_thumbnails.py: {thumb.name} is missing"
    with Image.open(thumb) as image:
        assert image.format == "JPEG" and image.size == (512, 288)
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 20 and pixels[62:].reshape(-1, 3).std(0).min() > 10  # a picture, not a blank card


def test_the_server_lists_templates_and_serves_their_thumbnails(tmp_path):
    server = ComfyServer(tmp_path / "base")
    try:
        assert set(server.get("/api/workflow_templates")[PACK_NAME]) == {p.stem for p in TEMPLATES}
        for path in TEMPLATES:  # the frontend's URL for a custom node template's thumbnail
            url = f"{server.url}/api/workflow_templates/{PACK_NAME}/{quote(path.stem)}.jpg"  # titles have spaces
            with urllib.request.urlopen(url, timeout=30) as response:
                assert response.read() == path.with_suffix(".jpg").read_bytes()
    finally:
        server.stop()
