"""A real upstream ComfyUI server for tests: started on 127.0.0.1 with this pack in custom_nodes/, driven over
HTTP and its websocket, and stopped at the end. Also converts UI-format workflows to API prompts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import aiohttp
import processes
from comfyui_env import COMFYUI, PACK_NAME, REPO, STUBS, require_host


class ComfyServer:
    """`run_sh=True` starts it exactly as a user does, `./run.sh --port P` (scripts/serve.py, its flags and the
    demo files it lays out in `base`), with this interpreter's venv; otherwise ComfyUI's main.py directly."""

    def __init__(self, base: Path, extra_args=(), run_sh: bool = False):
        require_host()
        self.base = base
        (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
        link = base / "custom_nodes" / PACK_NAME
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        self.run_sh = run_sh
        if run_sh:
            env = {**os.environ, "MAGIC141_VENV": sys.prefix, "MAGIC141_BASE": str(base)}
            cmd, cwd = ["bash", str(REPO / "run.sh"), "--port", str(self.port), *extra_args], REPO
        else:
            env = {**os.environ, "PYTHONPATH": str(STUBS)}
            cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                   "--base-directory", str(base), "--disable-api-nodes", "--database-url", "sqlite:///:memory:",
                   "--preview-method", "latent2rgb", *extra_args]
            cwd = COMFYUI
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.client_id = uuid.uuid4().hex
        self.messages: list[dict] = []
        try:
            self._wait_ready(600)
        except BaseException:  # a server that never became ready must not outlive the failed fixture
            processes.kill(processes.descendants(self.process.pid) + [self.process.pid])
            self._log.close()
            raise
        self._ws_thread = threading.Thread(target=self._listen, daemon=True)
        self._ws_thread.start()
        time.sleep(0.3)

    # ---- life cycle -------------------------------------------------------------------------------------------
    def _wait_ready(self, timeout: float):  # 0.30.0 imports far more at start-up; a loaded 2-core box takes minutes
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited during start-up:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.25)
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s:\n{self.log()[-4000:]}")

    def stop(self):
        """Stop the server; for run.sh, SIGINT to its process alone (as a script does; serve.py then stops ComfyUI).
        Raises if a process the server started outlives it by 30 s (the orphans issue 32 found)."""
        started = processes.descendants(self.process.pid)  # run.sh: serve.py's ComfyUI
        if self.run_sh:
            self.process.send_signal(signal.SIGINT)
        else:
            self.process.terminate()
        try:
            self.process.wait(60)  # serve.py gives ComfyUI 10 s, then SIGTERM, then SIGKILL 5 s later
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        left = processes.wait_gone(started, 30)
        processes.kill(left)
        self._log.close()
        assert not left, f"still running after ComfyServer.stop(): {[processes.command_line(p) for p in left]}"

    def cpu_seconds(self) -> float:
        """CPU time the server (run.sh: serve.py and its ComfyUI) used so far: work done, whatever the load."""
        return processes.cpu_seconds([self.process.pid, *processes.descendants(self.process.pid)])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # ---- HTTP -----------------------------------------------------------------------------------------------
    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            body = r.read()
            return json.loads(body) if body else None

    def post(self, path: str, payload) -> tuple[int, dict | None]:
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                body = r.read()
                return r.status, (json.loads(body) if body else None)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def queue(self, prompt: dict, extra_pnginfo: dict | None = None) -> str:
        payload = {"prompt": prompt, "client_id": self.client_id}
        if extra_pnginfo is not None:
            payload["extra_data"] = {"extra_pnginfo": extra_pnginfo}
        status, body = self.post("/prompt", payload)
        if status != 200:
            raise AssertionError(f"prompt rejected ({status}): {json.dumps(body)[:3000]}")
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        """Block until the prompt finished (executing with node None); return its history entry."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(m["type"] == "executing" and m["data"].get("node") is None
                   and m["data"].get("prompt_id") == prompt_id for m in list(self.messages)):
                return self.get(f"/history/{prompt_id}")[prompt_id]
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died:\n{self.log()[-4000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.log()[-3000:]}")

    def messages_for(self, prompt_id: str, kind: str | None = None) -> list[dict]:
        return [m for m in list(self.messages) if m["data"].get("prompt_id") == prompt_id
                and (kind is None or m["type"] == kind)]

    # ---- websocket ----------------------------------------------------------------------------------------------
    def _listen(self):
        async def run():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"ws://127.0.0.1:{self.port}/ws?clientId={self.client_id}") as ws:
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            self.messages.append(json.loads(msg.data))

        try:
            asyncio.run(run())
        except Exception:  # the server stopped
            pass


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow (what ComfyUI saves and shows as a template) into an API prompt, the way the
    frontend's graphToPrompt does: links become [node_id, slot]; widget values map onto the widget inputs in
    declaration order, skipping the extra values the frontend stores (seed control, image upload)."""
    links = {link[0]: link for link in workflow["links"]}
    by_id = {node["id"]: node for node in workflow["nodes"]}

    def source(link):  # follow frontend-only Reroute dots back to the real output
        while by_id[link[1]]["type"] == "Reroute":
            link = links[by_id[link[1]]["inputs"][0]["link"]]
        return link

    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) != 0 or node["type"] == "Reroute":
            continue
        info = object_info.get(node["type"])
        if info is None:
            raise KeyError(f"workflow uses node type {node['type']!r}, which the server does not have")
        linked = {i["name"]: source(links[i["link"]]) for i in node.get("inputs", []) if i.get("link") is not None}
        values = list(node.get("widgets_values", []))
        inputs = {}
        for group in ("required", "optional"):
            for name, spec in info["input"].get(group, {}).items():
                kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
                is_widget = isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
                if is_widget and values:
                    inputs[name] = values.pop(0)
                    if options.get("control_after_generate") or (kind == "INT" and name in ("seed", "noise_seed")):
                        values.pop(0)
                    if options.get("image_upload"):
                        values.pop(0)
                if name in linked:
                    link = linked[name]
                    inputs[name] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
