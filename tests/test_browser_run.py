"""The templates in the real browser on the server exactly as ./run.sh starts it (its flags, so its
Content-Security-Policy, and its demo models): a Long Video run previews the finished video in place, a playable MP4
from the server, with no console error, its duration reading "2" windows, not "2.0"; the Templates browser opens
where the README says, each card saying what its template does; every demo template opens without an error and the
ones for public weights list exactly their files, each with a Download button; Cancel on Image To Video and Long Video
reads exactly as on a native KSampler; Long Video on this CPU says up front how many seconds it renders and why; and
Retrieve Prior shows the demo prior its prompt names, with its score and the runner-up.

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
import time

import pytest
from comfy_server import ComfyServer
from comfyui_env import COMFYUI
from test_browser import open_frontend

from scripts.build_workflows import BUILDERS, CARDS, TEMPLATES, template_path
from scripts.workflow_graph import required_downloads

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


def open_template(page, key: str) -> None:
    """The template `key` opened through the Templates browser, as a user opens it."""
    nodes = len(json.loads(template_path(key).read_text())["nodes"])
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.locator("[role=dialog]").get_by_text("Magic141", exact=True).first.click()
    page.locator("[role=dialog]").get_by_text(TEMPLATES[key][0], exact=True).first.click()
    page.wait_for_function(f"() => window.app.graph._nodes.length === {nodes}", timeout=30_000)
    time.sleep(2)


def test_cards_say_what_each_template_does_and_every_template_runs_or_offers_its_downloads(run_sh_page):
    """The Templates browser's cards: each one's line is its description (web/templates.js), not its title again.
    Opened on ./run.sh's demo models, every demo template shows no error; each one for public HunyuanVideo-I2V /
    SkyReels-V1 weights shows the frontend's missing-models panel listing exactly the files it declares, each with a
    Download button (the frontend's offer, from the loaders' properties.models)."""
    page = run_sh_page
    cards = json.loads(CARDS.read_text())
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.locator("[role=dialog]").get_by_text("Magic141", exact=True).first.click()
    for title, line in cards.items():
        card = page.locator(f'[data-testid="template-workflow-{title}"] p').first
        card.wait_for(timeout=30_000)
        page.wait_for_function("([e, t]) => e.textContent === t", arg=[card.element_handle(), line], timeout=10_000)
    page.keyboard.press("Escape")
    for key in TEMPLATES:
        title, downloads = TEMPLATES[key][0], [m["name"] for m in required_downloads(BUILDERS[key]())]
        open_template(page, key)
        errors = page.get_by_text("errors found")
        if not downloads:
            assert errors.count() == 0, (title, page.evaluate("() => document.body.innerText")[:2000])
            continue
        page.get_by_text("View details").first.click()
        page.get_by_text("Download all").first.wait_for(timeout=10_000)
        panel = page.get_by_text("Missing Models").first.locator("xpath=ancestor::*[contains(., 'Download all')][1]")
        listed = page.evaluate("""e => Array.from(e.querySelectorAll('*')).filter(x => x.children.length === 0
            && /[.]safetensors$/.test(x.textContent.trim())).map(x => x.textContent.trim())""", panel.element_handle())
        assert sorted(listed) == sorted(downloads), (title, listed)
        buttons = panel.evaluate("e => Array.from(e.querySelectorAll('button')).map(b => b.innerText.trim())")
        assert buttons.count("Download") == len(downloads) and "Download all" in buttons, buttons
        page.get_by_role("button", name="Toggle properties panel").click()  # closed again: it would cover nodes


SHOWN = """() => {
  const toasts = Array.from(document.querySelectorAll('.p-toast-message')).map(e => e.innerText.trim());
  const banners = Array.from(document.querySelectorAll('div, span, p')).filter(e => e.children.length === 0
      && /^([0-9]+ )?jobs? (failed|completed)$/i.test(e.textContent.trim())).map(e => e.textContent.trim());
  return [...toasts, ...banners]; }"""
EVENTS = """() => { window.__magic141 = []; for (const kind of ['progress', 'execution_interrupted', 'execution_error'])
  window.app.api.addEventListener(kind, e => window.__magic141.push([kind, String(e.detail?.node ?? '')])); }"""


def run_and_cancel(page, key: str, node_type: str, ready: str | None = None) -> tuple[list[str], str]:
    """Open template `key`, press Run, wait until its `node_type` node reports progress (or, with `ready`, shows a
    progress text containing it), press Cancel: (what the page shows in the 10 s after, the node's text)."""
    open_template(page, key)
    page.wait_for_function(f"() => ({SHOWN})().length === 0", timeout=30_000)  # the last cancel's toasts are gone
    node = f"window.app.graph._nodes.find(n => n.type === '{node_type}')"
    text = f"(({node}).widgets.find(w => w.type === 'progressText')?.value ?? '')"
    page.evaluate("() => { window.__magic141 = []; }")
    page.get_by_role("button", name="Run", exact=True).first.click()
    if ready is None:
        progressed = f"() => window.__magic141.some(e => e[0] === 'progress' && e[1] === String(({node}).id))"
        page.wait_for_function(progressed, timeout=600_000)
    else:
        page.wait_for_function(f"() => {text}.includes({json.dumps(ready)})", timeout=600_000)
    said = page.evaluate(f"() => {text}")
    page.get_by_role("button", name="Cancel current run").click()
    shown, deadline = [], time.time() + 10
    while time.time() < deadline:
        shown += [t for t in page.evaluate(SHOWN) if t not in shown]
        time.sleep(0.25)
    kinds = [kind for kind, _ in page.evaluate("() => window.__magic141")]
    assert "execution_interrupted" in kinds and "execution_error" not in kinds, (key, kinds)
    return shown, said


def test_cancel_reads_as_a_native_cancel_and_long_video_and_retrieval_say_what_they_do(run_sh_page):
    """Cancel pressed while native KSampler samples (Text to image to video), then while Magic141 Sampler samples
    (Image to video) and while Long Video renders: the page shows exactly the same toast and queue banner for ours as
    for the native node (frontend 1.47 labels every cancelled job "Job failed" in its banner, native ones too), and
    the server reports an interruption, never an error. Long Video, as shipped (60 s, auto = the draft on this CPU),
    says before rendering how many seconds it will render and why; Retrieve Prior says which demo prior it chose for
    the template's harbour prompt, its score and the runner-up."""
    page = run_sh_page
    page.evaluate(EVENTS)
    native, _ = run_and_cancel(page, "text_to_image_to_video", "KSampler")
    assert any("interrupted" in text.lower() for text in native), native
    ours, _ = run_and_cancel(page, "image_to_video", "Magic141Sampler")
    assert ours == native
    long, said = run_and_cancel(page, "long_video", "Magic141LongVideo", ready="fps")
    assert long == native
    # each later window adds 9 - 5 frames (the default motion context: 5 frames)
    assert said == ("Magic141 Long Video: auto on cpu -> draft: 112x112, 4 windows of 9 frames = 21 frames = 0.9 s at "
                    "24 fps (60 s asked = 19 windows of 81 frames; a draft renders at most 4 windows of at most 9 "
                    "frames: for all of it choose resolution 540p, or custom, whose window_length applies)")
    _, chose = run_and_cancel(page, "retrieval_prior_to_video", "Magic141RetrievePrior", ready="chose")
    assert chose.startswith("chose dawn_harbour.png (score 1.00); runner-up: "), chose
