"""Write example_workflows/*.json (ComfyUI UI format, shown as templates) and web/templates.json (their cards'
one-line descriptions) from compact graph descriptions.

Run after changing a node's inputs:  python scripts/build_workflows.py
The server tests load these files, convert them to API prompts and run them. Layout and `properties.models`:
scripts/workflow_graph.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from magic141_core.demo.models import DEMO_FILES  # noqa: E402
from magic141_core.dit.family import FAMILIES  # noqa: E402
from magic141_core.video.start_image import AUTO  # noqa: E402
from magic141_core.text import NEGATIVE_PROMPT  # noqa: E402
from magic141_core.video.windows import DEFAULT_CONTEXT_FRAMES  # noqa: E402
from scripts.workflow_graph import WIDTH, graph, layout, required_downloads  # noqa: E402

OUT = REPO / "example_workflows"
CARDS = REPO / "web" / "templates.json"  # {title: the card's one-line description}, read by web/templates.js
# Long Video's optional widgets, at their defaults: frames_limit_mb, context_frames, color_anchor, include_start, cfg,
# resume (a sidecar to resume from: none), from_window
LONG_VIDEO_OPTIONS = [2048, DEFAULT_CONTEXT_FRAMES, "start", False, 1.0, "", 0]
# What the Templates browser shows. The shipped frontend (comfyui-frontend-package 1.47, ComfyUI 0.30.0) builds a
# pack's template entry from its file name alone (/api/workflow_templates lists names only; the store sets title =
# name and description = name), so the file name is the title, and web/templates.js writes each card's description
# line from CARDS (Comfy-Org/ComfyUI_frontend#13462; an index.json beside the templates, #9284, is not merged). The
# thumbnail (build_thumbnails.py) shows the same line. key (what tests and docs call a template) -> (title, what it
# does and needs); a template naming DOWNLOADS files gets "Needs downloads (size)" appended. The card shows two lines
# of ~33 characters: a description stays within 64 (tests/test_templates.py).
TEMPLATES = {
    "image_to_video": ("Image to video", "One picture and a prompt become a 4-step clip."),
    "text_to_image_to_video": ("Text to image to video",
                               "An SD1.5 image model paints the first frame; Magic141 moves it."),
    "retrieval_prior_to_video": ("Retrieved image to video",
                                 "CLIP picks the input image nearest the prompt as first frame."),
    "prior_switch_to_video": ("Prior switch to video", "A generated, retrieved or own picture starts the clip."),
    "long_video": ("Long video", "A long shot of chained 4-step windows, a prompt per line."),
    "lora_to_video": ("Image to video with a LoRA", "A LoRA via the native loader; the demo's swaps red and blue."),
    "hunyuan_i2v_long_video": ("HunyuanVideo-I2V long video", "HunyuanVideo-I2V v1 into Long Video."),
    "hunyuan_i2v_v1_to_video": ("HunyuanVideo-I2V v1 to video", "Public HunyuanVideo-I2V v1 (concat)."),
    "hunyuan_i2v_v2_to_video": ("HunyuanVideo-I2V v2 to video", "Public I2V v2 (token replace) model."),
    "skyreels_to_video": ("SkyReels-V1 to video", "The public SkyReels-V1 I2V model."),
    "long_video_storyboard": ("Long video storyboard", "Shots retrieved per [cut] line; seams and drift judged."),
}


def template_path(key: str) -> Path:
    """example_workflows/<title>.json of the template called `key` in TEMPLATES (KeyError for an unknown key)."""
    return OUT / f"{TEMPLATES[key][0]}.json"


DEMO = {role: name for role, (_, name) in DEMO_FILES.items()}
# The public files the templates name, each declared once: name -> (ComfyUI models folder, download URL, bytes).
# A loader whose widget names one carries it in properties.models, so the frontend's missing-models dialog offers
# the download; the card and thumbnail say the total. URLs: Comfy-Org's repackaged HunyuanVideo files (what ComfyUI's
# own HunyuanVideo examples and docs.comfy.org link), and Kijai's SkyReels-V1 file (what ComfyUI users load).
# Bytes: parameter count x bytes per stored weight, computed from the architectures by tests/test_templates.py.
HUNYUAN = "https://huggingface.co/Comfy-Org/HunyuanVideo_repackaged/resolve/main/split_files/"
DOWNLOADS = {
    "hunyuan_video_image_to_video_720p_bf16.safetensors":
        ("diffusion_models", HUNYUAN + "diffusion_models/hunyuan_video_image_to_video_720p_bf16.safetensors", 25.62e9),
    "hunyuan_video_v2_replace_image_to_video_720p_bf16.safetensors":
        ("diffusion_models",
         HUNYUAN + "diffusion_models/hunyuan_video_v2_replace_image_to_video_720p_bf16.safetensors", 25.62e9),
    "skyreels_hunyuan_i2v_bf16.safetensors":
        ("diffusion_models",
         "https://huggingface.co/Kijai/SkyReels-V1-Hunyuan_comfy/resolve/main/skyreels_hunyuan_i2v_bf16.safetensors",
         25.62e9),
    "llava_llama3_fp8_scaled.safetensors":
        ("text_encoders", HUNYUAN + "text_encoders/llava_llama3_fp8_scaled.safetensors", 9.08e9),
    "clip_l.safetensors": ("text_encoders", HUNYUAN + "text_encoders/clip_l.safetensors", 0.247e9),
    "llava_llama3_vision.safetensors":
        ("clip_vision", HUNYUAN + "clip_vision/llava_llama3_vision.safetensors", 0.649e9),
    "hunyuan_video_vae_bf16.safetensors": ("vae", HUNYUAN + "vae/hunyuan_video_vae_bf16.safetensors", 0.493e9),
}
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


def download_size(workflow: dict) -> float:
    """Bytes of every file in the workflow's properties.models."""
    return sum(DOWNLOADS[model["name"]][2] for model in required_downloads(workflow))


def card(key: str, workflow: dict) -> str:
    """The template's one-line description: what it does and needs, and the size of what it needs downloaded."""
    size = download_size(workflow)
    return TEMPLATES[key][1] + (f" Needs downloads ({size / 1e9:.1f} GB)." if size else "")


def template(nodes_by_column: list[list[dict]], note: str) -> dict:
    return graph(layout(nodes_by_column), note, DOWNLOADS)


# Magic141 VAE Decode (tile_size 0: automatic): the core's causal streaming decode on the native VAE's weights. It
# never cuts the clip in time (every convolution continues across chunks), shows progress per chunk and stops
# within seconds on Cancel; native VAE Decode (Tiled) did neither, and split clips longer than its temporal size.
DECODE = [0]


def load_image(node_id: int, height: int = 300, width: int = 320) -> dict:
    return {"id": node_id, "type": "LoadImage", "size": [width, height], "widgets": ["example.png", "image"]}


def video_nodes(first_id: int, image_source, lora: bool = False, width: int = 320) -> dict[str, dict]:
    """Loaders + encode + image-to-video + sampler + decode + save, fed by the prior image `image_source`; with
    `lora`, a native LoraLoaderModelOnly (id first_id + 8, the demo LoRA at 0.8) sits between the model loader and
    the sampler. Returns them by role, for the template to arrange in columns; `width`: of most nodes (the prompt
    boxes and the encoder files get more)."""
    i, wide = first_id, width + 60
    model = (i + 8, 0) if lora else (i + 1, 0)
    nodes = {
        "vae": {"id": i, "type": "VAELoader", "size": [width, 0], "widgets": [DEMO["vae"]]},
        "model": {"id": i + 1, "type": "Magic141ModelLoader", "size": [width, 0],
                  "widgets": [DEMO["dit"], "bf16", False, "off", 0]},
        "encoders": {"id": i + 2, "type": "Magic141EncoderLoader", "size": [wide, 0],
                     "widgets": [DEMO["llava"], DEMO["vision"], DEMO["clip_l"], "auto", "off"]},
        "encode": {"id": i + 3, "type": "Magic141Encode", "size": [wide, 220],
                   "inputs": {"encoders": (i + 2, 0), "image": image_source},
                   "widgets": ["The camera slowly pushes in; leaves sway in a light breeze; soft natural light.",
                               NEGATIVE_PROMPT]},
        "i2v": {"id": i + 4, "type": "Magic141ImageToVideo", "size": [wide, 0],
                "inputs": {"conditioning": (i + 3, 0), "vae": (i, 0), "start_image": image_source},
                "widgets": [AUTO, 960, 544, 81]},  # auto: 540p on a GPU, draft on a CPU
        "sampler": {"id": i + 5, "type": "Magic141Sampler", "size": [width, 0],
                    "inputs": {"model": model, "conditioning": (i + 4, 0), "latent": (i + 4, 1)},
                    "widgets": [4, 5.0, 1.0, 39, "fixed"]},
        "decode": {"id": i + 6, "type": "Magic141VAEDecode", "size": [width, 0],
                   "inputs": {"samples": (i + 5, 0), "vae": (i, 0)}, "widgets": DECODE},
        "save": {"id": i + 7, "type": "Magic141SaveMP4", "size": [width, 320], "inputs": {"images": (i + 6, 0)},
                 "widgets": [24.0, 19, "Magic141/clip"]},
    }
    if lora:
        nodes["lora"] = {"id": i + 8, "type": "LoraLoaderModelOnly", "size": [width, 0],
                         "inputs": {"model": (i + 1, 0)},
                         "widgets": [DEMO["lora"], 0.8]}
    return nodes


def image_to_video() -> dict:
    v = video_nodes(2, (1, 0))
    return template([[load_image(1), v["vae"], v["model"]], [v["encode"], v["i2v"], v["encoders"]],
                     [v["sampler"], v["decode"]], [v["save"]]],
                    "Image to video: Load Image is the prior. Magic141 runs 4 steps at guidance 1.0 (distilled).")


def text_to_image_nodes(prompt: str, width: int = 320) -> dict[str, dict]:
    """Native text to image: checkpoint, prompts, KSampler, VAE Decode (node 6 gives the IMAGE)."""
    return {
        "checkpoint": {"id": 1, "type": "CheckpointLoaderSimple", "size": [width, 0],
                       "widgets": ["sd15_image_model.safetensors"]},
        "positive": {"id": 2, "type": "CLIPTextEncode", "size": [width, 150], "inputs": {"clip": (1, 1)},
                     "widgets": [prompt]},
        "negative": {"id": 3, "type": "CLIPTextEncode", "size": [width, 110], "inputs": {"clip": (1, 1)},
                     "widgets": ["blurry, low quality"]},
        # SD1.5's own scale (16:9), not the video's: the video node fits the prior to its size (540p on a GPU, the
        # draft on a CPU); 960x544 took 60 s per step on a 2-core CPU, 512x288 6 s
        "latent": {"id": 4, "type": "EmptyLatentImage", "size": [width, 0], "widgets": [512, 288, 1]},
        "ksampler": {"id": 5, "type": "KSampler", "size": [width, 0],
                     "inputs": {"model": (1, 0), "positive": (2, 0), "negative": (3, 0), "latent_image": (4, 0)},
                     "widgets": [7, "fixed", 20, 7.0, "euler", "normal", 1.0]},
        "decode": {"id": 6, "type": "VAEDecode", "size": [240, 0], "inputs": {"samples": (5, 0), "vae": (1, 2)}},
    }


def retrieval_node(node_id: int, width: int = 340) -> dict:
    return {"id": node_id, "type": "Magic141RetrievePrior", "size": [width, 0],
            "widgets": [DEMO["retrieval_clip"] + "/", "a quiet harbour at dawn with fishing boats",
                        "input/magic141_priors", 8, 0]}


def reroute(node_id: int, source) -> dict:
    return {"id": node_id, "type": "Reroute", "dx": 245, "size": [75, 26], "inputs": {"": source}}


def text_to_image_to_video() -> dict:
    t = text_to_image_nodes("a lighthouse on a cliff above a stormy sea, golden hour, detailed photograph")
    v = video_nodes(7, (15, 0))
    return template([[t["checkpoint"], t["positive"], t["negative"], t["latent"], v["vae"]],
                     [t["ksampler"], t["decode"], reroute(15, (6, 0)), v["encoders"]],
                     [v["encode"], v["i2v"], v["model"]], [v["sampler"], v["decode"], v["save"]]],
                    "Text to image to video: a native image model makes the prior. To start from your own picture "
                    "instead, connect a Load Image node to the reroute dot (one link).")


def retrieval_prior_to_video() -> dict:
    v = video_nodes(2, (15, 0))
    return template([[retrieval_node(1), reroute(15, (1, 0)), v["vae"], v["model"]],
                     [v["encode"], v["i2v"], v["encoders"]], [v["sampler"], v["decode"]], [v["save"]]],
                    "Retrieval prior: the image in input/magic141_priors nearest the prompt by CLIP starts the video "
                    "(the node shows its choice, score and runner-up). Raise 'pick' to step through the next best "
                    "matches. The demo CLIP matches colours: name one, or a demo prior's theme (harbour, forest, "
                    "city at night).")


def prior_switch_to_video() -> dict:
    width = 280  # five columns in the 1600 px window at >= 70 % zoom
    t = text_to_image_nodes("a quiet harbour at dawn with fishing boats, detailed photograph", width)
    v = video_nodes(7, (18, 0), width=width)
    switch = {"id": 18, "type": "Magic141PriorSwitch", "size": [width, 0],
              "inputs": {"generated": (6, 0), "retrieved": (16, 0), "uploaded": (17, 0)}, "widgets": ["generated"]}
    return template([[t["checkpoint"], t["positive"], t["negative"], t["latent"], load_image(17, 260, width)],
                     [t["ksampler"], t["decode"], switch], [retrieval_node(16, width), v["vae"], v["model"]],
                     [v["encode"], v["i2v"], v["encoders"]], [v["sampler"], v["decode"], v["save"]]],
                    "Three priors, one click: a generated image (native text to image), a retrieved one, or your own. "
                    "Only the chosen branch runs; switching re-runs only the video part.")


def lora_to_video() -> dict:
    v = video_nodes(2, (1, 0), lora=True)
    return template([[load_image(1), v["vae"], v["model"], v["lora"]], [v["encode"], v["i2v"], v["encoders"]],
                     [v["sampler"], v["decode"]], [v["save"]]],
                    "Magic141 + LoRA: the Model Loader's MODEL goes through ComfyUI's native LoRA loader (chain more "
                    "for stacking) into Magic141 Sampler. HunyuanVideo LoRAs in official/ComfyUI or kohya/musubi names "
                    "apply; put yours in models/loras and pick it (the demo's, hand-set, swaps the clip's red and "
                    "blue). Native KSampler takes this MODEL and Image To Video's positive/negative as well.")


def long_video_node(node_id: int, inputs: dict, prompts: str, duration: float, sampling: list, prefix: str,
                    unit: str = "seconds") -> dict:
    return {"id": node_id, "type": "Magic141LongVideo", "size": [420, 880], "inputs": inputs,
            "widgets": [prompts, duration, unit, 81, AUTO, 960, 544, *sampling, True, 0.02, "prior", 24.0, 19,
                        prefix, *LONG_VIDEO_OPTIONS]}


def hunyuan_i2v_long_video() -> dict:
    nodes = [
        [load_image(1),
         {"id": 2, "type": "UNETLoader", "widgets": [HUNYUAN_I2V["dit"], "default"]},
         {"id": 4, "type": "CLIPVisionLoader", "widgets": [HUNYUAN_I2V["vision"]]},
         {"id": 5, "type": "VAELoader", "widgets": [HUNYUAN_I2V["vae"]]}],
        [{"id": 3, "type": "DualCLIPLoader", "size": [360, 0],
          "widgets": [HUNYUAN_I2V["clip_l"], HUNYUAN_I2V["llava"], "hunyuan_video", "default"]},
         {"id": 6, "type": "CLIPVisionEncode", "size": [360, 0], "inputs": {"clip_vision": (4, 0), "image": (1, 0)},
          "widgets": ["none"]},
         {"id": 7, "type": "TextEncodeHunyuanVideo_ImageToVideo", "size": [360, 200],
          "inputs": {"clip": (3, 0), "clip_vision_output": (6, 0)},
          "widgets": ["The camera glides forward along the path; leaves sway in a light breeze.", 4]}],
        [long_video_node(8, {"model": (2, 0), "vae": (5, 0), "prior": (1, 0), "conditioning": (7, 0)},
                         "(the native conditioning is used for every window)", 20.0, [20, 7.0, 1.0, 39, "fixed"],
                         "Magic141/hunyuan_i2v_long")],
    ]
    return template(nodes, "HunyuanVideo-I2V with native loaders and encoders into Magic141 Long Video: public "
                           "HunyuanVideo-I2V v1 (concat, 33-channel) weights chained into a long shot with "
                           "colour-matched windows, each continuing the last 5 frames. The native conditioning serves "
                           "every window. HunyuanVideo-I2V is not distilled: 20 steps at shift 7; v1 has no guidance "
                           "embedder and runs without CFG, guidance 1 (Magic141: 4 steps, shift 5). Add a LoRA loader "
                           "after Load Diffusion Model as usual. The files: see each loader (Load Diffusion Model, "
                           "DualCLIPLoader, Load CLIP Vision, Load VAE); opening the template offers their downloads.")


def family_to_video(key: str) -> dict:
    """One family's public weights through Magic141's nodes: Model Loader (family auto: it shows what it found),
    Encode with the model connected (the family's prompt template), Image To Video, Sampler at the family's
    settings, decode, save; every file in properties.models."""
    family_key, steps, shift, guidance, cfg, text = FAMILY_TEMPLATES[key]
    family = FAMILIES[family_key]
    nodes = [
        [load_image(1), {"id": 2, "type": "VAELoader", "widgets": [HUNYUAN_I2V["vae"]]},
         {"id": 3, "type": "Magic141ModelLoader", "size": [360, 0],
          "widgets": [family.comfy_file, "bf16", False, "off", 0, "auto"]}],
        [{"id": 5, "type": "Magic141Encode", "size": [380, 220],
          "inputs": {"encoders": (4, 0), "image": (1, 0), "model": (3, 0)},
          "widgets": [text, NEGATIVE_PROMPT, "auto", 0]},
         {"id": 6, "type": "Magic141ImageToVideo", "size": [380, 0],
          "inputs": {"conditioning": (5, 0), "vae": (2, 0), "start_image": (1, 0)},
          "widgets": [AUTO, 960, 544, 81]},  # auto: 540p on a GPU, draft on a CPU
         {"id": 4, "type": "Magic141EncoderLoader", "size": [380, 0],
          "widgets": [HUNYUAN_I2V["llava"], HUNYUAN_I2V["vision"], HUNYUAN_I2V["clip_l"], "auto", "off"]}],
        [{"id": 7, "type": "Magic141Sampler", "inputs": {"model": (3, 0), "conditioning": (6, 0), "latent": (6, 1)},
          "widgets": [steps, shift, guidance, 39, "fixed", cfg]},
         {"id": 8, "type": "Magic141VAEDecode", "inputs": {"samples": (7, 0), "vae": (2, 0)}, "widgets": DECODE}],
        [{"id": 9, "type": "Magic141SaveMP4", "size": [WIDTH, 320], "inputs": {"images": (8, 0)},
          "widgets": [24.0, 19, f"Magic141/{family_key}"]}],
    ]
    sampling = f"{steps} steps, shift {shift:g}, guidance {guidance:g}" + (f", CFG {cfg:g}" if cfg != 1 else "")
    return template(nodes, f"{family.describe()}: put {family.comfy_file} in models/diffusion_models (ComfyUI's "
                           f"HunyuanVideo example files for the encoders and VAE; opening the template offers every "
                           f"download). Magic141 Model Loader shows the family it found; Encode follows it (its prompt "
                           f"template). Not step-distilled: {sampling} here (the references use {family.steps}). Long "
                           f"Video takes the same model.")


def long_video() -> dict:
    nodes = [
        [load_image(1), {"id": 2, "type": "VAELoader", "widgets": [DEMO["vae"]]},
         {"id": 3, "type": "Magic141ModelLoader", "widgets": [DEMO["dit"], "bf16", False, "off", 0]}],
        [{"id": 4, "type": "Magic141EncoderLoader", "size": [360, 0],
          "widgets": [DEMO["llava"], DEMO["vision"], DEMO["clip_l"], "auto", "off"]}],
        [long_video_node(5, {"model": (3, 0), "encoders": (4, 0), "vae": (2, 0), "prior": (1, 0)},
                         "The camera glides forward along the path.\nThe camera rises above the trees.\n"
                         "The camera turns towards the sunset.", 60.0, [4, 5.0, 1.0, 39, "fixed"], "Magic141/long")],
    ]
    return template(nodes, "A minute-long shot: 4-step windows chained from the image, one prompt per line directs "
                           "the windows. Each window continues the last 5 frames of the video so far "
                           "(context_frames), so motion keeps its speed across the seams; connect a VIDEO to "
                           "start_video to extend a clip instead. The MP4 grows window by window; a stopped run keeps "
                           "<name>_partial.mp4. On a CPU the draft renders the first 4 windows, 9 frames each, and the "
                           "node says so in seconds; choose resolution custom (or 540p) for the whole minute.")


def long_video_storyboard() -> dict:
    """Retrieve Prior picks the first shot's image and hands its indexed folder to Long Video, whose [cut] lines each
    start a shot from the folder's image nearest the line; the report judges the seams (cuts left out)."""
    nodes = [
        [retrieval_node(1), {"id": 2, "type": "VAELoader", "widgets": [DEMO["vae"]]},
         {"id": 3, "type": "Magic141ModelLoader", "widgets": [DEMO["dit"], "bf16", False, "off", 0]}],
        [{"id": 4, "type": "Magic141EncoderLoader", "size": [360, 0],
          "widgets": [DEMO["llava"], DEMO["vision"], DEMO["clip_l"], "auto", "off"]}],
        [long_video_node(5, {"model": (3, 0), "encoders": (4, 0), "vae": (2, 0), "prior": (1, 0),
                             "shot_priors": (1, 3)},
                         "The boats rock gently in the harbour at dawn.\nThe camera drifts along the pier.\n"
                         "[cut] a lighthouse on a cliff above the sea at dusk\nThe beam sweeps over the water.",
                         4.0, [4, 5.0, 1.0, 39, "fixed"], "Magic141/storyboard", unit="windows")],
        [{"id": 6, "type": "Magic141LongVideoReport", "size": [340, 0], "inputs": {"video": (5, 2), "sidecar": (5, 4)},
          "widgets": [81, DEFAULT_CONTEXT_FRAMES]},
         {"id": 7, "type": "PreviewImage", "size": [340, 260], "inputs": {"images": (6, 1)}}],
    ]
    return template(nodes, "A storyboard: one prompt line per window; a line starting with [cut] starts a new shot "
                           "from the image in input/magic141_priors nearest that line (Retrieve Prior's folder and "
                           "CLIP). Every window is remembered beside the MP4 (the sidecar): to redo window 3, set "
                           "resume to the sidecar and from_window to 3, edit line 3 or the seed, and queue again; the "
                           "windows before it are reused. The report judges each seam (cuts left out) and the colour "
                           "drift per window.")


BUILDERS = {"image_to_video": image_to_video, "text_to_image_to_video": text_to_image_to_video,
            "retrieval_prior_to_video": retrieval_prior_to_video, "prior_switch_to_video": prior_switch_to_video,
            "long_video": long_video, "lora_to_video": lora_to_video, "hunyuan_i2v_long_video": hunyuan_i2v_long_video,
            **{key: lambda key=key: family_to_video(key) for key in FAMILY_TEMPLATES},
            "long_video_storyboard": long_video_storyboard}


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    cards = {}
    for key, build in BUILDERS.items():
        workflow = build()
        template_path(key).write_text(json.dumps(workflow, indent=1) + "\n")
        cards[TEMPLATES[key][0]] = card(key, workflow)
        print(f"wrote {template_path(key).relative_to(REPO)}")
    CARDS.parent.mkdir(exist_ok=True)
    CARDS.write_text(json.dumps(cards, indent=1) + "\n")
    print(f"wrote {CARDS.relative_to(REPO)}")
