"""Native MODEL / CONDITIONING / LoRA interop on a real upstream ComfyUI server, with the built-in demo files: native
KSampler on Magic141's MODEL and conditioning reproduces Magic141 Sampler, native LoRA loaders apply to our model,
and wiring another model family into our nodes is refused with a message that names it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfy_server import ComfyServer
from PIL import Image
from safetensors.torch import load_file

from magic141_core.demo import DEMO_FILES

DEMO = {role: name for role, (_, name) in DEMO_FILES.items()}
SD15 = "sd15_image_model.safetensors"


@pytest.fixture(scope="module")
def server(tmp_path_factory, comfy_base, demo_models):
    from tiny_sd15 import write_sd15_checkpoint

    base = tmp_path_factory.mktemp("comfy_server_native")
    (base / "models").symlink_to(comfy_base / "models", target_is_directory=True)
    if not (base / "models" / "checkpoints" / SD15).is_file():
        write_sd15_checkpoint(base / "models" / "checkpoints" / SD15)
    (base / "input").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(base / "input" / "start.png")
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
    assert history["status"]["status_str"] == "success", history["status"]
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
    assert ("Magic141 Sampler got a BaseModel model with 4 input channels; it needs an image-to-video transformer "
            "with 33 input channels") in error_of(server, prompt)
    prompt["9"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["7", 1], "text": "a cat"}}
    prompt["8"]["inputs"] |= {"model": ["3", 0], "conditioning": ["9", 0]}
    assert "the conditioning has text tokens 768 wide" in error_of(server, prompt)
