"""The built-in demo's hand-set weights (`magic141_core.demo.passthrough`): the VAE is a colour autoencoder and the DiT
lands every frame on the start image's latent, so a demo video is the start image held still. The end-to-end check
through the real demo files (encoders, VAE, DiT, MP4) is in test_cli.py."""

from __future__ import annotations

import pytest
import torch
from conftest import make_text

from magic141_core.sampling.conditioning import Conditioning
from magic141_core.dit.config import tiny
from magic141_core.demo.models import DEMO_LLM_DIM, demo_dit_config
from magic141_core.demo.passthrough import passthrough_dit, passthrough_vae
from magic141_core.sampling.sampler import sample_latent
from magic141_core.vae import Tiling, tiny_vae


def smooth_image(height: int = 48, width: int = 64) -> torch.Tensor:
    """[1, 3, H, W] in [-1, 1]: gradients and a bar, no symmetry, no detail finer than the 8x latent keeps."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    bar = torch.exp(-(((x - 0.7) / 0.12) ** 2))
    return (torch.stack([x, y * (1 - x), bar])[None] * 2 - 1).float()


def test_the_vae_passes_colours_through():
    vae = passthrough_vae(tiny_vae(block_out_channels=(16, 16, 32, 32), norm_groups=4))
    image = smooth_image()
    latent = vae.encode(image).mean  # [1, 16, 1, 6, 8]
    assert latent[:, 3:].abs().max() == 0  # colours live in channels 0-2 only
    colours = image[0, :, ::8, ::8]  # latent pixel (i, j) is centred on image pixel (8i, 8j)
    assert (latent[0, :3, 0] / 2 - colours).abs().mean() < 0.05  # latent = 2 x colour, blurred; measured 0.025
    video = latent.expand(-1, -1, 3, -1, -1)  # three equal latent frames
    frames = vae.decode(video, Tiling(chunk_frames=1))  # [1, 3, 9, 48, 64] in [0, 1], in chunks
    want = (image + 1) / 2
    for f in range(frames.shape[2]):
        assert (frames[:, :, f] - want).abs().mean() < 0.08  # measured 0.062 (0.014 on a 384x224 picture)
        assert (frames[:, :, f] - want.flip(-1)).abs().mean() > 0.2  # the bound tells a mirrored frame apart


def test_the_dit_lands_every_frame_on_the_reference_and_ignores_the_seed():
    dit = passthrough_dit(demo_dit_config())
    reference = torch.randn(1, 16, 1, 6, 8, generator=torch.Generator().manual_seed(0))
    cond = Conditioning(make_text(length=7, dim=DEMO_LLM_DIM, pooled_dim=64), reference=reference)
    results = [sample_latent(dit, cond, (1, 16, 5, 6, 8), seed=seed) for seed in (1, 2)]
    for latent in results:
        assert (latent - reference).abs().max() < 0.03  # every frame; measured 0.012 (fp32)
    few = sample_latent(dit, cond, (1, 16, 5, 6, 8), steps=2, seed=1)  # off the default schedule: not exact
    assert (few - reference).abs().max() > 0.05


def test_configs_the_demo_cannot_use_are_refused():
    with pytest.raises(ValueError, match="hidden >= 200"):
        passthrough_dit(tiny())
    with pytest.raises(ValueError, match="4 channels per norm group"):
        passthrough_vae(tiny_vae())


def test_the_demo_image_model_has_comfyuis_sd15_layout(comfy_base):
    """Every UNet and VAE key and shape of the built-in SD1.5-format image model equals those of ComfyUI's own SD1.5
    modules (the one-level UNet the demo uses, the fixed SD VAE), so CheckpointLoaderSimple detects and loads it."""
    import comfy.ops
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    from magic141_core.demo.sd15 import sd15_demo_shapes

    unet = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[1],
                     channel_mult=(1,), num_heads=8, transformer_depth=[1], transformer_depth_output=[1, 1],
                     transformer_depth_middle=1, context_dim=768, use_spatial_transformer=True,
                     operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="meta")
    with torch.device("meta"):
        vae = AutoencoderKL(ddconfig={"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3,
                                      "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2,
                                      "attn_resolutions": [], "dropout": 0.0}, embed_dim=4)
    theirs = {f"model.diffusion_model.{k}": tuple(v.shape) for k, v in unet.state_dict().items()}
    theirs |= {f"first_stage_model.{k}": tuple(v.shape) for k, v in vae.state_dict().items()}
    assert sd15_demo_shapes() == theirs


@pytest.mark.parametrize("strength", [0.8, 1.0])
def test_the_demo_lora_swaps_red_and_blue_at_its_strength(tmp_path, strength):
    """The demo LoRA file, read by the core's LoRA reader (the same checks as any user's LoRA) and merged into the
    passthrough DiT: every frame lands on the reference with its latent channels 0 (red) and 2 (blue) mixed as
    (1 - s) x own + s x the other's, the rest unchanged. The reference is the start latent itself, permuted."""
    from magic141_core.demo.passthrough import red_blue_swap_lora
    from magic141_core.weights import save_safetensors
    from magic141_core.weights.lora import load_loras_

    config = demo_dit_config()
    save_safetensors(red_blue_swap_lora(config), tmp_path / "lora.safetensors")
    dit = load_loras_(passthrough_dit(config), [(tmp_path / "lora.safetensors", strength)])
    reference = torch.randn(1, 16, 1, 6, 8, generator=torch.Generator().manual_seed(0))
    cond = Conditioning(make_text(length=7, dim=DEMO_LLM_DIM, pooled_dim=64), reference=reference)
    latent = sample_latent(dit, cond, (1, 16, 5, 6, 8), seed=3)
    want = reference.clone()
    want[:, [0, 2]] = (1 - strength) * reference[:, [0, 2]] + strength * reference[:, [2, 0]]
    assert (latent - want).abs().max() < 0.03  # every frame; measured 0.012 (as without the LoRA)
    assert (latent - reference).abs().max() > 0.5  # and the change is large: the LoRA is visible


def test_the_demo_clip_retrieves_the_prior_a_prompt_names(tmp_path):
    """The hand-set retrieval CLIP and the three demo priors (what ./run.sh puts in input/magic141_priors): a prompt
    naming a prior's theme or its colour ranks that prior first, by a wide margin; a prompt with no word the demo
    knows scores 0 against every image (it says nothing, rather than something random)."""
    from comfyui_env import COMFYUI

    from magic141_core.demo.retrieval import write_demo_priors, write_demo_retrieval_clip
    from magic141_core.priors import ClipEmbedder, ImageIndex

    write_demo_retrieval_clip(tmp_path / "clip", COMFYUI / "comfy" / "sd1_tokenizer")
    write_demo_priors(tmp_path / "priors")
    embedder = ClipEmbedder(tmp_path / "clip")
    index = ImageIndex(tmp_path / "priors")
    index.update(embedder)
    expected = {"a quiet harbour at dawn with fishing boats": "dawn_harbour.png", "an orange sky": "dawn_harbour.png",
                "the camera glides along a forest path": "forest_path.png", "a green meadow": "forest_path.png",
                "neon city streets at night": "night_city.png", "a blue car": "night_city.png"}
    for prompt, name in expected.items():
        best, runner_up, _ = index.query(embedder.embed_text([prompt])[0], 3)
        assert best.path.name == name and best.score > 0.9 and best.score - runner_up.score > 0.5, (prompt, best)
    scores = [m.score for m in index.query(embedder.embed_text(["a cat on a sofa"])[0], 3)]
    assert scores == [0.0, 0.0, 0.0]
