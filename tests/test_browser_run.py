"""A Long Video run in the real browser, on the server exactly as ./run.sh starts it (its flags, so its
Content-Security-Policy): the node previews the finished video in place, a playable MP4 from the server, with no
console error; its duration reads "2" windows, not "2.0"; and the Templates browser opens where the README says.

Why a separate file: tests/test_browser.py's page is a server without models, started without ./run.sh. Under
./run.sh's --disable-api-nodes, ComfyUI sends `Content-Security-Policy: default-src 'self'; ...` with no media-src,
so a <video> may play only same-origin URLs, never blob: URLs. The frontend previews a node's latent previews (blob:
JPEGs) in place of its outputs, and loads them into the node's <video> once the node outputs a video: a node that
sends latent previews and outputs a video never shows that video (the browser refuses the blob: media, and a JPEG is
no video anyway). Magic141 Long Video therefore shows its progress bar without latent previews (nodes/long_video.py).
"""

from __future__ import annotations

import json
import shutil

import pytest
from comfy_server import ComfyServer
from comfyui_env import COMFYUI
from test_browser import open_frontend

from scripts.build_workflows import TEMPLATES, template_path

NODE = "() => window.app.graph._nodes.find(n => n.type === 'Magic141LongVideo')"


@pytest.fixture(scope="module")
def run_sh_page(tmp_path_factory, comfy_base, demo_models):
    base = tmp_path_factory.mktemp("browser_run")
    (base / "models").symlink_to(comfy_base / "models", target_is_directory=True)  # the demo files run.sh writes
    (base / "input").mkdir()
    shutil.copy(COMFYUI / "input" / "example.png", base / "input" / "example.png")
    server = ComfyServer(base, run_sh=True)
    server.post("/api/settings", {"Comfy.TutorialCompleted": True})
    try:
        with open_frontend(server) as page:
            yield page
    finally:
        server.stop()


def console_errors(page) -> list[str]:
    """The page's console errors and uncaught page errors so far (not HTTP statuses)."""
    return [text for kind, text in page.problems if kind != "http"]


def _ours(message: str) -> bool:
    """A console error that is the pack's: anything but the frontend's blocked calls out to the internet."""
    return not ("Content Security Policy" in message and "connect" in message and "blob:" not in message)


def test_long_video_previews_its_video_in_the_node_under_run_sh_csp(run_sh_page):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = run_sh_page
    assert "default-src 'self'" in page.csp and "media-src" not in page.csp  # ./run.sh's flags: no blob: media
    page.evaluate("wf => window.app.loadGraphData(wf)", json.loads(template_path("long_video").read_text()))
    page.wait_for_function(f"() => !!({NODE})()", timeout=30_000)
    page.evaluate(f"""() => {{ const node = ({NODE})();
        const set = (name, value) => {{ node.widgets.find(w => w.name === name).value = value; }};
        set('unit', 'windows'); set('duration', 2); set('window_length', 5); set('context_frames', 1);
        set('resolution', 'custom'); set('width', 64); set('height', 48); }}""")
    shown = page.evaluate(f"() => ({NODE})().widgets.find(w => w.name === 'duration')._displayValue")
    assert shown == "2"  # the number the node draws: whole windows, not "2.0"
    page.problems.clear()
    page.evaluate("() => window.app.queuePrompt(0, 1)")
    page.wait_for_function(f"() => window.app.nodeOutputs[String(({NODE})().id)] !== undefined", timeout=600_000)
    try:
        page.wait_for_function(f"""() => {{ const v = ({NODE})().videoContainer?.querySelector('video');
            return v && v.readyState >= 2; }}""", timeout=30_000)
    except PlaywrightTimeout:
        pytest.fail(f"the node shows no playable video 30 s after its output; console errors: {console_errors(page)}")
    video = page.evaluate(f"""() => {{ const v = ({NODE})().videoContainer.querySelector('video');
        return {{src: v.src, width: v.videoWidth, height: v.videoHeight, duration: v.duration}}; }}""")
    assert "/api/view?" in video["src"] and ".mp4" in video["src"] and "type=output" in video["src"], video
    assert (video["width"], video["height"]) == (64, 48), video
    assert video["duration"] == pytest.approx(9 / 24, abs=0.05), video  # 2 windows of 5 frames share 1: 9 frames
    page.evaluate(f"() => {{ const v = ({NODE})().videoContainer.querySelector('video'); v.muted = true; v.play(); }}")
    page.wait_for_function(f"() => ({NODE})().videoContainer.querySelector('video').currentTime > 0", timeout=10_000)
    problems = [m for m in console_errors(page) if _ours(m)]
    assert not problems, problems


def test_the_templates_browser_opens_where_the_readme_says_with_human_titles(run_sh_page):
    page = run_sh_page
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Templates", exact=True).click()  # README: the sidebar's Templates button
    dialog = page.locator("[role=dialog]")
    dialog.get_by_text("Magic141", exact=True).first.click()
    for title, _ in TEMPLATES.values():
        dialog.get_by_text(title, exact=True).first.wait_for(timeout=30_000)
    page.keyboard.press("Escape")
