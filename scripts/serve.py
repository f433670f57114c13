"""Start upstream ComfyUI with this pack and the built-in demo models (called by ./run.sh after installing).

Lays out a ComfyUI base folder (default .host/base): custom_nodes/Magic141 -> this repository, the demo models in
models/ (generated on first use, every file the shipped templates name: small real-architecture models, untrained, whose hand-set weights hold the start
image still: an ARCHITECTURE DEMO, not a trained model), a start image and a folder of retrieval candidates in input/. Then starts ComfyUI on 127.0.0.1,
prints the URL and runs until Ctrl-C. `--check` starts it, verifies the pack's nodes and templates, and stops.

Stopping: SIGINT (Ctrl-C, or sent to this process alone by a script) and SIGTERM / SIGHUP (a service manager, a
closed terminal, a test) all stop the ComfyUI this started, within seconds (`stop_server`); if this process is killed
outright, Linux sends ComfyUI SIGTERM (`PR_SET_PDEATHSIG`), so no orphan keeps the port and its memory.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
HOST = Path(os.environ.get("MAGIC141_HOST", REPO / ".host"))
COMFYUI = HOST / "ComfyUI"


def prepare_base(base: Path) -> None:
    from magic141_core.demo.models import write_demo_models
    from magic141_core.demo.retrieval import write_demo_priors

    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / "Magic141"
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    tokenizers = COMFYUI / "comfy" / "text_encoders" / "llama_tokenizer", COMFYUI / "comfy" / "sd1_tokenizer"
    if not (base / "models" / "vae").is_dir():
        print("generating the built-in demo models (first run only, ~1 GB) ...", flush=True)
    write_demo_models(base / "models", *tokenizers, include_image_model=True)  # every file the demo templates name
    if not (base / "input" / "example.png").exists():
        (base / "input").mkdir(parents=True, exist_ok=True)
        shutil.copy(COMFYUI / "input" / "example.png", base / "input" / "example.png")
    write_demo_priors(base / "input" / "magic141_priors")  # the retrieval demo's candidates (demo/retrieval.py)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
START_TIMEOUT_S = 600  # a first start imports a lot; a busy 2-core machine takes minutes
STOP_GRACE_S = 10  # ComfyUI's own Ctrl-C shutdown, before it is terminated (then killed 5 s later)


def free_port(preferred: int) -> int:
    """`preferred` when nothing listens there; else a free port, saying in one line why (and whether a ComfyUI, e.g.
    an earlier ./run.sh still running, answers on the held one)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free (ComfyUI reuses it)
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    try:
        get(f"http://127.0.0.1:{preferred}/system_stats")
        holder = "a ComfyUI already answers there (an earlier ./run.sh still running? stop it, or open that one)"
    except (OSError, ValueError):
        holder = "another program holds it"
    print(f"port {preferred} is in use: {holder}; starting on port {port} instead", flush=True)
    return port


def _stop_on_signal(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _die_with_parent() -> None:
    """In the ComfyUI child, before exec: Linux sends it SIGTERM when this process dies, however it dies."""
    name = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and name:
        ctypes.CDLL(name, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def stop_server(server: subprocess.Popen) -> None:
    """End ComfyUI: its own Ctrl-C shutdown, then SIGTERM, then SIGKILL; returns once it is gone."""
    for signum in STOP_SIGNALS:  # a second Ctrl-C while stopping must not leave ComfyUI behind
        signal.signal(signum, signal.SIG_IGN)
    for send, grace in ((lambda: server.send_signal(signal.SIGINT), STOP_GRACE_S), (server.terminate, 5),
                        (server.kill, None)):
        if server.poll() is not None:
            return
        send()
        try:
            server.wait(grace)
        except subprocess.TimeoutExpired:
            continue


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read() or b"null")


def main() -> int:
    parser = argparse.ArgumentParser(description="Run ComfyUI with the Magic141 pack and its demo models.")
    parser.add_argument("--port", type=int, default=8188, help="preferred port (a free one is used if taken)")
    parser.add_argument("--base", type=Path, default=Path(os.environ.get("MAGIC141_BASE", HOST / "base")),
                        help="ComfyUI base folder (models, input, output, user); default: %(default)s")
    parser.add_argument("--check", action="store_true", help="start, verify the pack's nodes and templates, stop")
    args = parser.parse_args()

    for signum in STOP_SIGNALS:  # SIGTERM / SIGHUP stop it as Ctrl-C does (their default would orphan ComfyUI)
        signal.signal(signum, _stop_on_signal)
    import torch

    prepare_base(args.base)
    port = free_port(args.port)
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
           str(args.base), "--disable-api-nodes", "--preview-method", "auto",
           "--database-url", f"sqlite:///{args.base / 'comfyui.db'}"]
    if not torch.cuda.is_available():
        # PyTorch's fused attention (a tiled flash kernel on CPU) instead of ComfyUI's CPU default, sub-quadratic
        # attention: the same result, ~3x faster per SD1.5 self-attention here (0.21 s vs 0.66 s at 2304 tokens),
        # which the text-to-image templates' 20 image-model steps need to finish their first Run in minutes
        cmd += ["--cpu", "--use-pytorch-cross-attention"]
    env = {**os.environ, "PYTHONPATH": str(HOST / "stubs")}
    server = subprocess.Popen(cmd, cwd=COMFYUI, env=env, preexec_fn=_die_with_parent)
    try:
        deadline = time.time() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                print(f"ComfyUI exited with code {server.returncode}", file=sys.stderr)
                return 1
            try:
                get(url + "/system_stats")
                break
            except OSError:
                if time.time() > deadline:
                    print(f"ComfyUI did not start within {START_TIMEOUT_S} s", file=sys.stderr)
                    return 1
                time.sleep(0.3)
        print(f"\nMagic141 is running: {url}  (templates: the Templates button in the left sidebar, then Magic141; "
              "Ctrl-C stops)", flush=True)
        print("Models: built-in ARCHITECTURE DEMO (untrained; its videos hold the start image still). Put real weights in "
              f"{args.base / 'models'} (see README).", flush=True)
        if args.check:
            nodes = [n for n in get(url + "/object_info") if n.startswith("Magic141")]
            templates = get(url + "/api/workflow_templates").get("Magic141", [])
            print(f"check: {len(nodes)} Magic141 nodes, templates {sorted(templates)}")
            return 0 if nodes and templates else 1
        server.wait()
        return server.returncode
    except KeyboardInterrupt:
        return 0
    finally:
        stop_server(server)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # stopped before ComfyUI was started (e.g. while the demo models were written)
        sys.exit(0)
