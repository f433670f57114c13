"""The templates in a real browser: Debian's chromium, driven by Playwright's Python package (no Playwright browser
download), opens the real ComfyUI frontend in a 1600x1000 window, and every template is opened the way a user does
it, through the Templates browser: its thumbnail loads, no missing-node dialog appears, no console error, every node
is there, no two nodes overlap as the frontend draws them (title bars included), and it opens readable: at >= 70 %
zoom with every node on screen, under no panel. After a run, no preview covers another node.

Console noise that is not the pack's: the frontend's attempts to reach api.comfy.org are blocked by ComfyUI's own
Content-Security-Policy (no network at run time), and are ignored here; every other console error fails the test."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path

import pytest
from comfy_server import ComfyServer
from comfyui_env import COMFYUI, PACK_NAME, REPO

from scripts.build_workflows import TEMPLATES as TEMPLATE_KEYS

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = {"width": 1600, "height": 1000}
# Each node's screen rectangle (the canvas scale and offset applied) and whether its corners, its centre and the
# middle of its title bar are drawn unobstructed: the element there belongs to the graph canvas (the canvas or a
# node's own text box or image), not to a panel, the side bar, the tab bar or the minimap.
ON_SCREEN = """() => { const ds = window.app.canvas.ds, inset = 4;
  return window.app.graph._nodes.filter(n => n.type !== 'Reroute').map(n => {
    const [x, y, w, h] = n.getBounding();
    const r = [(x + ds.offset[0]) * ds.scale, (y + ds.offset[1]) * ds.scale, w * ds.scale, h * ds.scale];
    const points = [[r[0] + inset, r[1] + inset], [r[0] + r[2] - inset, r[1] + inset], [r[0] + r[2] / 2, r[1] + 10],
                    [r[0] + inset, r[1] + r[3] - inset], [r[0] + r[2] - inset, r[1] + r[3] - inset],
                    [r[0] + r[2] / 2, r[1] + r[3] / 2]];
    const hidden = points.filter(([px, py]) => { const e = document.elementFromPoint(px, py);
      return !e || !e.closest('.graph-canvas-container'); });
    return {type: n.type, id: n.id, rect: r.map(Math.round), hidden: hidden.map(p => p.map(Math.round))}; }); }"""
TEMPLATES = sorted((REPO / "example_workflows").glob("*.json"))
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def _not_ours(entry) -> bool:
    return entry[0] == "console" and "Content Security Policy" in entry[1]  # the frontend's blocked calls out


@contextlib.contextmanager
def open_frontend(server: ComfyServer):
    """Debian's chromium (Playwright) on `server`'s frontend, loaded and settled. The page records what goes wrong
    in `page.problems` as (kind, text): "console" errors, "pageerror"s and "http" responses >= 400; `page.csp` is
    the Content-Security-Policy the server sent with the page."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package playwright is missing: pip install -r requirements-test.txt")
    if not CHROMIUM.is_file():
        pytest.fail("Debian's chromium is missing: apt-get install chromium (scripts/setup_browser.sh does it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        page = browser.new_page(viewport=WINDOW)
        page.problems = []
        page.on("console", lambda m: page.problems.append(("console", m.text)) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.problems.append(("pageerror", str(e))))
        page.on("response", lambda r: page.problems.append(("http", f"{r.status} {r.url}"))
                if r.status >= 400 else None)
        page.csp = page.goto(server.url).headers.get("content-security-policy", "")
        page.wait_for_function("() => window.app && window.LiteGraph && window.app.graph", timeout=120_000)
        time.sleep(2)  # let start-up settle; only what happens after this is attributed to the test
        yield page
        browser.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    base = tmp_path_factory.mktemp("browser")
    (base / "input").mkdir()
    shutil.copy(COMFYUI / "input" / "example.png", base / "input" / "example.png")  # the templates' Load Image
    server = ComfyServer(base)
    server.post("/api/settings", {"Comfy.TutorialCompleted": True})  # else the Templates dialog covers the canvas
    try:
        with open_frontend(server) as page:
            yield page
    finally:
        server.stop()


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_template_opens_from_the_templates_browser_cleanly(page, path):
    name, expected = path.stem, json.loads(path.read_text())["nodes"]
    page.problems.clear()
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.get_by_text(PACK_NAME, exact=True).first.click()  # the pack's category (under Extensions)
    title = page.locator("[role=dialog]").get_by_text(name, exact=True).first
    thumb = title.locator("xpath=ancestor::*[.//img][1]").locator("img").first
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle(), timeout=30_000)
    assert thumb.evaluate("img => img.naturalWidth") == 512  # our thumbnail, not the blank default
    title.click()
    page.wait_for_function(f"() => window.app.graph._nodes.length === {len(expected)}", timeout=30_000)
    time.sleep(1)
    nodes = page.evaluate("() => window.app.graph._nodes.map(n => ({type: n.type, box: Array.from(n.getBounding())}))")
    assert sorted(n["type"] for n in nodes) == sorted(n["type"] for n in expected)
    scale = page.evaluate("() => window.app.canvas.ds.scale")
    assert scale >= 0.7, f"{name} opens at {scale:.0%} zoom: nodes are drawn as blank boxes below about 60 %"
    covered = [n for n in page.evaluate(ON_SCREEN) if n["hidden"]]
    assert not covered, (name, covered)  # every node on screen, none under a panel
    assert page.locator("[role=dialog]").count() == 0, page.locator("[role=dialog]").all_inner_texts()  # no missing nodes
    problems = [p for p in page.problems if not _not_ours(p)]
    assert not problems, problems
    boxes = [n for n in nodes if n["type"] != "Reroute"]
    for i, a in enumerate(boxes):
        ax, ay, aw, ah = a["box"]
        for b in boxes[i + 1:]:
            bx, by, bw, bh = b["box"]
            assert not (ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah), (name, a, b)


def test_image_to_video_runs_from_the_run_button_and_shows_its_video(page, demo_models):
    """The image_to_video template as shipped ("auto": the labelled draft size on this CPU), opened through the
    Templates menu and run with the Run button on the demo models: the prompt finishes, the Save MP4 node shows the
    clip in a <video> element, and its file loads (HTTP 200; the player's own range requests 206) and plays at the
    draft's frame size; no node has grown into another (the sampler's preview stays in its node)."""
    import urllib.request

    from magic141_core.demo.models import DEMO_FILES
    from magic141_core.video.start_image import AUTO

    server = page.url.split("#")[0].split("?")[0].rstrip("/")
    with urllib.request.urlopen(f"{server}/internal/folder_paths", timeout=30) as response:
        folders = json.loads(response.read())
    for role, path in demo_models.items():  # the fixture's server started without models: link the demo files in
        target = Path(folders[DEMO_FILES[role][0]][0]) / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(path, target_is_directory=path.is_dir())
    page.problems.clear()
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.get_by_text(PACK_NAME, exact=True).first.click()
    page.locator("[role=dialog]").get_by_text(TEMPLATE_KEYS["image_to_video"][0], exact=True).first.click()
    page.wait_for_function("() => window.app.graph._nodes.some(n => n.type === 'Magic141SaveMP4')", timeout=30_000)
    page.evaluate("() => window.app.refreshComboInNodes()")  # the loaders' lists now hold the demo files
    size = page.evaluate("() => window.app.graph._nodes.find(n => n.type === 'Magic141ImageToVideo')"
                         ".widgets.find(w => w.name === 'resolution').value")
    assert size == AUTO  # as shipped: auto, the draft on this CPU
    videos = []
    page.on("response", lambda r: videos.append((r.status, r.url)) if "/view?" in r.url and ".mp4" in r.url else None)
    started = time.time()
    page.get_by_role("button", name="Run", exact=True).first.click()
    page.wait_for_selector("video", state="attached", timeout=600_000)
    print(f"image_to_video from the Run button: its video shown after {time.time() - started:.1f} s")
    src = page.locator("video").first.get_attribute("src")
    assert "Magic141" in src and ".mp4" in src, src
    with urllib.request.urlopen(src if src.startswith("http") else server + src, timeout=30) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("video/")
    page.wait_for_function("v => v.readyState >= 1", arg=page.locator("video").first.element_handle(),
                           timeout=30_000)
    assert page.locator("video").first.evaluate("v => [v.videoWidth, v.videoHeight]") == [112, 112]  # 768² draft
    assert videos and all(status in (200, 206) for status, _ in videos), videos  # the player's range requests
    problems = [p for p in page.problems if not _not_ours(p)]
    assert not problems, problems
    # after the run: the sampler's latent preview, the size text and the video sit in the room the template left
    time.sleep(2)
    boxes = page.evaluate("() => window.app.graph._nodes.map(n => [n.type, ...Array.from(n.getBounding())])")
    for i, (a, ax, ay, aw, ah) in enumerate(boxes):
        for b, bx, by, bw, bh in boxes[i + 1:]:
            assert not (ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah), (a, b)
    covered = [n for n in page.evaluate(ON_SCREEN) if n["hidden"]]
    assert not covered, covered
