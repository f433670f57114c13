"""The pack in the host's pinned frontend and in the newest comfyui-frontend-package (1.58 or later, installed into
.frontend-new/ by scripts/setup_frontend.sh and served with ComfyUI's --front-end-root): the "Image to video"
template opens from the Templates browser with every node and no console error, and the "Magic141 image to video"
subgraph blueprint (subgraphs/) is found by the node search and added as one subgraph node holding the pack's
nodes. A missing newest frontend fails the test (it is a dependency, like chromium), never skips it."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from comfy_server import ComfyServer
from comfyui_env import COMFYUI, PACK_NAME, REPO
from test_browser import _not_ours, open_frontend

NEWEST = REPO / ".frontend-new" / "comfyui_frontend_package" / "static"
BLUEPRINT = "Magic141 image to video"


@pytest.fixture(scope="module", params=["pinned", "newest"])
def page(request, tmp_path_factory):
    args = ()
    if request.param == "newest":
        if not (NEWEST / "index.html").is_file():
            pytest.fail("the newest frontend is missing: run scripts/setup_frontend.sh (scripts/test.sh does)")
        args = ("--front-end-root", str(NEWEST))
    base = tmp_path_factory.mktemp(f"frontend_{request.param}")
    (base / "input").mkdir()
    shutil.copy(COMFYUI / "input" / "example.png", base / "input" / "example.png")
    server = ComfyServer(base, extra_args=args)
    server.post("/api/settings", {"Comfy.TutorialCompleted": True})
    try:
        with open_frontend(server) as page:
            page.frontend = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ ?? null")
            yield page
    finally:
        server.stop()


def test_the_image_to_video_template_opens_from_the_templates_browser(page):
    path = REPO / "example_workflows" / "Image to video.json"
    expected = sorted(n["type"] for n in json.loads(path.read_text())["nodes"])
    page.problems.clear()
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.get_by_text(PACK_NAME, exact=True).first.click()
    page.locator("[role=dialog]").get_by_text(path.stem, exact=True).first.click()
    page.wait_for_function(f"() => window.app.graph._nodes.length === {len(expected)}", timeout=30_000)
    time.sleep(1)
    assert sorted(page.evaluate("() => window.app.graph._nodes.map(n => n.type)")) == expected, page.frontend
    assert page.locator("[role=dialog]").count() == 0, page.locator("[role=dialog]").all_inner_texts()
    problems = [p for p in page.problems if not _not_ours(p)]
    assert not problems, (page.frontend, problems)


def test_the_blueprint_is_added_from_the_node_search_as_a_subgraph_of_the_packs_nodes(page):
    page.evaluate("() => window.app.graph.clear()")
    page.problems.clear()
    canvas = page.locator("#graph-canvas")
    canvas.dblclick(position={"x": 700, "y": 450})  # the node search opens where the user double-clicks
    page.get_by_placeholder("Add a node").first.fill(BLUEPRINT)
    # the result whose category line is the blueprint's (the pack's own "Magic141 Image To Video" node ranks first)
    page.get_by_text("Subgraph Blueprints / Magic141").first.click(timeout=30_000)
    page.wait_for_function("() => window.app.graph._nodes.length === 1", timeout=30_000)
    added = page.evaluate("""() => { const n = window.app.graph._nodes[0];
        return {subgraph: !!n.subgraph, title: n.title, inner: n.subgraph ? n.subgraph.nodes.map(m => m.type) : [],
                inputs: n.inputs.map(i => i.name), outputs: n.outputs.map(o => o.name)} }""")
    assert added["subgraph"] and added["title"] == BLUEPRINT, (page.frontend, added)
    assert sorted(added["inner"]) == sorted(["VAELoader", "Magic141ModelLoader", "Magic141EncoderLoader",
                                             "Magic141Encode", "Magic141ImageToVideo", "Magic141Sampler",
                                             "Magic141VAEDecode"]), added
    assert added["inputs"][:2] == ["start_image", "prompt"] and added["outputs"] == ["frames"], added
    problems = [p for p in page.problems if not _not_ours(p)]
    assert not problems, (page.frontend, problems)
