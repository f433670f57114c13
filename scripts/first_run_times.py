"""Time the first Run of every demo template AS SHIPPED, each on a freshly started server, as a user meets it:
`./run.sh` starts ComfyUI (the demo models already generated), the template is opened and Run is pressed once.

For each template in example_workflows/ that the demo models can run (not those naming public HunyuanVideo files
for download), this starts `./run.sh --port P` on a base folder laid out by run.sh's own `serve.prepare_base`, queues
the template exactly as shipped (converted to an API prompt as the frontend does), waits for it, and prints the
seconds from Run to done, the size each video node chose (its log line) and whether it succeeded. The target
(issue 19): every first Run under 120 s on a 2-core CPU.

    MAGIC141_VENV=... MAGIC141_HOST=... python scripts/first_run_times.py [--base DIR] [--json times.json] [NAME ...]

It uses the test helpers (tests/comfy_server.py), so run it with the test environment's Python. The base folder
defaults to a new one under /tmp; pass --base to reuse one whose demo models are already written (~1 GB).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "scripts"), str(REPO)]
TARGET_S = 120.0


def demo_templates() -> list[str]:
    """The templates that name no download (the others need public files ./run.sh cannot ship)."""
    from scripts.build_workflows import BUILDERS
    from scripts.workflow_graph import required_downloads

    return sorted(key for key, build in BUILDERS.items() if not required_downloads(build()))


def node_times(server, prompt_id: str, types: dict, since: float, timeout: float = 1800) -> dict:
    """Seconds each node ran ({"<id> <type>": s}, from the websocket's "executing" messages), until the prompt ends."""
    seen, current, times = 0, None, {}
    deadline = since + timeout
    while time.time() < deadline:
        messages = server.messages_for(prompt_id, "executing")
        for message in messages[seen:]:
            now, node = time.time(), message["data"].get("node")
            if current is not None:
                times[current] = round(times.get(current, 0) + now - since, 1)
            current, since = (f"{node} {types.get(node, '?')}" if node is not None else None), now
            if node is None:
                return times
        seen = len(messages)
        if server.messages_for(prompt_id, "execution_error"):
            return times
        time.sleep(0.05)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")


def first_run(base: Path, name: str) -> dict:
    """Start ./run.sh on `base`, run template `name` once as shipped, stop the server; the measurements."""
    from comfy_server import ComfyServer, ui_to_api

    started = time.time()
    server = ComfyServer(base, run_sh=True)
    try:
        start_s = time.time() - started
        from scripts.build_workflows import template_path

        ui = json.loads(template_path(name).read_text())
        prompt = ui_to_api(ui, server.get("/object_info"))
        queued = time.time()
        prompt_id = server.queue(prompt, extra_pnginfo={"workflow": ui})
        nodes = node_times(server, prompt_id, {k: v["class_type"] for k, v in prompt.items()}, queued)
        history = server.wait(prompt_id, timeout=60)
        run_s = time.time() - queued
        log = server.log()
    finally:
        server.stop()
    sizes = re.findall(r"Magic141 (?:Image To Video|Long Video): .*", log)
    return {"template": name, "status": history["status"]["status_str"], "first_run_s": round(run_s, 1),
            "server_start_s": round(start_s, 1), "size": sizes[-1] if sizes else None, "nodes_s": nodes,
            "under_target": history["status"]["status_str"] == "success" and run_s < TARGET_S}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="templates to time (default: every demo template)")
    parser.add_argument("--base", type=Path, help="ComfyUI base folder (default: a new one under /tmp)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    from serve import prepare_base

    base = args.base or Path(tempfile.mkdtemp(prefix="magic141_first_run_"))
    print(f"base {base}: laying out the demo models as ./run.sh does (minutes the first time) ...", flush=True)
    prepare_base(base)  # untimed: the demo models exist before the first Run, as after any ./run.sh
    results = []
    for name in args.names or demo_templates():
        result = first_run(base, name)
        results.append(result)
        print(f"{name:28s} {result['status']:8s} first Run {result['first_run_s']:7.1f} s  (server start "
              f"{result['server_start_s']:.1f} s)  {result['size'] or ''}", flush=True)
        print("    " + ", ".join(f"{node}: {s} s" for node, s in result["nodes_s"].items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    slow = [r["template"] for r in results if not r["under_target"]]
    print(f"all {len(results)} under {TARGET_S:.0f} s" if not slow else f"NOT under {TARGET_S:.0f} s: {slow}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
