"""Write subgraphs/*.json: the pack's subgraph blueprints, reusable nodes made of the pack's nodes.

ComfyUI (0.3.6x and later, app/subgraph_manager.py) lists every `custom_nodes/<pack>/subgraphs/*.json` at
/global_subgraphs; the frontend adds each to the node library and search as a blueprint (title = file name). The
file is a workflow holding one subgraph node, in the layout of ComfyUI's own blueprints/ (inputNode -10, outputNode
-20, the subgraph's inputs and outputs, proxyWidgets for the inner widgets shown on the node).

Run after changing a node's inputs:  python scripts/build_subgraphs.py
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from magic141_core.demo.models import DEMO_FILES  # noqa: E402
from magic141_core.text import NEGATIVE_PROMPT  # noqa: E402
from magic141_core.video.start_image import AUTO  # noqa: E402
from scripts.build_workflows import registry_properties  # noqa: E402

OUT = REPO / "subgraphs"
DEMO = {role: name for role, (_, name) in DEMO_FILES.items()}
INPUT, OUTPUT = -10, -20  # the subgraph's input and output nodes, as the frontend numbers them
IMAGE_TO_VIDEO = "Magic141 image to video"


def uid(name: str) -> str:
    """A fixed UUID per name (the frontend keys subgraphs and their slots by UUID; rebuilding changes nothing)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"magic141/subgraphs/{name}"))


# inner node: id, type, pos, widgets, {input name: (source id, slot) or (INPUT, subgraph input index)},
# widget inputs fed by the subgraph (their name), output types
NODES = [
    (1, "VAELoader", [0, 300], [DEMO["vae"]], {}, [], ["VAE"]),
    (2, "Magic141ModelLoader", [0, 440], [DEMO["dit"], "bf16", False, "off", 0, "auto"], {}, [], ["MODEL"]),
    (3, "Magic141EncoderLoader", [0, 640], [DEMO["llava"], DEMO["vision"], DEMO["clip_l"], "auto", "off"], {}, [],
     ["MAGIC141_ENCODERS"]),
    (4, "Magic141Encode", [400, 0], ["", NEGATIVE_PROMPT, "auto", 0],
     {"encoders": (3, 0), "image": (INPUT, 0), "model": (2, 0), "prompt": (INPUT, 1)}, ["prompt"],
     ["MAGIC141_CONDITIONING", "CONDITIONING", "CONDITIONING"]),
    (5, "Magic141ImageToVideo", [400, 320], [AUTO, 960, 544, 81, "crop"],
     {"conditioning": (4, 0), "vae": (1, 0), "start_image": (INPUT, 0)}, [],
     ["MAGIC141_CONDITIONING", "LATENT", "IMAGE", "CONDITIONING", "CONDITIONING"]),
    (6, "Magic141Sampler", [800, 0], [4, 5.0, 1.0, 39, "randomize", 1.0],
     {"model": (2, 0), "conditioning": (5, 0), "latent": (5, 1)}, [], ["LATENT"]),
    (7, "Magic141VAEDecode", [800, 320], [0], {"samples": (6, 0), "vae": (1, 0)}, [], ["IMAGE"]),
]
INPUTS = [("start_image", "IMAGE", "start image"), ("prompt", "STRING", "prompt")]
OUTPUTS = [("frames", "IMAGE", (7, 0))]
SHOWN = [("-1", "prompt"), ("5", "resolution"), ("5", "length"), ("6", "seed"), ("6", "control_after_generate")]


def image_to_video() -> dict:
    """One start image and a prompt in, the clip's frames out (Save MP4 or native Create Video + Save Video after
    it): Magic141's loaders, Encode, Image To Video, Sampler and VAE Decode inside, as the "Image to video"
    template wires them, the demo models named (pick yours on the node or inside)."""
    links, nodes, sub_inputs = [], [], [[] for _ in INPUTS]
    link_ids = {}
    for node_id, kind, pos, widgets, wired, widget_inputs, outputs in NODES:
        inputs = []
        for name, (source, slot) in wired.items():
            link = {"id": len(links) + 1, "origin_id": source, "origin_slot": slot, "target_id": node_id,
                    "target_slot": len(inputs), "type": INPUTS[slot][1] if source == INPUT
                    else next(n[6] for n in NODES if n[0] == source)[slot]}
            links.append(link)
            link_ids.setdefault((source, slot), []).append(link["id"])
            if source == INPUT:
                sub_inputs[slot].append(link["id"])
            inputs.append({"name": name, "type": link["type"], "link": link["id"]}
                          | ({"widget": {"name": name}} if name in widget_inputs else {}))
        nodes.append({"id": node_id, "type": kind, "pos": pos, "size": [340, 200 if len(widgets) < 5 else 260],
                      "flags": {}, "order": len(nodes), "mode": 0, "inputs": inputs, "outputs": [],
                      "properties": {"Node name for S&R": kind} | registry_properties(kind, widgets),
                      "widgets_values": widgets, "_outputs": outputs})
    for name, kind, (source, slot) in OUTPUTS:
        links.append({"id": len(links) + 1, "origin_id": source, "origin_slot": slot, "target_id": OUTPUT,
                      "target_slot": 0, "type": kind})
        link_ids.setdefault((source, slot), []).append(links[-1]["id"])
    for node in nodes:
        node["outputs"] = [{"name": kind, "type": kind, "links": link_ids.get((node["id"], slot), [])}
                           for slot, kind in enumerate(node.pop("_outputs"))]
    subgraph = {
        "id": uid(IMAGE_TO_VIDEO), "version": 1, "revision": 0, "config": {}, "name": IMAGE_TO_VIDEO,
        "state": {"lastGroupId": 0, "lastNodeId": max(n["id"] for n in nodes), "lastLinkId": len(links),
                  "lastRerouteId": 0},
        "inputNode": {"id": INPUT, "bounding": [-300, 200, 120, 80]},
        "outputNode": {"id": OUTPUT, "bounding": [1250, 200, 120, 60]},
        "inputs": [{"id": uid(f"{IMAGE_TO_VIDEO}/in/{name}"), "name": name, "type": kind, "linkIds": ids,
                    "label": label, "pos": [-200, 220 + 20 * i]}
                   for i, ((name, kind, label), ids) in enumerate(zip(INPUTS, sub_inputs))],
        "outputs": [{"id": uid(f"{IMAGE_TO_VIDEO}/out/{name}"), "name": name, "type": kind,
                     "linkIds": link_ids[source], "pos": [1270, 220]} for name, kind, source in OUTPUTS],
        "widgets": [], "nodes": nodes, "groups": [], "links": links, "extra": {"workflowRendererVersion": "LG"},
        "category": "Magic141",
        "description": "Magic141 image to video: a start image and a prompt become a 4-step video clip (frames).",
    }
    outer = {"id": 100, "type": subgraph["id"], "pos": [0, 0], "size": [360, 260], "flags": {}, "order": 0,
             "mode": 0, "title": IMAGE_TO_VIDEO,
             "inputs": [{"label": label, "name": name, "type": kind, "link": None}
                        | ({"widget": {"name": name}} if kind == "STRING" else {}) for name, kind, label in INPUTS],
             "outputs": [{"name": name, "type": kind, "links": None} for name, kind, _ in OUTPUTS],
             "properties": {"proxyWidgets": [list(p) for p in SHOWN]} | registry_properties("Magic141", []),
             "widgets_values": []}
    return {"revision": 0, "last_node_id": 100, "last_link_id": 0, "nodes": [outer], "links": [], "version": 0.4,
            "definitions": {"subgraphs": [subgraph]}, "extra": {}}


BLUEPRINTS = {IMAGE_TO_VIDEO: image_to_video}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, build in BLUEPRINTS.items():
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
