"""UI-format workflows (what ComfyUI saves and shows as templates) from compact node lists, laid out in columns.

Used by build_workflows.py. A node is {id, type, widgets, inputs: {name: (source id, slot)}, size?, models?}; a
template is a list of columns, each a list of nodes stacked top to bottom. `graph` sizes every node to what the
frontend draws (plus the room a run adds: a sampler's preview, a node's progress text), stacks the columns, and
writes links, outputs and each loader's `properties.models` (name, URL, folder: the frontend's missing-models dialog
offers those downloads, as for ComfyUI's own templates).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# node type -> output (name, type) list, in slot order
OUTPUTS = {
    "LoadImage": [("IMAGE", "IMAGE"), ("MASK", "MASK")],
    "VAELoader": [("VAE", "VAE")],
    "VAEDecodeTiled": [("IMAGE", "IMAGE")],
    "Magic141VAEDecode": [("IMAGE", "IMAGE")],
    "CheckpointLoaderSimple": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
    "CLIPTextEncode": [("CONDITIONING", "CONDITIONING")],
    "EmptyLatentImage": [("LATENT", "LATENT")],
    "KSampler": [("LATENT", "LATENT")],
    "VAEDecode": [("IMAGE", "IMAGE")],
    "Magic141ModelLoader": [("MODEL", "MODEL")],
    "Magic141EncoderLoader": [("MAGIC141_ENCODERS", "MAGIC141_ENCODERS")],
    "Magic141Encode": [("conditioning", "MAGIC141_CONDITIONING"), ("positive", "CONDITIONING"),
                       ("negative", "CONDITIONING")],
    "Magic141ImageToVideo": [("conditioning", "MAGIC141_CONDITIONING"), ("latent", "LATENT"),
                             ("start_image", "IMAGE"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
    "LoraLoaderModelOnly": [("MODEL", "MODEL")],
    "UNETLoader": [("MODEL", "MODEL")],
    "DualCLIPLoader": [("CLIP", "CLIP")],
    "CLIPVisionLoader": [("CLIP_VISION", "CLIP_VISION")],
    "CLIPVisionEncode": [("CLIP_VISION_OUTPUT", "CLIP_VISION_OUTPUT")],
    "TextEncodeHunyuanVideo_ImageToVideo": [("CONDITIONING", "CONDITIONING")],
    "Magic141Sampler": [("LATENT", "LATENT")],
    "Magic141SaveMP4": [("IMAGE", "IMAGE"), ("VIDEO", "VIDEO")],
    "Magic141RetrievePrior": [("IMAGE", "IMAGE"), ("filename", "STRING"), ("score", "FLOAT"),
                              ("prior_folder", "MAGIC141_PRIOR_FOLDER")],
    "Magic141LongVideoReport": [("report", "STRING"), ("worst_seam", "IMAGE")],
    "PreviewImage": [],
    "Magic141PriorSwitch": [("IMAGE", "IMAGE")],
    "Magic141LongVideo": [("last_window", "IMAGE"), ("filename", "STRING"), ("video", "VIDEO"), ("frames", "IMAGE"),
                          ("sidecar", "STRING")],
    "Reroute": [("", "IMAGE")],  # the frontend's pass-through dot: one link to re-wire to swap the prior
}

# What a run adds below a node's widgets, so it never grows into the node under it (measured in Chromium with
# frontend 1.47, 1600x1000: a sampler's latent preview grew Magic141 Sampler by 220 px; the text a node shows after
# a run (Image To Video's size, Long Video's length, Retrieve Prior's choice, Encode's prompt template, Model
# Loader's family), by 42-50 whatever its length). Added on top of a node's given or smallest size.
ROOM_AFTER_RUN = {"Magic141Sampler": 240, "KSampler": 240, "Magic141ImageToVideo": 60, "Magic141LongVideo": 60,
                  "Magic141RetrievePrior": 60, "Magic141Encode": 60, "Magic141ModelLoader": 60,
                  "Magic141LongVideoReport": 260}  # its verdict and the worst seam's strip: grew it by ~246
TITLE, GAP, WIDTH = 30, 20, 320  # LiteGraph draws a node's title bar above `pos`; space between nodes; default width


def min_size(node: dict) -> list[int]:
    """The smallest size the frontend draws the node at (it grows a node to this when opened, so a smaller stored
    size would make neighbours overlap): a row per slot (inputs beside outputs), a row per widget, a multiline text
    box per prompt."""
    rows = max(len(node.get("inputs", {})), len(OUTPUTS[node["type"]]))
    if node["type"] == "Reroute":
        return [75, 26]
    return [200, 22 * rows + 26 * len(node.get("widgets", [])) + 16]


def layout(columns: list[list[dict]], x0: int = 0, y0: int = 60) -> list[dict]:
    """Stack each column's nodes top to bottom (title bars and GAP between them), columns left to right, each as
    wide as its widest node; a node's `pos` may be given as a dx offset within its column ({"dx": 40}). Returns
    the nodes, every one with its `pos` and `size` set."""
    nodes, x = [], x0
    for column in columns:
        y, width = y0, 0
        for node in column:
            w, h = [max(a, b) for a, b in zip(node.get("size", [WIDTH, 0]), min_size(node))]  # >= 200 wide
            node["size"] = [w, h + ROOM_AFTER_RUN.get(node["type"], 0)]
            node["pos"] = [x + node.pop("dx", 0), y]
            y += node["size"][1] + GAP + TITLE
            width = max(width, node["size"][0] + node["pos"][0] - x)
            nodes.append(node)
        x += width + GAP
    check_no_overlap(nodes)
    return nodes


def box(node: dict) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) the frontend draws the node in, title bar included."""
    x, y = node["pos"]
    return x, y - TITLE, x + node["size"][0], y + node["size"][1]


def check_no_overlap(nodes: list[dict]) -> None:
    """Raise when two nodes (title bars included) overlap or touch (a bug in a template's columns)."""
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = box(a), box(b)
            if ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1:
                raise AssertionError(f"nodes {a['id']} ({a['type']}) and {b['id']} ({b['type']}) overlap")


def registry_properties(node_type: str) -> dict:
    """A node's `cnr_id` and `ver`, as ComfyUI's own templates carry them: the Comfy Registry id and version of the
    pack that provides the node (this pack's name and version from pyproject.toml, or comfy-core at the oldest
    ComfyUI the pack supports)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    if node_type.startswith("Magic141"):
        return {"cnr_id": project["project"]["name"], "ver": project["project"]["version"]}
    return {"cnr_id": "comfy-core", "ver": project["tool"]["comfy"]["requires-comfyui"].lstrip(">=")}


def graph(nodes: list[dict], note: str, downloads: dict) -> dict:
    """nodes (laid out) -> a UI-format workflow. A widget value naming a file of `downloads` ({name: (folder, url,
    bytes)}) puts that file in the node's `properties.models`, the way ComfyUI's own templates carry them."""
    links, out_links = [], {}
    ui_nodes = []
    for order, node in enumerate(nodes):
        inputs = []
        for name, (source, slot) in node.get("inputs", {}).items():
            link_id = len(links) + 1
            kind = OUTPUTS[next(n["type"] for n in nodes if n["id"] == source)][slot][1]
            kind = "*" if node["type"] == "Reroute" else kind
            links.append([link_id, source, slot, node["id"], len(inputs), kind])
            out_links.setdefault((source, slot), []).append(link_id)
            inputs.append({"name": name, "type": kind, "link": link_id})
        properties = ({"showOutputText": False, "horizontal": False} if node["type"] == "Reroute"
                      else {"Node name for S&R": node["type"]} | registry_properties(node["type"]))
        models = [{"name": value, "url": downloads[value][1], "directory": downloads[value][0]}
                  for value in node.get("widgets", []) if isinstance(value, str) and value in downloads]
        if models:
            properties["models"] = models
        ui_nodes.append({"id": node["id"], "type": node["type"], "pos": node["pos"], "size": node["size"],
                         "flags": {}, "order": order, "mode": 0, "inputs": inputs, "properties": properties,
                         "widgets_values": node.get("widgets", []), "_outputs": OUTPUTS[node["type"]]})
    for node in ui_nodes:
        node["outputs"] = [{"name": name, "type": kind, "links": out_links.get((node["id"], slot), []),
                            "slot_index": slot} for slot, (name, kind) in enumerate(node.pop("_outputs"))]
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": [], "config": {}, "extra": {"magic141_note": note}, "version": 0.4}


def required_downloads(workflow: dict) -> list[dict]:
    """Every file a workflow's nodes list in `properties.models` (each once, in node order)."""
    seen = {}
    for node in workflow["nodes"]:
        for model in node.get("properties", {}).get("models", []):
            seen.setdefault(model["name"], model)
    return list(seen.values())
