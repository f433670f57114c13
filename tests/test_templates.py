"""The templates as the Templates browser shows them: a real thumbnail beside each (served where the frontend asks
for it, each unlike the others), a one-line card description, nodes that do not overlap once the frontend grows
them to fit their slots and widgets, a layout the frontend opens at >= 70 % zoom, and every public file a template
names declared with its folder, download URL and size (which follows from the model's architecture)."""

from __future__ import annotations

import itertools
import json
import urllib.request
from urllib.parse import quote

import numpy as np
import pytest
import torch
from comfy_server import ComfyServer
from comfyui_env import PACK_NAME, REPO
from PIL import Image

from magic141_core.demo.models import DEMO_FILES
from scripts.build_workflows import BUILDERS, CARDS, DOWNLOADS, TEMPLATES, card, template_path
from scripts.workflow_graph import required_downloads

TEMPLATE_FILES = sorted((REPO / "example_workflows").glob("*.json"))
TITLE = 30  # LiteGraph's title bar, drawn above a node's pos
MODEL_FOLDERS = {"diffusion_models", "text_encoders", "clip_vision", "vae", "loras", "checkpoints"}


def _boxes(path):
    nodes = json.loads(path.read_text())["nodes"]
    return [(n["id"], n["pos"][0], n["pos"][1] - TITLE, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
            for n in nodes], nodes


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda p: p.stem)
def test_nodes_do_not_overlap_fit_their_widgets_and_open_at_70_percent(path):
    boxes, nodes = _boxes(path)
    for node in nodes:  # at least a 20 px row per slot (inputs beside outputs) and a 20 px row per widget
        rows = max(len(node["inputs"]), len(node["outputs"]))
        assert node["size"][1] >= 20 * rows + 20 * len(node["widgets_values"]), (path.name, node["type"])
    for i, (a, ax0, ay0, ax1, ay1) in enumerate(boxes):
        for b, bx0, by0, bx1, by1 in boxes[i + 1:]:
            assert not (ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1), (path.name, a, b)
    # the frontend (1.47) opens a template with fitToBounds: 0.75 x the window / the graph's bounds (+ 10 px a side);
    # the browser test measures the real scale, this keeps a margin for what it adds (a node grown to its widgets)
    width = max(b[3] for b in boxes) - min(b[1] for b in boxes) + 20
    height = max(b[4] for b in boxes) - min(b[2] for b in boxes) + 20
    assert 0.75 * min(1600 / width, 1000 / height) >= 0.73, (path.name, width, height)


def test_the_files_are_the_built_templates_and_their_cards():
    """example_workflows/ and web/templates.json are what scripts/build_workflows.py writes now."""
    assert {p.name for p in TEMPLATE_FILES} == {template_path(key).name for key in TEMPLATES}
    cards = json.loads(CARDS.read_text())
    for key, build in BUILDERS.items():
        built = json.loads(json.dumps(build()))  # tuples as JSON lists, as written
        assert json.loads(template_path(key).read_text()) == built, f"run scripts/build_workflows.py ({key})"
        assert cards[TEMPLATES[key][0]] == card(key, built)
    lines = list(cards.values())
    assert len(set(lines)) == len(lines) and all(len(line) <= 64 for line in lines)  # the card's 2 lines, all unlike
    assert not set(lines) & set(cards)  # none repeats a title


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda p: p.stem)
def test_every_file_a_template_names_is_a_demo_file_or_a_declared_download(path):
    """Each loader's file is either one ./run.sh generates, or one the template declares in that node's
    properties.models with its folder and download URL (ComfyUI's own templates' format: the frontend offers the
    download); a template needing downloads says their total size on its card."""
    demo = {name.rstrip("/") for _, name in DEMO_FILES.values()} | {"example.png"}
    workflow = json.loads(path.read_text())
    for node in workflow["nodes"]:
        declared = {m["name"]: m for m in node["properties"].get("models", [])}
        for value in node["widgets_values"]:
            if isinstance(value, str) and value.endswith((".safetensors", ".png", "/")):
                assert value.rstrip("/") in demo or value in declared, (path.name, node["type"], value)
        for name, model in declared.items():
            folder, url, _ = DOWNLOADS[name]
            assert model == {"name": name, "url": url, "directory": folder} and folder in MODEL_FOLDERS
            assert url.startswith("https://huggingface.co/") and url.endswith("/" + name)  # the frontend's rule
    key = next(k for k in TEMPLATES if template_path(k) == path)
    size = sum(DOWNLOADS[m["name"]][2] for m in required_downloads(workflow))
    assert (f"Needs downloads ({size / 1e9:.1f} GB)." in card(key, workflow)) == bool(size)


def test_download_sizes_follow_the_architectures():
    """Each declared size = the architecture's parameter count x the bytes of the stored dtype (built on the meta
    device): the 13B DiT in bf16; LLaVA-Llama-3-8B fp8-scaled (linears 1 byte, embeddings and lm_head bf16); CLIP-L's
    text model and projection in fp16; the LLaVA vision tower (CLIP ViT-L/14-336) + projector in fp16; the
    HunyuanVideo VAE in bf16."""
    from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig, CLIPVisionModel,
                              LlamaConfig, LlamaForCausalLM)

    from magic141_core.dit import Magic141DiT
    from magic141_core.dit.config import full_13b
    from magic141_core.vae import hunyuan_video_vae
    from magic141_core.vae.model import HunyuanVideoVAE

    def count(model, where=lambda name, p: True):
        return sum(p.numel() for name, p in model.named_parameters() if where(name, p))

    with torch.device("meta"):
        llama = LlamaForCausalLM(LlamaConfig(vocab_size=128320, hidden_size=4096, intermediate_size=14336,
                                             num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8))
        linears = count(llama, lambda name, p: ".layers." in name and p.ndim == 2)
        vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                  num_attention_heads=16, image_size=336, patch_size=14))
        clip_l = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=768, intermediate_size=3072,
                                                            num_hidden_layers=12, num_attention_heads=12))
        expected = {
            "hunyuan_video_image_to_video_720p_bf16.safetensors": 2 * count(Magic141DiT(full_13b())),
            "llava_llama3_fp8_scaled.safetensors": linears + 2 * (count(llama) - linears),
            "llava_llama3_vision.safetensors": 2 * (count(vision) + 1024 * 4096 + 4096 * 4096 + 2 * 4096),
            "clip_l.safetensors": 2 * count(clip_l),
            "hunyuan_video_vae_bf16.safetensors": 2 * count(HunyuanVideoVAE(hunyuan_video_vae())),
        }
    for name, size in expected.items():
        assert DOWNLOADS[name][2] == pytest.approx(size, rel=0.01), name
    for other in ("hunyuan_video_v2_replace_image_to_video_720p_bf16.safetensors",
                  "skyreels_hunyuan_i2v_bf16.safetensors"):  # 16 / 32 input channels instead of 33: the same 13B
        assert DOWNLOADS[other][2] == pytest.approx(expected["hunyuan_video_image_to_video_720p_bf16.safetensors"],
                                                    rel=0.001)


def test_the_registrys_model_list_holds_every_file_a_template_downloads():
    """pyproject.toml's [tool.comfy] Models (what the registry lists) and the templates' declarations agree."""
    import tomllib

    models = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]["Models"]
    listed = {entry["location"]: entry["model_url"] for entry in models}
    for build in BUILDERS.values():
        for model in required_downloads(build()):
            assert listed.get(f"/models/{model['directory']}/{model['name']}") == model["url"], model


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda p: p.stem)
def test_every_template_has_a_real_thumbnail(path):
    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), f"run scripts/build_thumbnails.py: {thumb.name} is missing"
    with Image.open(thumb) as image:
        assert image.format == "JPEG" and image.size == (512, 288)
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 20 and pixels[62:].reshape(-1, 3).std(0).min() > 10  # a picture, not a blank card


def test_no_two_thumbnails_look_alike():
    """Each thumbnail shows its own template's start image and demo result: below the caption, any two differ on
    average by more than 4 % of the range (the same picture twice: 0; the closest pairs, image to video and its LoRA
    variant, which recolours the same clip, and the two text-to-image ones, told apart by the prior switch's three
    source insets, measured 0.054-0.056; every other pair above 0.2)."""
    pictures = {p.stem: np.asarray(Image.open(p.with_suffix(".jpg")).convert("RGB"), dtype=np.float32)[62:] / 255
                for p in TEMPLATE_FILES}
    for (a, pa), (b, pb) in itertools.combinations(pictures.items(), 2):
        assert np.abs(pa - pb).mean() > 0.04, (a, b, np.abs(pa - pb).mean())


def test_the_server_lists_templates_and_serves_their_thumbnails_and_cards(tmp_path):
    server = ComfyServer(tmp_path / "base")
    try:
        assert set(server.get("/api/workflow_templates")[PACK_NAME]) == {p.stem for p in TEMPLATE_FILES}
        for path in TEMPLATE_FILES:  # the frontend's URL for a custom node template's thumbnail
            url = f"{server.url}/api/workflow_templates/{PACK_NAME}/{quote(path.stem)}.jpg"  # titles have spaces
            with urllib.request.urlopen(url, timeout=30) as response:
                assert response.read() == path.with_suffix(".jpg").read_bytes()
        assert f"/extensions/{PACK_NAME}/templates.js" in server.get("/extensions")  # the cards' descriptions
        assert server.get(f"/extensions/{PACK_NAME}/templates.json") == json.loads(CARDS.read_text())
    finally:
        server.stop()
