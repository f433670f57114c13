"""Workflows saved by the release before the V3 node schema (its shipped templates, frozen in
tests/fixtures/workflows_v1/) load and run unchanged on both hosts (ComfyUI 0.30.0 and, marked compat, 0.3.75):
every node type and widget value maps onto the V3 nodes' inputs as the frontend maps it (by position), and the ones
that run on run.sh's demo models write their MP4. The pack's subgraph blueprint is listed by the server too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from comfy_server import ui_to_api
from comfyui_env import PACK_NAME
from run_sh_server import CPU_SIZE, outputs_mp4

SAVED = Path(__file__).parent / "fixtures" / "workflows_v1"
# run on the demo models ./run.sh writes (the others name public HunyuanVideo files; they load, and the same graphs
# from example_workflows run on stand-ins in test_server_native.py); sizes shrunk only
RUNS = {"Image to video", "Text to image to video", "Retrieved image to video", "Prior switch to video", "Long video"}
SHRUNK = {"Magic141ImageToVideo": CPU_SIZE, "EmptyLatentImage": {"width": 64, "height": 48},
          "KSampler": {"steps": 2},
          "Magic141LongVideo": {"resolution": "custom", "width": 64, "height": 48, "window_length": 5,
                                "context_frames": 1, "duration": 2, "unit": "windows"}}

# issue 33 replaced run.sh's untrained demo CLIP (it retrieved at random) by a hand-set one under a new name; a user's
# own files keep their names, so this is the only value a saved workflow's user has to re-pick
RENAMED_DEMO_FILES = {"magic141_DEMO_untrained_clip/": "magic141_DEMO_handset_colour_clip/"}


def saved_prompt(path: Path, object_info: dict) -> tuple[dict, dict]:
    """The saved workflow as the frontend would queue it on this server: every widget value onto the input the
    server now declares at its position; each node given every required input (a value or a link)."""
    ui = json.loads(path.read_text())
    prompt = ui_to_api(ui, object_info)
    for node in prompt.values():  # the one demo file renamed since (what a user re-picks in the combo)
        node["inputs"] = {k: RENAMED_DEMO_FILES.get(v, v) if isinstance(v, str) else v
                          for k, v in node["inputs"].items()}
    for node in prompt.values():
        required = object_info[node["class_type"]]["input"]["required"]
        missing = set(required) - set(node["inputs"])
        assert not missing, f"{path.name}: {node['class_type']} lacks {missing}"
        for name, value in node["inputs"].items():
            spec = required.get(name) or object_info[node["class_type"]]["input"].get("optional", {}).get(name)
            assert spec is not None, f"{path.name}: {node['class_type']} has no input {name}"
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
            choices = kind if isinstance(kind, list) else options.get("options") if kind == "COMBO" else None
            model_file = str(value).endswith((".safetensors", ".png"))  # public weights: not on this server
            if choices is not None and not isinstance(value, list) and not model_file:
                assert value in choices, f"{path.name}: {node['class_type']}.{name} = {value!r} not in {choices}"
    for node in prompt.values():
        node["inputs"].update(SHRUNK.get(node["class_type"], {}))
    return prompt, ui


@pytest.mark.compat
def test_workflows_saved_before_v3_load_and_run_unchanged(server, object_info):
    saved = sorted(SAVED.glob("*.json"))
    assert {p.stem for p in saved} >= RUNS and len(saved) == 10
    for path in saved:
        prompt, ui = saved_prompt(path, object_info)
        if path.stem not in RUNS:
            continue
        history = server.wait(server.queue(prompt, extra_pnginfo={"workflow": ui}))
        assert history["status"]["status_str"] == "success", (path.name, history["status"])
        assert len(outputs_mp4(server, history)) == 1, path.name


@pytest.mark.compat
def test_the_image_to_video_blueprint_is_listed_with_the_pack(server, object_info):
    listed = server.get("/global_subgraphs")
    (entry_id, entry), = [(k, v) for k, v in listed.items() if v["name"] == "Magic141 image to video"]
    assert entry["info"]["node_pack"] == f"custom_nodes.{PACK_NAME}" and entry["source"] == "custom_node"
    blueprint = json.loads(server.get(f"/global_subgraphs/{entry_id}")["data"])
    (subgraph,) = blueprint["definitions"]["subgraphs"]
    assert blueprint["nodes"][0]["type"] == subgraph["id"] and subgraph["name"] == "Magic141 image to video"
    assert {n["type"] for n in subgraph["nodes"]} <= set(object_info)
