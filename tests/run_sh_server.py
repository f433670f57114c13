"""What the tests of the pack on a ./run.sh server share (tests/test_server_templates.py, tests/test_server_cancel.py):
the shipped workflows as API prompts, and the files a run leaves in output/. The server itself is the session fixture
`server` (conftest.py)."""

from __future__ import annotations

import json

from comfy_server import ui_to_api

from magic141_core.demo.models import DEMO_FILES
from scripts.build_workflows import template_path

CPU_SIZE = {"resolution": "custom", "width": 64, "height": 48, "length": 9}  # 9 frames of 64x48
OUR_NODES = {"Magic141ModelLoader", "Magic141EncoderLoader", "Magic141Encode", "Magic141ImageToVideo",
             "Magic141Sampler", "Magic141SaveMP4", "Magic141LongVideo", "Magic141RetrievePrior", "Magic141PriorSwitch",
             "Magic141VAEDecode", "Magic141LongVideoReport"}


def workflow(name: str) -> dict:
    """The example workflow called `name` (a key of build_workflows.TEMPLATES; its file name is its title)."""
    return json.loads(template_path(name).read_text())


def api_prompt(server, object_info, name: str, **overrides) -> tuple[dict, dict]:
    """The example workflow as an API prompt, with `overrides` {class_type: {input: value}} applied."""
    ui = workflow(name)
    prompt = ui_to_api(ui, object_info)
    for node in prompt.values():
        node["inputs"].update(overrides.get(node["class_type"], {}))
    return prompt, ui


def node_id(prompt: dict, class_type: str) -> str:
    return next(k for k, v in prompt.items() if v["class_type"] == class_type)


def outputs_mp4(server, history: dict) -> list:
    files = []
    for out in history["outputs"].values():
        for record in out.get("images", []):
            if record["filename"].endswith(".mp4"):
                files.append(server.base / "output" / record["subfolder"] / record["filename"])
    return files


def mp4s_on_disk(server) -> set:
    return {p.relative_to(server.base) for p in (server.base / "output").rglob("*.mp4")}


def decode_prompt(width: int, height: int, length: int, tile_size: int = 0) -> dict:
    """Native Load VAE (the demo VAE: the full-size HunyuanVideo VAE) + an empty video latent -> Magic141 VAE
    Decode -> native Preview Image."""
    return {"1": {"class_type": "VAELoader", "inputs": {"vae_name": DEMO_FILES["vae"][1]}},
            "2": {"class_type": "EmptyHunyuanLatentVideo",
                  "inputs": {"width": width, "height": height, "length": length, "batch_size": 1}},
            "3": {"class_type": "Magic141VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 0],
                                                                "tile_size": tile_size}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}


def error_of(server, prompt) -> str:
    history = server.wait(server.queue(prompt))
    assert history["status"]["status_str"] == "error"
    (error,) = [m for m in history["status"]["messages"] if m[0] == "execution_error"]
    return error[1]["exception_message"]
