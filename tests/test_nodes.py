"""The nodes, run in-process against the real upstream ComfyUI (imported from .host/), on tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_node

from magic141_core import tiny
from magic141_core.demo import random_dit


@pytest.fixture(scope="module")
def dit_file(comfy_base):
    from magic141_core import save_dit

    path = comfy_base / "models" / "diffusion_models" / "tiny_magic141.safetensors"
    save_dit(random_dit(tiny(), seed=3), path)
    return path.name


def test_every_node_has_tooltips_description_and_category(pack):
    assert pack.NODE_CLASS_MAPPINGS, "the pack registers no nodes"
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert cls.CATEGORY == "Magic141" and cls.DESCRIPTION, name
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[name].startswith("Magic141 "), name
        spec = cls.INPUT_TYPES()
        for group in ("required", "optional"):
            for input_name, (kind, *options) in spec.get(group, {}).items():
                assert options and options[0].get("tooltip"), f"{name}.{input_name} has no tooltip"
        assert len(getattr(cls, "OUTPUT_TOOLTIPS", ())) == len(cls.RETURN_TYPES), name
        for kind in cls.RETURN_TYPES:
            assert kind in ("IMAGE", "LATENT", "STRING", "FLOAT", "INT") or kind.startswith("MAGIC141_"), kind


def test_model_loader_lists_and_loads_from_diffusion_models(pack, dit_file):
    loader = pack.NODE_CLASS_MAPPINGS["Magic141ModelLoader"]
    assert dit_file in loader.INPUT_TYPES()["required"]["model_name"][0]
    (patcher,) = run_node(loader, model_name=dit_file, weight_dtype="fp32")
    assert patcher.model.config.to_json() == tiny().to_json()  # (the pack has its own copy of the core)
    assert patcher.model.img_in.proj.weight.dtype == torch.float32
    assert patcher.size > 0


def test_model_loader_rejects_a_vae_file_with_a_clear_message(pack, comfy_base):
    from safetensors.torch import save_file

    path = comfy_base / "models" / "diffusion_models" / "looks_like_vae.safetensors"
    save_file({"encoder.conv_in.conv.weight": torch.zeros(1), "decoder.conv_in.conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="looks_like_vae.safetensors is not a Magic141 .* it looks like a VAE"):
        run_node(pack.NODE_CLASS_MAPPINGS["Magic141ModelLoader"], model_name=path.name, weight_dtype="bf16")


def test_sampler_returns_a_native_unscaled_latent_and_is_seeded(pack, dit_file, tiny_cond):
    (patcher,) = run_node(pack.NODE_CLASS_MAPPINGS["Magic141ModelLoader"], model_name=dit_file, weight_dtype="fp32")
    sampler = pack.NODE_CLASS_MAPPINGS["Magic141Sampler"]
    latent = {"samples": torch.zeros(1, 16, 2, 4, 4)}
    kwargs = dict(model=patcher, conditioning=tiny_cond, latent=latent, steps=2, shift=5.0, guidance=1.0)
    (a,) = run_node(sampler, seed=7, **kwargs)
    (b,) = run_node(sampler, seed=7, **kwargs)
    (c,) = run_node(sampler, seed=8, **kwargs)
    assert a["samples"].shape == (1, 16, 2, 4, 4)
    assert torch.equal(a["samples"], b["samples"]) and not torch.equal(a["samples"], c["samples"])

    from magic141_core import sample_latent

    scaled = sample_latent(patcher.model, tiny_cond, (1, 16, 2, 4, 4), steps=2, seed=7)
    assert torch.allclose(a["samples"] * 0.476986, scaled, atol=1e-6)  # LATENT holds the unscaled latent


def test_save_mp4_writes_the_video_with_workflow_and_passes_frames_on(pack, comfy_base):
    from magic141_core.video_io import read_mp4, read_mp4_metadata

    frames = torch.rand(9, 32, 48, 3)
    workflow = {"nodes": [{"id": 1, "type": "Magic141SaveMP4"}]}
    out = run_node(pack.NODE_CLASS_MAPPINGS["Magic141SaveMP4"], images=frames, fps=24.0, quality=18,
                   filename_prefix="tests/clip", prompt={"1": {"class_type": "Magic141SaveMP4"}},
                   extra_pnginfo={"workflow": workflow})
    record = out["ui"]["images"][0]
    path = comfy_base / "output" / record["subfolder"] / record["filename"]
    assert record["filename"].endswith(".mp4") and out["ui"]["animated"] == (True,)
    assert out["result"][0] is frames
    decoded, fps = read_mp4(path)
    assert decoded.shape == (9, 32, 48, 3) and fps == 24.0
    tags = read_mp4_metadata(path)
    assert json.loads(tags["workflow"]) == workflow and "Magic141SaveMP4" in tags["prompt"]
    second = run_node(pack.NODE_CLASS_MAPPINGS["Magic141SaveMP4"], images=frames, fps=24.0, quality=18,
                      filename_prefix="tests/clip")
    assert second["ui"]["images"][0]["filename"] != record["filename"]  # counter advances, nothing overwritten


def test_save_mp4_refuses_paths_outside_the_output_folder(pack):
    with pytest.raises(Exception, match="outside|Saving image outside"):
        run_node(pack.NODE_CLASS_MAPPINGS["Magic141SaveMP4"], images=torch.rand(2, 16, 16, 3), fps=8.0, quality=20,
                 filename_prefix="../../escape")
