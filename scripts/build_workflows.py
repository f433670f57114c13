"""Write example_workflows/*.json (ComfyUI UI format, shown as templates) from compact graph descriptions.

Run after changing a node's inputs:  python scripts/build_workflows.py
The server tests load these files, convert them to API prompts and run them.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from magic141_core.demo.models import DEMO_FILES  # noqa: E402
from magic141_core.dit.family import FAMILIES  # noqa: E402
from magic141_core.video.start_image import AUTO  # noqa: E402
from magic141_core.text import NEGATIVE_PROMPT  # noqa: E402
from magic141_core.video.windows import DEFAULT_CONTEXT_FRAMES  # noqa: E402

OUT = REPO / "example_workflows"
# Long Video's optional widgets, at their defaults: frames_limit_mb, context_frames, color_anchor, include_start
LONG_VIDEO_OPTIONS = [2048, DEFAULT_CONTEXT_FRAMES, "start", False, 1.0]  # limit MB, context, anchor, include, cfg
# What the Templates browser shows. The shipped frontend (comfyui-frontend-package 1.47, ComfyUI 0.30.0) builds a
# pack's template entry from its file name alone (/api/workflow_templates lists names only; the store sets title =
# name and description = name, with - and _ shown as spaces), so the file name is the title, and the card repeats it
# as its description. The one-line description is drawn on the template's thumbnail (build_thumbnails.py), the only
# other thing the card shows. key (what tests and docs call a template) -> (file name = title, what it makes)
TEMPLATES = {
    "image_to_video": ("Image to video", "one picture and a prompt become a 4-step video clip"),
    "text_to_image_to_video": ("Text to image to video", "an image model paints the first frame, Magic141 moves it"),
    "retrieval_prior_to_video": ("Retrieved image to video", "the folder picture nearest the prompt starts the clip"),
    "prior_switch_to_video": ("Prior switch to video", "a generated, retrieved or your own picture starts the clip"),
    "long_video": ("Long video", "a minute-long shot: 4-step windows chained, a prompt per line"),
    "lora_to_video": ("Image to video with a LoRA", "image to video with your HunyuanVideo LoRA on the model"),
    "hunyuan_i2v_long_video": ("HunyuanVideo-I2V long video", "HunyuanVideo-I2V weights, native nodes, a long shot"),
    "hunyuan_i2v_v1_to_video": ("HunyuanVideo-I2V v1 to video", "the public 33-channel HunyuanVideo-I2V weights"),
    "hunyuan_i2v_v2_to_video": ("HunyuanVideo-I2V v2 to video", "the public 16-channel HunyuanVideo-I2V (replace) weights"),
    "skyreels_to_video": ("SkyReels-V1 to video", "the public SkyReels-V1 Hunyuan I2V weights"),
    "long_video_storyboard": ("Long video storyboard", "shots retrieved for each [cut] line, seams and drift judged"),
}


def template_path(key: str) -> Path:
    """example_workflows/<title>.json of the template called `key` in TEMPLATES (KeyError for an unknown key)."""
    return OUT / f"{TEMPLATES[key][0]}.json"
DEMO = {role: name for role, (_, name) in DEMO_FILES.items()}
LORA_FILE = "hunyuan_video_lora.safetensors"  # any HunyuanVideo LoRA in models/loras (none ships with the demo)
# the files HunyuanVideo-I2V workflows use (Comfy-Org's repackaged release); not shipped, pick yours in the nodes
HUNYUAN_I2V = {"dit": "hunyuan_video_image_to_video_720p_bf16.safetensors", "clip_l": "clip_l.safetensors",
               "llava": "llava_llama3_fp8_scaled.safetensors", "vision": "llava_llama3_vision.safetensors",
               "vae": "hunyuan_video_vae_bf16.safetensors"}
# One template per image-to-video family: the file ComfyUI's own HunyuanVideo examples name (dit.family), and what
# it samples with. None is step-distilled: 20 steps (the references use 30-50) at shift 7 (ComfyUI's HunyuanVideo
# default); v1 has no guidance embedder and runs without CFG (diffusers' 33ch example), v2 embeds guidance 6
# (diffusers' example), SkyReels-V1 embeds 1 and runs CFG 6 with the negative prompt (its inference code).
FAMILY_TEMPLATES = {  # key -> (family key, steps, shift, guidance, cfg, prompt)
    "hunyuan_i2v_v1_to_video": ("hunyuan_i2v_v1", 20, 7.0, 1.0, 1.0, "The camera slowly pushes in; leaves sway."),
    "hunyuan_i2v_v2_to_video": ("hunyuan_i2v_v2", 20, 7.0, 6.0, 1.0, "The camera slowly pushes in; leaves sway."),
    "skyreels_to_video": ("skyreels_v1", 20, 7.0, 1.0, 6.0, "FPS-24, the camera slowly pushes in; leaves sway."),
}

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
INPUT_TYPES = {"image": "IMAGE", "vae": "VAE", "model": "MODEL", "clip": "CLIP", "positive": "CONDITIONING",
               "negative": "CONDITIONING", "latent_image": "LATENT", "samples": "LATENT", "images": "IMAGE",
               "encoders": "MAGIC141_ENCODERS", "conditioning": "MAGIC141_CONDITIONING", "start_image": "IMAGE",
               "latent": "LATENT", "generated": "IMAGE", "retrieved": "IMAGE", "uploaded": "IMAGE",
               "shot_priors": "MAGIC141_PRIOR_FOLDER", "video": "VIDEO", "sidecar": "STRING"}

# Magic141 VAE Decode (tile_size 0: automatic): the core's causal streaming decode on the native VAE's weights. It
# never cuts the clip in time (every convolution continues across chunks), shows progress per chunk and stops
# within seconds on Cancel; native VAE Decode (Tiled) did neither, and split clips longer than its temporal size.
DECODE = [0]


TITLE, GAP = 30, 20  # LiteGraph draws a node's title bar above `pos`; space kept between nodes


def min_size(node: dict) -> list[int]:
    """The smallest size the frontend can draw the node at: a row per slot (inputs beside outputs), a row per widget
    (it grows a node to this when opened, so a smaller stored size would make neighbours overlap)."""
    rows = max(len(node.get("inputs", {})), len(OUTPUTS[node["type"]]))
    return [320 if node["type"] != "Reroute" else 75, 22 * rows + 26 * len(node.get("widgets", [])) + 16]


def place(nodes: list[dict]) -> None:
    """Grow every node to its minimum size, then push nodes down (in the given y order) until no two overlap,
    title bars included. Raises if a layout still overlaps (a bug in this file)."""
    for node in nodes:
        node["size"] = [max(a, b) for a, b in zip(node.get("size", [320, 140]), min_size(node))]

    def box(n):
        return n["pos"][0], n["pos"][1] - TITLE, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1]

    def overlap(a, b):
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = box(a), box(b)
        return ax0 < bx1 + GAP and bx0 < ax1 + GAP and ay0 < by1 + GAP and by0 < ay1 + GAP

    placed = []
    for node in sorted(nodes, key=lambda n: (n["pos"][1], n["pos"][0])):
        node["pos"] = list(node["pos"])
        while (hit := next((p for p in placed if overlap(node, p)), None)) is not None:
            node["pos"][1] = hit["pos"][1] + hit["size"][1] + GAP + TITLE
        placed.append(node)
    assert not any(overlap(a, b) for i, a in enumerate(nodes) for b in nodes[i + 1:])


def registry_properties(node_type: str, widgets: list) -> dict:
    """A node's `properties` as ComfyUI's own templates carry them: `cnr_id` and `ver` (the Comfy Registry id and
    version of the pack that provides the node: this pack's name and version from pyproject.toml, or comfy-core at
    the oldest ComfyUI the pack supports) and, on a loader, `models`: each file its widgets name that pyproject's
    [tool.comfy] Models lists, with its download URL and folder, so the frontend offers the missing ones."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    comfy = project["tool"]["comfy"]
    ours = node_type.startswith("Magic141")
    properties = {"cnr_id": project["project"]["name"] if ours else "comfy-core",
                  "ver": project["project"]["version"] if ours else comfy["requires-comfyui"].lstrip(">=")}
    files = {Path(m["location"]).name: m for m in comfy["Models"]}
    models = [{"name": name, "url": files[name]["model_url"], "directory": Path(files[name]["location"]).parent.name}
              for name in widgets if isinstance(name, str) and name in files]
    return properties | ({"models": models} if models else {})


def graph(nodes: list[dict], note: str) -> dict:
    """nodes: {id, type, pos, widgets, inputs: {name: (source id, slot)}} -> a UI-format workflow."""
    place(nodes)
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
                      else {"Node name for S&R": node["type"]} | registry_properties(node["type"],
                                                                                      node.get("widgets", [])))
        ui_nodes.append({"id": node["id"], "type": node["type"], "pos": node["pos"], "size": node.get("size", [320, 140]),
                         "flags": {}, "order": order, "mode": 0, "inputs": inputs, "properties": properties,
                         "widgets_values": node.get("widgets", []), "_outputs": OUTPUTS[node["type"]]})
    for node in ui_nodes:
        node["outputs"] = [{"name": name, "type": kind, "links": out_links.get((node["id"], slot), []),
                            "slot_index": slot} for slot, (name, kind) in enumerate(node.pop("_outputs"))]
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": [], "config": {}, "extra": {"magic141_note": note}, "version": 0.4}


def video_tail(first_id: int, image_source, x: int, lora: bool = False) -> list[dict]:
    """Loaders + encode + image-to-video + sampler + decode + save, fed by the prior image `image_source`; with
    `lora`, a native LoraLoaderModelOnly (id first_id + 8) sits between the model loader and the sampler."""
    i = first_id
    model = (i + 8, 0) if lora else (i + 1, 0)
    lora_node = [{"id": i + 8, "type": "LoraLoaderModelOnly", "pos": [x + 400, 560], "size": [340, 110],
                  "inputs": {"model": (i + 1, 0)}, "widgets": [LORA_FILE, 0.8]}] if lora else []
    return lora_node + [
        {"id": i, "type": "VAELoader", "pos": [x, 520], "widgets": [DEMO["vae"]]},
        {"id": i + 1, "type": "Magic141ModelLoader", "pos": [x, 660], "widgets": [DEMO["dit"], "bf16", False, "off", 0]},
        {"id": i + 2, "type": "Magic141EncoderLoader", "pos": [x, 800], "size": [360, 160],
         "widgets": [DEMO["llava"], DEMO["vision"], DEMO["clip_l"], "auto", "off"]},
        {"id": i + 3, "type": "Magic141Encode", "pos": [x + 400, 60], "size": [400, 220],
         "inputs": {"encoders": (i + 2, 0), "image": image_source},
         "widgets": ["The camera slowly pushes in; leaves sway in a light breeze; soft natural light.",
                     NEGATIVE_PROMPT]},
        {"id": i + 4, "type": "Magic141ImageToVideo", "pos": [x + 400, 320], "size": [340, 200],
         "inputs": {"conditioning": (i + 3, 0), "vae": (i, 0), "start_image": image_source},
         "widgets": [AUTO, 960, 544, 81]},  # auto: 540p on a GPU, draft on a CPU
        {"id": i + 5, "type": "Magic141Sampler", "pos": [x + 820, 60], "size": [320, 200],
         "inputs": {"model": model, "conditioning": (i + 4, 0), "latent": (i + 4, 1)},
         "widgets": [4, 5.0, 1.0, 39, "fixed"]},
        {"id": i + 6, "type": "Magic141VAEDecode", "pos": [x + 820, 300], "size": [320, 150],
         "inputs": {"samples": (i + 5, 0), "vae": (i, 0)}, "widgets": DECODE},
        {"id": i + 7, "type": "Magic141SaveMP4", "pos": [x + 1180, 60], "size": [400, 420],
         "inputs": {"images": (i + 6, 0)}, "widgets": [24.0, 19, "Magic141/clip"]},
    ]


def image_to_video() -> dict:
    nodes = [{"id": 1, "type": "LoadImage", "pos": [40, 60], "size": [320, 420], "widgets": ["example.png", "image"]}]
    return graph(nodes + video_tail(2, (1, 0), 40),
                 "Image to video: Load Image is the prior. Magic141 runs 4 steps at guidance 1.0 (distilled).")


def text_to_image_branch(prompt: str) -> list[dict]:
    """Native text to image: checkpoint, prompts, KSampler, VAE Decode (node 6 gives the IMAGE)."""
    return [
        {"id": 1, "type": "CheckpointLoaderSimple", "pos": [-820, 60], "widgets": ["sd15_image_model.safetensors"]},
        {"id": 2, "type": "CLIPTextEncode", "pos": [-460, 60], "size": [380, 160], "inputs": {"clip": (1, 1)},
         "widgets": [prompt]},
        {"id": 3, "type": "CLIPTextEncode", "pos": [-460, 260], "size": [380, 120], "inputs": {"clip": (1, 1)},
         "widgets": ["blurry, low quality"]},
        # SD1.5's own scale (16:9), not the video's: the video node fits the prior to its size (540p on a GPU, the
        # draft on a CPU); 960x544 took 60 s per step on a 2-core CPU, 512x288 6 s
        {"id": 4, "type": "EmptyLatentImage", "pos": [-460, 420], "widgets": [512, 288, 1]},
        {"id": 5, "type": "KSampler", "pos": [-40, 60], "size": [320, 260],
         "inputs": {"model": (1, 0), "positive": (2, 0), "negative": (3, 0), "latent_image": (4, 0)},
         "widgets": [7, "fixed", 20, 7.0, "euler", "normal", 1.0]},
        {"id": 6, "type": "VAEDecode", "pos": [-40, 360], "inputs": {"samples": (5, 0), "vae": (1, 2)}},
    ]


def retrieval_node(node_id: int, pos: list[int]) -> dict:
    return {"id": node_id, "type": "Magic141RetrievePrior", "pos": pos, "size": [340, 260],
            "widgets": [DEMO["retrieval_clip"] + "/", "a quiet harbour at dawn with fishing boats",
                        "input/magic141_priors", 8, 0]}


def text_to_image_to_video() -> dict:
    nodes = text_to_image_branch("a lighthouse on a cliff above a stormy sea, golden hour, detailed photograph")
    nodes.append({"id": 15, "type": "Reroute", "pos": [300, 380], "size": [75, 26], "inputs": {"": (6, 0)}})
    return graph(nodes + video_tail(7, (15, 0), 360),
                 "Text to image to video: a native image model makes the prior. To start from your own picture "
                 "instead, connect a Load Image node to the reroute dot (one link).")


def retrieval_prior_to_video() -> dict:
    nodes = [retrieval_node(1, [40, 60]),
             {"id": 15, "type": "Reroute", "pos": [300, 380], "size": [75, 26], "inputs": {"": (1, 0)}}]
    return graph(nodes + video_tail(2, (15, 0), 40),
                 "Retrieval prior: the image in input/magic141_priors nearest the prompt by CLIP starts the video. "
                 "Raise 'pick' to step through the next best matches.")


def prior_switch_to_video() -> dict:
    nodes = text_to_image_branch("a quiet harbour at dawn with fishing boats, detailed photograph") + [
        retrieval_node(16, [-460, 600]),
        {"id": 17, "type": "LoadImage", "pos": [-40, 600], "size": [320, 380], "widgets": ["example.png", "image"]},
        {"id": 18, "type": "Magic141PriorSwitch", "pos": [300, 380], "size": [260, 120],
         "inputs": {"generated": (6, 0), "retrieved": (16, 0), "uploaded": (17, 0)}, "widgets": ["generated"]},
    ]
    return graph(nodes + video_tail(7, (18, 0), 600),
                 "Three priors, one click: a generated image (native text to image), a retrieved one, or your own. "
                 "Only the chosen branch runs; switching re-runs only the video part.")


def lora_to_video() -> dict:
    nodes = [{"id": 1, "type": "LoadImage", "pos": [40, 60], "size": [320, 420], "widgets": ["example.png", "image"]}]
    return graph(nodes + video_tail(2, (1, 0), 40, lora=True),
                 "Magic141 + LoRA: the Model Loader's MODEL goes through ComfyUI's native LoRA loader (chain more for "
                 "stacking) into Magic141 Sampler. HunyuanVideo LoRAs in official/ComfyUI or kohya/musubi names apply; "
                 "put yours in models/loras and pick it. Native KSampler takes this MODEL and Image To Video's "
                 "positive/negative as well.")


def hunyuan_i2v_long_video() -> dict:
    nodes = [
        {"id": 1, "type": "LoadImage", "pos": [40, 60], "size": [320, 420], "widgets": ["example.png", "image"]},
        {"id": 2, "type": "UNETLoader", "pos": [40, 520], "size": [360, 90],
         "widgets": [HUNYUAN_I2V["dit"], "default"]},
        {"id": 3, "type": "DualCLIPLoader", "pos": [40, 650], "size": [360, 130],
         "widgets": [HUNYUAN_I2V["clip_l"], HUNYUAN_I2V["llava"], "hunyuan_video", "default"]},
        {"id": 4, "type": "CLIPVisionLoader", "pos": [40, 820], "size": [360, 60], "widgets": [HUNYUAN_I2V["vision"]]},
        {"id": 5, "type": "VAELoader", "pos": [40, 920], "widgets": [HUNYUAN_I2V["vae"]]},
        {"id": 6, "type": "CLIPVisionEncode", "pos": [440, 520], "size": [300, 80],
         "inputs": {"clip_vision": (4, 0), "image": (1, 0)}, "widgets": ["none"]},
        {"id": 7, "type": "TextEncodeHunyuanVideo_ImageToVideo", "pos": [440, 640], "size": [400, 200],
         "inputs": {"clip": (3, 0), "clip_vision_output": (6, 0)},
         "widgets": ["The camera glides forward along the path; leaves sway in a light breeze.", 4]},
        {"id": 8, "type": "Magic141LongVideo", "pos": [880, 60], "size": [420, 760],
         "inputs": {"model": (2, 0), "vae": (5, 0), "prior": (1, 0), "conditioning": (7, 0)},
         "widgets": ["(the native conditioning is used for every window)", 20.0, "seconds", 81, AUTO, 960, 544,
                     20, 7.0, 1.0, 39, "fixed", True, 0.02, "prior", 24.0, 19, "Magic141/hunyuan_i2v_long",
                     *LONG_VIDEO_OPTIONS]},
    ]
    return graph(nodes, "HunyuanVideo-I2V with native loaders and encoders into Magic141 Long Video: public "
                        "HunyuanVideo-I2V v1 (concat, 33-channel) weights chained into a long shot with colour-matched "
                        "windows, each continuing the last 5 frames. The native conditioning serves every window. "
                        "HunyuanVideo-I2V is not distilled: 20 steps at shift 7; v1 has no guidance embedder and runs without CFG, guidance 1 (Magic141: 4 "
                        "steps, shift 5). Add a LoRA loader after Load Diffusion Model as usual.")


def family_to_video(key: str) -> dict:
    """One family's public weights through Magic141's nodes: Model Loader (family auto: it shows what it found),
    Encode with the model connected (the family's prompt template), Image To Video, Sampler at the family's
    settings, decode, save."""
    family_key, steps, shift, guidance, cfg, text = FAMILY_TEMPLATES[key]
    family = FAMILIES[family_key]
    nodes = [
        {"id": 1, "type": "LoadImage", "pos": [40, 60], "size": [320, 420], "widgets": ["example.png", "image"]},
        {"id": 2, "type": "VAELoader", "pos": [40, 520], "widgets": [HUNYUAN_I2V["vae"]]},
        {"id": 3, "type": "Magic141ModelLoader", "pos": [40, 660], "size": [360, 200],
         "widgets": [family.comfy_file, "bf16", False, "off", 0, "auto"]},
        {"id": 4, "type": "Magic141EncoderLoader", "pos": [40, 900], "size": [360, 160],
         "widgets": [HUNYUAN_I2V["llava"], HUNYUAN_I2V["vision"], HUNYUAN_I2V["clip_l"], "auto", "off"]},
        {"id": 5, "type": "Magic141Encode", "pos": [440, 60], "size": [400, 260],
         "inputs": {"encoders": (4, 0), "image": (1, 0), "model": (3, 0)},
         "widgets": [text, NEGATIVE_PROMPT, "auto", 0]},
        {"id": 6, "type": "Magic141ImageToVideo", "pos": [440, 360], "size": [340, 200],
         "inputs": {"conditioning": (5, 0), "vae": (2, 0), "start_image": (1, 0)},
         "widgets": [AUTO, 960, 544, 81]},  # auto: 540p on a GPU, draft on a CPU
        {"id": 7, "type": "Magic141Sampler", "pos": [880, 60], "size": [320, 230],
         "inputs": {"model": (3, 0), "conditioning": (6, 0), "latent": (6, 1)},
         "widgets": [steps, shift, guidance, 39, "fixed", cfg]},
        {"id": 8, "type": "Magic141VAEDecode", "pos": [880, 340], "size": [320, 150],
         "inputs": {"samples": (7, 0), "vae": (2, 0)}, "widgets": DECODE},
        {"id": 9, "type": "Magic141SaveMP4", "pos": [1240, 60], "size": [400, 420],
         "inputs": {"images": (8, 0)}, "widgets": [24.0, 19, f"Magic141/{family_key}"]},
    ]
    sampling = f"{steps} steps, shift {shift:g}, guidance {guidance:g}" + (f", CFG {cfg:g}" if cfg != 1 else "")
    return graph(nodes, f"{family.describe()}: put {family.comfy_file} in models/diffusion_models (ComfyUI's "
                        f"HunyuanVideo example files for the encoders and VAE). Magic141 Model Loader shows the family it "
                        f"found; Encode follows it (its prompt template). Not step-distilled: {sampling} here (the "
                        f"references use {family.steps}). Long Video takes the same model.")


def long_video() -> dict:
    nodes = [
        {"id": 1, "type": "LoadImage", "pos": [40, 60], "size": [320, 420], "widgets": ["example.png", "image"]},
        {"id": 2, "type": "VAELoader", "pos": [40, 520], "widgets": [DEMO["vae"]]},
        {"id": 3, "type": "Magic141ModelLoader", "pos": [40, 660], "widgets": [DEMO["dit"], "bf16", False, "off", 0]},
        {"id": 4, "type": "Magic141EncoderLoader", "pos": [40, 800], "size": [360, 160],
         "widgets": [DEMO["llava"], DEMO["vision"], DEMO["clip_l"], "auto", "off"]},
        {"id": 5, "type": "Magic141LongVideo", "pos": [440, 60], "size": [420, 760],
         "inputs": {"model": (3, 0), "encoders": (4, 0), "vae": (2, 0), "prior": (1, 0)},
         "widgets": ["The camera glides forward along the path.\nThe camera rises above the trees.\n"
                     "The camera turns towards the sunset.", 60.0, "seconds", 81, AUTO, 960, 544,
                     4, 5.0, 1.0, 39, "fixed", True, 0.02, "prior", 24.0, 19, "Magic141/long", *LONG_VIDEO_OPTIONS]},
    ]
    return graph(nodes, "A minute-long shot: 4-step windows chained from the image, one prompt per line directs "
                        "the windows. Each window continues the last 5 frames of the video so far (context_frames), so "
                        "motion keeps its speed across the seams; connect a VIDEO to start_video to extend a clip "
                        "instead. The MP4 grows window by window; a stopped run keeps <name>_partial.mp4.")


def long_video_storyboard() -> dict:
    """Retrieve Prior picks the first shot's image and hands its indexed folder to Long Video, whose [cut] lines each
    start a shot from the folder's image nearest the line; the report judges the seams (cuts left out)."""
    nodes = [
        {**retrieval_node(1, [40, 60]), "widgets": [DEMO["retrieval_clip"] + "/", "a quiet harbour at dawn with "
                                                    "fishing boats", "input/magic141_priors", 8, 0]},
        {"id": 2, "type": "VAELoader", "pos": [40, 520], "widgets": [DEMO["vae"]]},
        {"id": 3, "type": "Magic141ModelLoader", "pos": [40, 660], "widgets": [DEMO["dit"], "bf16", False, "off", 0]},
        {"id": 4, "type": "Magic141EncoderLoader", "pos": [40, 800], "size": [360, 160],
         "widgets": [DEMO["llava"], DEMO["vision"], DEMO["clip_l"], "auto", "off"]},
        {"id": 5, "type": "Magic141LongVideo", "pos": [440, 60], "size": [420, 800],
         "inputs": {"model": (3, 0), "encoders": (4, 0), "vae": (2, 0), "prior": (1, 0), "shot_priors": (1, 3)},
         "widgets": ["The boats rock gently in the harbour at dawn.\nThe camera drifts along the pier.\n"
                     "[cut] a lighthouse on a cliff above the sea at dusk\nThe beam sweeps over the water.", 4.0,
                     "windows", 81, AUTO, 960, 544, 4, 5.0, 1.0, 39, "fixed", True, 0.02, "prior", 24.0, 19,
                     "Magic141/storyboard", *LONG_VIDEO_OPTIONS, "", 0]},
        {"id": 6, "type": "Magic141LongVideoReport", "pos": [900, 60], "size": [340, 140],
         "inputs": {"video": (5, 2), "sidecar": (5, 4)}, "widgets": [81, DEFAULT_CONTEXT_FRAMES]},
        {"id": 7, "type": "PreviewImage", "pos": [900, 260], "size": [400, 260], "inputs": {"images": (6, 1)}},
    ]
    return graph(nodes, "A storyboard: one prompt line per window; a line starting with [cut] starts a new shot from "
                        "the image in input/magic141_priors nearest that line (Retrieve Prior's folder and CLIP). "
                        "Every window is remembered beside the MP4 (the sidecar): to redo window 3, set resume to the "
                        "sidecar and from_window to 3, edit line 3 or the seed, and queue again; the windows before it "
                        "are reused. The report judges each seam (cuts left out) and the colour drift per window.")


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for key, build in {"image_to_video": image_to_video, "text_to_image_to_video": text_to_image_to_video,
                       "retrieval_prior_to_video": retrieval_prior_to_video,
                       "prior_switch_to_video": prior_switch_to_video, "long_video": long_video,
                       "lora_to_video": lora_to_video, "hunyuan_i2v_long_video": hunyuan_i2v_long_video,
                       **{key: lambda key=key: family_to_video(key) for key in FAMILY_TEMPLATES},
                       "long_video_storyboard": long_video_storyboard}.items():
        template_path(key).write_text(json.dumps(build(), indent=1) + "\n")
        print(f"wrote {template_path(key).relative_to(REPO)}")
