"""Run every template once in a real browser and keep what it shows: screenshots for docs/assets/ (the Templates
dialog, each template after its first Run) and each template's thumbnail from its own start image and demo result.

Needs a ComfyUI started by ./run.sh (the demo models and input files it lays out) and Debian's chromium with
Playwright's Python package (scripts/setup_browser.sh):
    ./run.sh --port 8189 &
    .venv/bin/python scripts/build_template_media.py --url http://127.0.0.1:8189
Each template is opened through the Templates browser and queued as the Run button queues it (the frontend's own
graphToPrompt), with one Preview Image more on the prior image, so the thumbnail shows the start image this
template really used; a template that needs downloads is run with the Run button and shows the missing-models
panel. Takes about 15 minutes on a 2-core CPU (the drafts). Exits 1 if a run fails or a node covers another after it.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from PIL import Image

from build_thumbnails import SOURCES, write_thumbnail
from build_workflows import BUILDERS, DOWNLOADS, REPO, TEMPLATES, card
from scripts.workflow_graph import required_downloads  # build_workflows put the repository on sys.path

ASSETS = REPO / "docs" / "assets"
WINDOW = {"width": 1600, "height": 1000}
PRIOR_SINK = "9001"  # the Preview Image added on the prior image (an id no template uses; a switch's sources: 9002-4)
BOXES = ("() => window.app.graph._nodes.filter(n => n.type !== 'Reroute')"
         ".map(n => [n.id, n.type, ...Array.from(n.getBounding())])")
QUEUE = """async (sink) => {
  const prompt = await window.app.graphToPrompt();
  const target = Object.values(prompt.output).find(n => n.class_type === 'Magic141Encode'
      || n.class_type === 'Magic141LongVideo');
  const image = target.inputs.image ?? target.inputs.prior;
  prompt.output[sink] = {class_type: 'PreviewImage', inputs: {images: image}};
  const sw = Object.values(prompt.output).find(n => n.class_type === 'Magic141PriorSwitch');
  ['generated', 'retrieved', 'uploaded'].forEach((source, i) => {  // a prior switch's sources, for its thumbnail
    if (sw?.inputs[source]) prompt.output[String(Number(sink) + 1 + i)] = {class_type: 'PreviewImage',
                                                                          inputs: {images: sw.inputs[source]}}; });
  return (await window.app.api.queuePrompt(0, prompt)).prompt_id;
}"""


def new_page(browser, server: str):
    page = browser.new_context(viewport=WINDOW).new_page()
    page.goto(server)
    page.wait_for_function("() => window.app && window.app.graph", timeout=120_000)
    time.sleep(2)
    return page


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def view(server: str, record: dict) -> bytes:
    return fetch(f"{server}/view?" + urllib.parse.urlencode({k: record[k] for k in ("filename", "subfolder", "type")}))


def open_template(page, title: str) -> None:
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.get_by_text("Magic141", exact=True).first.click()
    page.locator("[role=dialog]").get_by_text(title, exact=True).first.click()
    page.wait_for_function("() => window.app.graph._nodes.length > 0", timeout=30_000)
    time.sleep(3)
    close_panel(page)


def close_panel(page) -> None:
    """The properties panel (opened by the missing-models details, remembered by the frontend) covers nodes."""
    if page.get_by_text("Workflow Overview").count():
        page.get_by_role("button", name="Toggle properties panel").click()
        time.sleep(1)


def overlaps(boxes) -> list:
    return [(a[:2], b[:2]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a[2] < b[2] + b[4] and b[2] < a[2] + a[4] and a[3] < b[3] + b[5] and b[3] < a[3] + a[5]]


def result_frames(server: str, history: dict, key: str) -> list[Image.Image]:
    from magic141_core.video.mp4 import read_mp4

    (record,) = [r for out in history["outputs"].values() for r in out.get("images", [])
                 if r["filename"].endswith(".mp4")]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        path.write_bytes(view(server, record))
        frames, _ = read_mp4(path)
    picks = [0, len(frames) // 2, len(frames) - 1] if key.startswith("long_video") else [len(frames) - 1]
    return [Image.fromarray(frames[i]) for i in picks]


def keep(media: Path | None, key: str, start: Image.Image, results: list[Image.Image], sources=()) -> None:
    """Save what a thumbnail is made of (`build_thumbnails.py --media DIR` remakes the thumbnails from it)."""
    if media is not None:
        media.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate([start, *results]):
            image.convert("RGB").save(media / f"{key}.{i}.png")
        for label, image in sources:
            image.convert("RGB").save(media / f"{key}.{label}.png")


def run_template(page, server: str, key: str, media: Path | None = None) -> bool:
    title, workflow = TEMPLATES[key][0], json.loads(json.dumps(BUILDERS[key]()))
    open_template(page, title)
    downloads = [(m["name"], DOWNLOADS[m["name"]][2]) for m in required_downloads(workflow)]
    start = Image.open(io.BytesIO(fetch(f"{server}/view?filename=example.png&type=input")))
    if downloads:  # the Run button: the frontend refuses and lists the missing files with their downloads
        page.get_by_role("button", name="Run", exact=True).first.click()
        time.sleep(2)
        page.get_by_text("View details").first.click()
        time.sleep(2)
        page.screenshot(path=ASSETS / f"template_{key}.jpg", quality=85)
        close_panel(page)
        keep(media, key, start, [])
        write_thumbnail(key, card(key, workflow), start, [], downloads)
        return True
    began = time.time()
    prompt_id = page.evaluate(QUEUE, PRIOR_SINK)
    while not (history := json.loads(fetch(f"{server}/history/{prompt_id}"))):
        time.sleep(1)
    time.sleep(3)  # the page draws the outputs
    history = history[prompt_id]
    page.screenshot(path=ASSETS / f"template_{key}.jpg", quality=85)
    status = history["status"]["status_str"]
    print(f"{key}: {status} in {time.time() - began:.0f} s")
    if status != "success":
        print(json.dumps(history["status"])[:2000], file=sys.stderr)
        return False
    covered = overlaps(page.evaluate(BOXES))
    if covered:
        print(f"{key}: after its run these nodes overlap: {covered}", file=sys.stderr)
    prior = history["outputs"][PRIOR_SINK]["images"][0]
    start, results = Image.open(io.BytesIO(view(server, prior))), result_frames(server, history, key)
    sinks = {label: str(int(PRIOR_SINK) + 1 + i) for i, label in enumerate(SOURCES)}
    sources = [(label, Image.open(io.BytesIO(view(server, history["outputs"][sink]["images"][0]))))
               for label, sink in sinks.items() if sink in history["outputs"]]
    keep(media, key, start, results, sources)
    write_thumbnail(key, card(key, workflow), start, results, sources=sources)
    return not covered


def main() -> int:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="a ComfyUI started by ./run.sh, e.g. http://127.0.0.1:8189")
    parser.add_argument("--only", nargs="*", default=list(TEMPLATES),
                        help="template keys (default: all; none: only the Templates dialog's screenshot)")
    parser.add_argument("--media", type=Path, help="also keep each template's start image and results here")
    args = parser.parse_args()
    server = args.url.rstrip("/")
    ok = True
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = new_page(browser, server)
        for key in args.only:
            ok &= run_template(page, server, key, args.media)
        page = new_page(browser, server)  # a fresh page: the new thumbnails, not the cached ones
        page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        page.get_by_text("Magic141", exact=True).first.click()
        time.sleep(3)  # the thumbnails load
        page.screenshot(path=ASSETS / "templates_dialog.jpg", quality=85)
        browser.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
