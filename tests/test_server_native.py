"""Native MODEL / CONDITIONING / LoRA interop on a real upstream ComfyUI server, with the built-in demo files: native
KSampler on Magic141's MODEL and conditioning reproduces Magic141 Sampler, native LoRA loaders apply to our model,
and wiring another model family into our nodes is refused with a message that names it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfy_server import ComfyServer
from PIL import Image
from safetensors.torch import load_file, save_file

from magic141_core.demo.models import DEMO_FILES

DEMO = {role: name for role, (_, name) in DEMO_FILES.items()}
SD15 = "sd15_image_model.safetensors"


@pytest.fixture(scope="module")
def server(tmp_path_factory, comfy_base, demo_models):
    from magic141_core.demo.sd15 import write_demo_sd15

    base = tmp_path_factory.mktemp("comfy_server_native")
    (base / "models").symlink_to(comfy_base / "models", target_is_directory=True)
    if not (base / "models" / "checkpoints" / SD15).is_file():
        write_demo_sd15(base / "models" / "checkpoints" / SD15)
    (base / "input").mkdir(parents=True, exist_ok=True)
    y, x = np.meshgrid(np.linspace(0, 1, 48), np.linspace(0, 1, 64), indexing="ij")
    start = np.stack([x, y * (1 - x), np.abs(x - 0.7) < 0.15], axis=-1)  # no symmetry, three colours
    Image.fromarray((start * 255).astype(np.uint8)).save(base / "input" / "start.png")
    srv = ComfyServer(base)
    yield srv
    srv.stop()


def magic141_graph(prefix: str) -> dict:
    """Demo models -> Magic141 Encode -> Image To Video (64x48, 9 frames): our conditioning, native outputs too."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "start.png"}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": DEMO["vae"]}},
        "3": {"class_type": "Magic141ModelLoader", "inputs": {"model_name": DEMO["dit"], "weight_dtype": "fp32"}},
        "4": {"class_type": "Magic141EncoderLoader", "inputs": {"llava": DEMO["llava"], "llava_vision": DEMO["vision"],
                                                                "clip_l": DEMO["clip_l"], "dtype": "fp32"}},
        "5": {"class_type": "Magic141Encode", "inputs": {"encoders": ["4", 0], "prompt": f"{prefix} waves roll in",
                                                         "image": ["1", 0]}},
        "6": {"class_type": "Magic141ImageToVideo", "inputs": {"conditioning": ["5", 0], "vae": ["2", 0],
                                                               "start_image": ["1", 0], "resolution": "custom",
                                                               "width": 64, "height": 48, "length": 9}},
    }


def saved_latent(server, history: dict, node: str) -> torch.Tensor:
    record = history["outputs"][node]["latents"][0]
    return load_file(server.base / "output" / record["subfolder"] / record["filename"])["latent_tensor"]


def run(server, prompt: dict) -> dict:
    history = server.wait(server.queue(prompt))
    errors = [m[1].get("exception_message") for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert history["status"]["status_str"] == "success", errors or history["status"]
    return history


def error_of(server, prompt) -> str:
    history = server.wait(server.queue(prompt))
    assert history["status"]["status_str"] == "error"
    (error,) = [m for m in history["status"]["messages"] if m[0] == "execution_error"]
    return error[1]["exception_message"]


def test_native_ksampler_with_magic141_model_and_conditioning_equals_magic141_sampler(server):
    prompt = magic141_graph("parity")
    prompt |= {
        "7": {"class_type": "Magic141Sampler", "inputs": {"model": ["3", 0], "conditioning": ["6", 0],
                                                          "latent": ["6", 1], "steps": 4, "shift": 5.0,
                                                          "guidance": 1.0, "seed": 39}},
        "8": {"class_type": "KSampler", "inputs": {"model": ["3", 0], "positive": ["6", 3], "negative": ["6", 4],
                                                   "latent_image": ["6", 1], "seed": 39, "steps": 4, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": "native/magic"}},
        "10": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": "native/ksampler"}},
        # native CONDITIONING back into our sampler (positive + negative outputs of Image To Video)
        "11": {"class_type": "Magic141Sampler", "inputs": {"model": ["3", 0], "conditioning": ["6", 3],
                                                           "negative": ["6", 4], "latent": ["6", 1], "steps": 4,
                                                           "shift": 5.0, "guidance": 1.0, "seed": 39}},
        "12": {"class_type": "SaveLatent", "inputs": {"samples": ["11", 0], "filename_prefix": "native/back"}},
    }
    history = run(server, prompt)
    ours, native, back = (saved_latent(server, history, n) for n in ("9", "10", "12"))
    assert ours.shape == (1, 16, 3, 6, 8) and torch.isfinite(ours).all() and ours.abs().max() > 0
    assert (native - ours).abs().max() <= 1e-5
    assert (back - ours).abs().max() <= 1e-5


def test_other_model_families_and_conditioning_are_refused_by_name(server):
    prompt = magic141_graph("wiring")
    prompt |= {
        "7": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15}},
        "8": {"class_type": "Magic141Sampler", "inputs": {"model": ["7", 0], "conditioning": ["6", 0],
                                                          "latent": ["6", 1], "steps": 1, "shift": 5.0,
                                                          "guidance": 1.0, "seed": 1}},
        "10": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": "native/never"}},
    }
    assert ("Magic141 Sampler got a BaseModel model with 4 input channels; it needs an image-to-video transformer: "
            "Magic141 Model Loader (any family)") in error_of(server, prompt)
    prompt["9"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["7", 1], "text": "a cat"}}
    prompt["8"]["inputs"] |= {"model": ["3", 0], "conditioning": ["9", 0]}
    assert "the conditioning has text tokens 768 wide" in error_of(server, prompt)


# ------------------------------------------------------------------------------------------- example workflows
def example(server, name: str, **overrides) -> tuple[dict, dict]:
    import json

    from comfy_server import ui_to_api

    from scripts.build_workflows import template_path

    ui = json.loads(template_path(name).read_text())
    prompt = ui_to_api(ui, server.get("/object_info"))
    for node in prompt.values():
        node["inputs"].update(overrides.get(node["class_type"], {}))
    return prompt, ui


def mp4_frames(server, history: dict):
    from magic141_core.video.mp4 import read_mp4

    (record,) = [r for out in history["outputs"].values() for r in out.get("images", [])
                 if r["filename"].endswith(".mp4")]
    return read_mp4(server.base / "output" / record["subfolder"] / record["filename"])[0]


def test_lora_workflow_runs_and_the_lora_changes_the_video(server):
    from magic141_core.demo.models import demo_dit_config
    from magic141_core.dit.loading import random_dit

    loras = server.base / "models" / "loras"
    loras.mkdir(exist_ok=True)
    demo, g = random_dit(demo_dit_config()), torch.Generator().manual_seed(0)
    linear = demo.final_layer.linear
    save_file({"diffusion_model.final_layer.linear.lora_A.weight": torch.randn(2, linear.in_features, generator=g),
               "diffusion_model.final_layer.linear.lora_B.weight": torch.randn(linear.out_features, 2, generator=g)},
              loras / "hunyuan_video_lora.safetensors")
    size = {"resolution": "custom", "width": 64, "height": 48, "length": 5}
    prompt, _ = example(server, "lora_to_video", Magic141ImageToVideo=size, LoadImage={"image": "start.png"},
                        LoraLoaderModelOnly={"lora_name": "hunyuan_video_lora.safetensors"})  # not the demo's
    frames = torch.from_numpy(mp4_frames(server, run(server, prompt))).float() / 255
    assert frames.shape == (5, 48, 64, 3)
    # the demo's weights hold the start image in every frame (correlation 0.95 at strength 0, and > 0.9 in
    # test_server / test_cli); the LoRA, applied by ComfyUI's native loader to Magic141's transformer, breaks that
    start = torch.from_numpy(np.asarray(Image.open(server.base / "input" / "start.png"))).float() / 255
    blocks = [torch.nn.functional.avg_pool2d(f.permute(2, 0, 1)[None], 8).flatten() for f in (start, frames[-1])]
    assert torch.corrcoef(torch.stack(blocks))[0, 1] < 0.5


def test_hunyuan_i2v_native_workflow_drives_magic141_long_video(server):
    """The workflow with a tiny HunyuanVideo-I2V file in Load Diffusion Model. Its native encoders are the 8B
    LLaVA-Llama-3 (too big for CI): a CLIP text encoder stands in for the conditioning, same CONDITIONING type."""
    from magic141_core import save_dit, tiny
    from magic141_core.dit.loading import random_dit

    name = "tiny_hunyuan_i2v.safetensors"
    save_dit(random_dit(tiny(hidden_size=256, num_heads=2, refiner_blocks=2, pooled_dim=768, text_dim=768,
                             rope_axes=(16, 56, 56)), seed=5), server.base / "models" / "diffusion_models" / name)
    prompt, _ = example(server, "hunyuan_i2v_long_video", UNETLoader={"unet_name": name},
                        VAELoader={"vae_name": DEMO["vae"]},
                        Magic141LongVideo={"duration": 2, "unit": "windows", "window_length": 5, "context_frames": 1,
                                           "resolution": "custom", "width": 64, "height": 48, "steps": 2,
                                           "shift": 5.0, "guidance": 1.0})
    ids = {v["class_type"]: k for k, v in prompt.items()}
    for native_encoder in ("DualCLIPLoader", "CLIPVisionLoader", "CLIPVisionEncode",
                           "TextEncodeHunyuanVideo_ImageToVideo"):
        del prompt[ids[native_encoder]]
    prompt["90"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15}}
    prompt["91"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["90", 1], "text": "the camera glides"}}
    prompt[ids["Magic141LongVideo"]]["inputs"]["conditioning"] = ["91", 0]
    prompt[ids["LoadImage"]]["inputs"]["image"] = "start.png"
    frames = mp4_frames(server, run(server, prompt))
    assert frames.shape == (2 * (5 - 1) + 1, 48, 64, 3)


# ------------------------------------------------------------------------------ the three image-to-video families
@pytest.fixture(scope="module")
def family_files(server):
    """Stand-ins under ComfyUI's own file names: tiny random transformers of each family (the demo encoders' widths)
    and the demo encoders and VAE linked under the names HunyuanVideo workflows use."""
    import dataclasses

    from magic141_core.demo.models import demo_dit_config
    from magic141_core.dit.family import FAMILIES
    from magic141_core.dit.loading import random_dit
    from scripts.build_workflows import FAMILY_TEMPLATES, HUNYUAN_I2V

    models, made = server.base / "models", []
    for seed, (family_key, *_) in enumerate(FAMILY_TEMPLATES.values(), 40):
        family = FAMILIES[family_key]
        config = dataclasses.replace(demo_dit_config(), in_channels=family.in_channels,
                                     image_condition=family.image_condition,
                                     guidance_embed=family_key != "hunyuan_i2v_v1")  # as the public files
        # tensors only, as a repackaged public file: Model Loader's auto must find the family by itself
        made.append(models / "diffusion_models" / family.comfy_file)
        save_file(random_dit(config, seed=seed).state_dict(), str(made[-1]))
    for role, folder in (("llava", "text_encoders"), ("vision", "clip_vision"), ("clip_l", "text_encoders"),
                         ("vae", "vae")):
        link = models / folder / HUNYUAN_I2V[role]
        if not link.exists():
            link.symlink_to(models / DEMO_FILES[role][0] / DEMO[role])
            made.append(link)
    yield FAMILY_TEMPLATES
    for path in made:  # the session's server is shared: the templates' walk expects these public files missing
        path.unlink()


@pytest.mark.parametrize("key", ["hunyuan_i2v_v1_to_video", "hunyuan_i2v_v2_to_video", "skyreels_to_video"])
def test_each_family_template_and_a_three_window_long_video_run(server, family_files, key):
    """The family's template as shipped (its ComfyUI file names, steps, guidance, CFG) at CPU size; the Model
    Loader finds the family by itself (the v2 file by its name); then Magic141 Long Video, 3 windows of 9 frames,
    on the same loaders. v2's first frame is the start image's latent itself in every window."""
    from run_sh_server import CPU_SIZE

    from magic141_core.dit.family import FAMILIES
    from magic141_core.video.windows import DEFAULT_CONTEXT_FRAMES

    family = FAMILIES[family_files[key][0]]
    prompt, _ = example(server, key, Magic141ImageToVideo=CPU_SIZE, LoadImage={"image": "start.png"})
    ids = {v["class_type"]: k for k, v in prompt.items()}
    frames = mp4_frames(server, run(server, prompt))
    assert frames.shape == (9, 48, 64, 3) and frames.std() > 0
    sampler = prompt[ids["Magic141Sampler"]]["inputs"]
    long_video = {"class_type": "Magic141LongVideo", "inputs": {
        "model": [ids["Magic141ModelLoader"], 0], "encoders": [ids["Magic141EncoderLoader"], 0],
        "vae": [ids["VAELoader"], 0], "prior": [ids["LoadImage"], 0], "prompts": "waves\nclouds\nbirds",
        "duration": 3, "unit": "windows", "window_length": 9, "resolution": "custom", "width": 64, "height": 48,
        **{k: sampler[k] for k in ("steps", "shift", "guidance", "seed", "cfg")}, "color_match": True,
        "noise_augmentation": 0.02, "anchor": "prior", "fps": 24.0, "quality": 19,
        "filename_prefix": f"families/{family.key}"}}
    loaders = {k: v for k, v in prompt.items() if v["class_type"] in ("LoadImage", "VAELoader", "Magic141ModelLoader",
                                                                         "Magic141EncoderLoader")}
    frames = mp4_frames(server, run(server, {**loaders, "90": long_video}))
    assert frames.shape == (9 + 2 * (9 - DEFAULT_CONTEXT_FRAMES), 48, 64, 3)  # each later window adds 9 - context


def test_a_family_mismatch_and_a_text_to_video_model_are_refused_by_name(server, family_files):
    """Native v1 (concat) conditioning on the v2 model names both and the fix; the v2 file loaded as text-to-video
    (its family chosen wrong) is refused by name; Magic141's template on SkyReels-V1 names both templates."""
    prompt, _ = example(server, "hunyuan_i2v_v2_to_video", Magic141ImageToVideo=CPU_SIZE_FOR_ERRORS,
                        LoadImage={"image": "start.png"})
    ids = {v["class_type"]: k for k, v in prompt.items()}
    sampler = prompt[ids["Magic141Sampler"]]["inputs"]
    del prompt[ids["Magic141Encode"]]["inputs"]["model"]  # not told the family: its native outputs are v1's
    prompt[ids["Magic141Encode"]]["inputs"]["template"] = "HunyuanVideo-I2V"
    sampler["conditioning"], sampler["negative"] = [ids["Magic141ImageToVideo"], 3], [ids["Magic141ImageToVideo"], 4]
    assert ("the conditioning comes from HunyuanImageToVideo 'v1 (concat)' but the model is HunyuanVideo-I2V v2 "
            "(token replace, 16 input channels); set HunyuanImageToVideo's guidance_type to 'v2 (replace)'"
            ) in error_of(server, prompt)
    prompt[ids["Magic141ModelLoader"]]["inputs"]["family"] = "HunyuanVideo text-to-video"
    assert "got HunyuanVideo text-to-video (text-to-video, 16 input channels): it has no image path" in \
        error_of(server, prompt)
    prompt, _ = example(server, "skyreels_to_video", Magic141ImageToVideo=CPU_SIZE_FOR_ERRORS,
                        LoadImage={"image": "start.png"})
    ids = {v["class_type"]: k for k, v in prompt.items()}
    prompt[ids["Magic141Encode"]]["inputs"]["template"] = "Magic141"
    assert ("encoded with the Magic141 (146 image tokens, then the text) prompt template, but the model is "
            "SkyReels-V1 I2V (concat, 32 input channels), which reads the HunyuanVideo text only (SkyReels-V1) one"
            ) in error_of(server, prompt)


CPU_SIZE_FOR_ERRORS = {"resolution": "custom", "width": 64, "height": 48, "length": 5}
