"""The nodes, run in-process against the real upstream ComfyUI (imported from .host/), on tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_node

from magic141_core import tiny
from magic141_core.dit.loading import random_dit


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
            assert kind in ("IMAGE", "LATENT", "STRING", "FLOAT", "INT", "VIDEO", "MODEL", "CONDITIONING") or \
                kind.startswith("MAGIC141_"), kind


def test_model_loader_lists_and_loads_from_diffusion_models(pack, dit_file):
    loader = pack.NODE_CLASS_MAPPINGS["Magic141ModelLoader"]
    assert dit_file in loader.INPUT_TYPES()["required"]["model_name"][1]["options"]  # a V3 combo
    (patcher,) = run_node(loader, model_name=dit_file, weight_dtype="fp32")
    assert type(patcher.model).__name__ == "Magic141I2VModel"  # a native HunyuanVideoI2V MODEL around our DiT
    dit = patcher.model.diffusion_model
    assert dit.config.to_json() == tiny().to_json()  # (the pack has its own copy of the core)
    assert dit.img_in.proj.weight.dtype == torch.float32
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

    scaled = sample_latent(patcher.model.diffusion_model, tiny_cond, (1, 16, 2, 4, 4), steps=2, seed=7)
    assert torch.allclose(a["samples"] * 0.476986, scaled, atol=1e-6)  # LATENT holds the unscaled latent


def test_save_mp4_writes_the_video_with_workflow_and_passes_frames_on(pack, comfy_base):
    from magic141_core.video.mp4 import read_mp4, read_mp4_metadata

    frames = torch.rand(9, 32, 48, 3)
    workflow = {"nodes": [{"id": 1, "type": "Magic141SaveMP4"}]}
    out = run_node(pack.NODE_CLASS_MAPPINGS["Magic141SaveMP4"], images=frames, fps=24.0, quality=18,
                   filename_prefix="tests/clip", prompt={"1": {"class_type": "Magic141SaveMP4"}},
                   extra_pnginfo={"workflow": workflow})
    record = out["ui"]["images"][0]
    path = comfy_base / "output" / record["subfolder"] / record["filename"]
    assert record["filename"].endswith(".mp4") and out["ui"]["animated"] == (True,)
    assert out["result"][0] is frames
    assert out["result"][1].get_components().images.shape == frames.shape  # the native VIDEO of the same file
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


# ------------------------------------------------------------------------------------ encoders and image-to-video
@pytest.fixture(scope="module")
def demo_files(demo_models):
    return demo_models


@pytest.fixture(scope="module")
def encoders(pack, demo_files):
    loader = pack.NODE_CLASS_MAPPINGS["Magic141EncoderLoader"]
    options = loader.INPUT_TYPES()["required"]
    assert demo_files["llava"].name in options["llava"][1]["options"]
    assert demo_files["vision"].name in options["llava_vision"][1]["options"]
    (enc,) = run_node(loader, llava=demo_files["llava"].name, llava_vision=demo_files["vision"].name,
                      clip_l=demo_files["clip_l"].name, dtype="auto")
    return enc


def test_encode_node_builds_image_and_text_tokens_with_a_negative(pack, encoders):
    image = torch.rand(1, 90, 120, 4)  # alpha is dropped
    cond, positive, negative = run_node(pack.NODE_CLASS_MAPPINGS["Magic141Encode"], encoders=encoders,
                                        prompt="a cat walks", image=image)
    assert cond.positive.tokens.shape == (1, 146 + 256, 256) and cond.negative.tokens.shape == (1, 402, 256)
    valid = int(cond.positive.mask.sum())  # native CONDITIONING: padding cropped, CLIP-L pooled, no mask needed
    assert torch.equal(positive[0][0], cond.positive.tokens[:, :valid]) and "attention_mask" not in positive[0][1]
    assert torch.equal(positive[0][1]["pooled_output"], cond.positive.pooled)
    assert negative[0][0].shape[1] == int(cond.negative.mask.sum())
    assert cond.positive.mask[0, :146].all() and cond.reference is None
    again = run_node(pack.NODE_CLASS_MAPPINGS["Magic141Encode"], encoders=encoders, prompt="a cat walks",
                     image=image)[0]
    assert torch.equal(again.positive.tokens, cond.positive.tokens)
    with pytest.raises(ValueError, match="prompt is empty"):
        run_node(pack.NODE_CLASS_MAPPINGS["Magic141Encode"], encoders=encoders, prompt="  ", image=image)


@pytest.mark.compat
def test_encoders_are_loaded_models_of_comfyui_and_unload_with_it(pack, demo_files):
    """Magic141's encoders live under ComfyUI's memory management like native text encoders: listed as loaded
    after Encode, with their size, and taken out by 'Unload models' (unload_all_models)."""
    import comfy.model_management as mm

    (enc,) = run_node(pack.NODE_CLASS_MAPPINGS["Magic141EncoderLoader"], llava=demo_files["llava"].name,
                      llava_vision=demo_files["vision"].name, clip_l=demo_files["clip_l"].name, dtype="fp32")
    mm.unload_all_models()
    run_node(pack.NODE_CLASS_MAPPINGS["Magic141Encode"], encoders=enc, prompt="memory check",
             image=torch.rand(1, 64, 64, 3))
    models = enc.models()
    assert len(models) == 2  # LLaVA and CLIP-L
    loaded = {id(m.model.model.inner): m for m in mm.current_loaded_models if hasattr(m.model.model, "inner")}
    for model in models:
        assert id(model) in loaded, f"{type(model).__name__} is not among ComfyUI's loaded models"
        patcher = loaded[id(model)].model
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        assert patcher.model_size() == weights > 0  # its size, for ComfyUI to make room
        assert patcher.loaded_size() == weights and next(model.parameters()).device == patcher.load_device
    mm.unload_all_models()
    assert not {id(getattr(m.model.model, "inner", None)) for m in mm.current_loaded_models} & {id(m) for m in models}
    for patcher in enc.place.patchers:
        assert patcher.loaded_size() == 0  # offloaded: nothing of it counted on the compute device
        assert all(p.device == patcher.offload_device for p in patcher.model.parameters())


def test_encoder_loader_names_a_missing_vision_file(pack, demo_files):
    with pytest.raises(ValueError, match="vision tower"):
        run_node(pack.NODE_CLASS_MAPPINGS["Magic141EncoderLoader"], llava=demo_files["llava"].name,
                 llava_vision=pack.nodes.loaders.FOLDER_VISION, clip_l=demo_files["clip_l"].name, dtype="fp32")


class StubVAE:
    """Stands in for ComfyUI's VAE object: encode([1, H, W, 3]) -> [1, 16, 1, H/8, W/8] (records what it saw)."""

    def __init__(self, channels=16):
        self.channels, self.seen = channels, []

    def encode(self, pixels):
        self.seen.append(tuple(pixels.shape))
        return torch.ones(pixels.shape[0], self.channels, 1, pixels.shape[1] // 8, pixels.shape[2] // 8)


@pytest.mark.parametrize("size, expected", [((300, 400), (832, 624)), ((1080, 1920), (960, 544)),
                                            ((500, 500), (720, 720))])
def test_image_to_video_picks_the_official_bucket_and_scales_the_reference(pack, tiny_cond, size, expected):
    vae = StubVAE()
    image = torch.rand(1, *size, 3)
    cond, latent, fitted, positive, negative = run_node(
        pack.NODE_CLASS_MAPPINGS["Magic141ImageToVideo"], conditioning=tiny_cond, vae=vae, start_image=image,
        resolution="540p", width=64, height=64, length=9)
    for native in (positive, negative):  # exactly as native HunyuanImageToVideo v1 sets them
        extras = native[0][1]
        assert torch.allclose(extras["concat_latent_image"] * 0.476986, cond.reference, atol=1e-6)
        frames = latent["samples"].shape[2]
        assert extras["concat_mask"].shape == (1, 1, frames, *latent["samples"].shape[-2:])
        assert extras["concat_mask"][:, :, 0].eq(0).all() and extras["concat_mask"][:, :, 1:].eq(1).all()
    width, height = expected
    assert fitted.shape == (1, height, width, 3) and vae.seen == [(1, height, width, 3)]
    assert latent["samples"].shape == (1, 16, 3, height // 8, width // 8)
    assert torch.allclose(cond.reference, torch.full((1, 16, 1, height // 8, width // 8), 0.476986))
    assert tiny_cond.reference is None or cond is not tiny_cond  # the input conditioning is not modified


def test_image_to_video_pad_keeps_the_whole_portrait_on_black_bars(pack, tiny_cond):
    """A portrait (head at the very top) into a 64x48 landscape video: crop cuts the top rows off, pad keeps every
    row, scaled to the video's height and centred between black side bars."""
    image = torch.full((1, 96, 48, 3), 0.5)
    image[:, :8] = 1.0  # the "head": the top 8 of 96 rows
    node = pack.NODE_CLASS_MAPPINGS["Magic141ImageToVideo"]
    common = dict(conditioning=tiny_cond, vae=StubVAE(), start_image=image, resolution="custom", width=64, height=48,
                  length=9)
    cropped = run_node(node, **common)[2]
    assert cropped.shape == (1, 48, 64, 3) and cropped.max() < 0.6  # the head is gone
    padded = run_node(node, **common, fit="pad")[2]
    assert padded.shape == (1, 48, 64, 3)
    assert padded[0, :, :20].abs().max() == 0 and padded[0, :, 44:].abs().max() == 0  # 24 px image, centred
    assert torch.allclose(padded[0, :, 20:44], torch.nn.functional.interpolate(
        image.movedim(-1, 1), size=(48, 24), mode="bilinear", antialias=True).movedim(1, -1)[0].clamp(0, 1))
    assert padded[0, :3, 20:44].min() > 0.9  # the head is there
    with pytest.raises(ValueError, match="fit must be one of \\('crop', 'pad'\\), got 'stretch'"):
        run_node(node, **common, fit="stretch")


@pytest.mark.parametrize("length, width, message", [(80, 64, "4k\\+1"), (9, 72, "multiple of 16")])
def test_image_to_video_rejects_bad_sizes(pack, tiny_cond, length, width, message):
    with pytest.raises(ValueError, match=message):
        run_node(pack.NODE_CLASS_MAPPINGS["Magic141ImageToVideo"], conditioning=tiny_cond, vae=StubVAE(),
                 start_image=torch.rand(1, 64, 64, 3), resolution="custom", width=width, height=64, length=length)


def test_image_to_video_rejects_a_non_hunyuan_vae(pack, tiny_cond):
    with pytest.raises(ValueError, match="HunyuanVideo VAE"):
        run_node(pack.NODE_CLASS_MAPPINGS["Magic141ImageToVideo"], conditioning=tiny_cond, vae=StubVAE(channels=4),
                 start_image=torch.rand(1, 64, 64, 3), resolution="custom", width=64, height=64, length=9)


def test_image_to_video_refuses_a_batch_of_start_images(pack, tiny_cond):
    vae = StubVAE()
    with pytest.raises(ValueError, match="start_image is a batch of 3 images.*Image From Batch"):
        run_node(pack.NODE_CLASS_MAPPINGS["Magic141ImageToVideo"], conditioning=tiny_cond, vae=vae,
                 start_image=torch.rand(3, 64, 64, 3), resolution="custom", width=64, height=64, length=9)
    assert vae.seen == []  # refused before any work


def test_retrieve_prior_is_changed_follows_the_folders_content(pack, comfy_base):
    import os

    from PIL import Image

    node = pack.NODE_CLASS_MAPPINGS["Magic141RetrievePrior"]
    folder = comfy_base / "input" / "fingerprinted"
    folder.mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "a.png")
    fingerprint = lambda: node.fingerprint_inputs(clip_model="clip/", prompt="x", folder="input/fingerprinted", k=1, pick=0)
    first = fingerprint()
    (folder / "notes.txt").write_text("not an image")  # not an image: no reason to re-run
    assert fingerprint() == first
    Image.new("RGB", (8, 8), "blue").save(folder / "b.png")
    added = fingerprint()
    assert added != first
    Image.new("RGB", (8, 8), "green").save(folder / "b.png")  # edited (size may stay: the time changes)
    os.utime(folder / "b.png", ns=(1, 10**18))
    edited = fingerprint()
    assert edited not in (first, added)
    (folder / "b.png").unlink()
    assert fingerprint() == first  # back to the same content
    unknown = node.fingerprint_inputs(clip_model="clip/", prompt="x", folder="input/missing", k=1, pick=0)
    assert unknown != unknown  # NaN: an unknown folder always runs (and reports the problem)


# ----------------------------------------------------------------------------------------------------------- int8
def test_int8_modes_and_the_save_int8_node(pack, dit_file, comfy_base):
    loader, saver = pack.NODE_CLASS_MAPPINGS["Magic141ModelLoader"], pack.NODE_CLASS_MAPPINGS["Magic141SaveInt8"]
    with pytest.raises(ValueError, match="not a pre-quantized int8 file"):
        run_node(loader, model_name=dit_file, weight_dtype="bf16", int8="pre-quantized")
    (float_model,) = run_node(loader, model_name=dit_file, weight_dtype="bf16", block_swap=1)  # CPU: no swap
    assert not hasattr(float_model.model.diffusion_model, "block_swap")
    out = run_node(saver, model=float_model, filename="tiny_int8")
    assert out["result"] == ("tiny_int8.safetensors",)
    assert type(float_model.model.diffusion_model.double_blocks[0].img_attn_qkv).__name__ == "Linear"  # the float model is untouched
    (int8_model,) = run_node(loader, model_name="tiny_int8.safetensors", weight_dtype="bf16", int8="pre-quantized")
    assert type(int8_model.model.diffusion_model.double_blocks[0].img_attn_qkv).__name__ == "Int8Linear"
    (on_load,) = run_node(loader, model_name=dit_file, weight_dtype="bf16", int8="quantize on load")
    assert type(on_load.model.diffusion_model.single_blocks[0].linear1).__name__ == "Int8Linear"
    with pytest.raises(ValueError, match="plain file name"):
        run_node(saver, model=int8_model, filename="../escape")


def test_encoder_loader_int8_quantizes_the_llama_and_still_encodes(pack, demo_files):
    (enc,) = run_node(pack.NODE_CLASS_MAPPINGS["Magic141EncoderLoader"], llava=demo_files["llava"].name,
                      llava_vision=demo_files["vision"].name, clip_l=demo_files["clip_l"].name, dtype="fp32",
                      int8="quantize on load")
    cond = run_node(pack.NODE_CLASS_MAPPINGS["Magic141Encode"], encoders=enc, prompt="a boat",
                    image=torch.rand(1, 40, 40, 3))[0]
    layers = [type(m).__name__ for m in enc.llava.model.language_model.modules()]
    assert "Int8Linear" in layers and "Linear" not in layers
    assert cond.positive.tokens.shape == (1, 402, 256) and torch.isfinite(cond.positive.tokens).all()
    assert enc.identity.endswith("-int8")  # its cache entries never mix with the float encoders'


def test_save_int8_writes_a_self_contained_llava_that_loads_pre_quantized(pack, demo_files, comfy_base):
    loader, saver = pack.NODE_CLASS_MAPPINGS["Magic141EncoderLoader"], pack.NODE_CLASS_MAPPINGS["Magic141SaveInt8"]
    files = dict(llava=demo_files["llava"].name, clip_l=demo_files["clip_l"].name, dtype="fp32")
    with pytest.raises(ValueError, match="not a pre-quantized int8 LLaVA file"):
        run_node(loader, llava_vision=demo_files["vision"].name, int8="pre-quantized", **files)
    (float_enc,) = run_node(loader, llava_vision=demo_files["vision"].name, **files)
    out = run_node(saver, encoders=float_enc, filename="demo_int8")
    assert out["result"] == ("demo_int8_llava.safetensors",)
    assert (comfy_base / "models" / "text_encoders" / "demo_int8_llava.safetensors").is_file()
    assert float_enc.llava is None  # saving re-read the files; the user's encoders were not loaded or changed
    files["llava"] = "demo_int8_llava.safetensors"
    (enc,) = run_node(loader, llava_vision=pack.nodes.loaders.FOLDER_VISION, int8="pre-quantized", **files)
    image = torch.rand(1, 40, 40, 3, generator=torch.Generator().manual_seed(0))
    a = run_node(pack.NODE_CLASS_MAPPINGS["Magic141Encode"], encoders=enc, prompt="a boat", image=image)[0]
    b = run_node(pack.NODE_CLASS_MAPPINGS["Magic141Encode"], encoders=float_enc, prompt="a boat", image=image)[0]
    assert "Int8Linear" in [type(m).__name__ for m in enc.llava.model.language_model.modules()]
    assert ((a.positive.tokens - b.positive.tokens).norm() / b.positive.tokens.norm()) < 0.05
    with pytest.raises(ValueError, match="connect a model"):
        run_node(saver, filename="nothing")


def test_image_to_video_auto_on_the_cpu_makes_the_draft_and_says_so(pack, tiny_cond, caplog):
    """ComfyUI here computes on the CPU: the templates' "auto" entry makes the labelled draft (the 540p bucket at
    1/6 of each side, at most 17 frames), logged with the size; "540p" (older workflows) stays the bucket."""
    import logging

    from magic141_core.video.start_image import AUTO, DRAFT, size_choices

    node = pack.NODE_CLASS_MAPPINGS["Magic141ImageToVideo"]
    kind, options = node.INPUT_TYPES()["required"]["resolution"]  # a V3 combo: ("COMBO", {"options": [...]})
    choices = options["options"]
    assert choices[:2] == [AUTO, DRAFT] and options["default"] == AUTO and {"540p", "720p", "custom"} <= set(choices)
    kind, long_options = pack.NODE_CLASS_MAPPINGS["Magic141LongVideo"].INPUT_TYPES()["required"]["resolution"]
    assert long_options["options"] == size_choices(long_video=True) and long_options["default"] == AUTO
    assert "at most 4 windows of at most 9 frames" in long_options["tooltip"] and "16:9 -> 160x80" in options["tooltip"]
    image = torch.rand(1, 1080, 1920, 3)
    for resolution in (AUTO, DRAFT):
        vae = StubVAE()
        with caplog.at_level(logging.INFO):
            _, latent, fitted, *_ = run_node(node, conditioning=tiny_cond, vae=vae, start_image=image,
                                             resolution=resolution, width=960, height=544, length=81, unique_id="7")
        assert fitted.shape == (1, 80, 160, 3) and vae.seen == [(1, 80, 160, 3)]
        assert latent["samples"].shape == (1, 16, 5, 10, 20)  # 17 frames
    assert "Magic141 Image To Video: auto on cpu -> draft: 160x80, 17 frames (81 asked, the draft's cap)" \
        in caplog.text
    _, latent, fitted, *_ = run_node(node, conditioning=tiny_cond, vae=StubVAE(), start_image=image,
                                     resolution="540p", width=64, height=64, length=9)
    assert fitted.shape == (1, 544, 960, 3) and latent["samples"].shape == (1, 16, 3, 68, 120)
