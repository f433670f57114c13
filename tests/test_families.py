"""The three image-to-video families of one DiT against diffusers' HunyuanVideoTransformer3DModel on the same
weights: token replace (HunyuanVideo-I2V v2: `image_condition_type="token_replace"`) and concat without mask
(SkyReels-V1, 32 channels); and how a family is told from a file."""

from __future__ import annotations

import pytest
import torch
from conftest import make_text
from test_dit import PARITY_ATOL, diffusers_twin

from magic141_core import tiny
from magic141_core.dit.family import (
    HUNYUAN_I2V_V1,
    HUNYUAN_I2V_V2,
    HUNYUAN_T2V,
    MAGIC141,
    SKYREELS_V1,
    resolve_family,
)
from magic141_core.dit.loading import random_dit

diffusers = pytest.importorskip("diffusers")

V2 = dict(in_channels=16, image_condition="token_replace", guidance_embed=True, double_blocks=2, single_blocks=2)


def with_frames_replaced(model, frames: int):
    """diffusers' model with its TokenReplace blocks told that `frames` leading latent frames are the reference
    (its forward fixes first_frame_num_tokens to one frame): the independent reference for motion context."""
    for block in [*model.transformer_blocks, *model.single_transformer_blocks]:
        original = block.forward

        def forward(*args, original=original):
            *head, num_tokens = args
            return original(*head, num_tokens * frames)

        block.forward = forward
    return model


@pytest.mark.parametrize("frames", [1, 2], ids=["start-image", "2-frame-motion-context"])
def test_token_replace_matches_diffusers(frames):
    """HunyuanVideo-I2V v2: the reference frames are the input's first frames, their tokens modulated at timestep 0
    (without the embedded guidance, as the official code and diffusers), the text padded differently per sample."""
    config = tiny(**V2)
    ours = random_dit(config, seed=21)
    theirs = with_frames_replaced(diffusers_twin(config, ours.state_dict()), frames)
    g = torch.Generator().manual_seed(1)
    x, reference = torch.randn(2, 16, 4, 4, 6, generator=g), torch.randn(2, 16, frames, 4, 6, generator=g)
    text = make_text(batch=2, length=10, valid=[8, 5], seed=3)
    t, scale = torch.tensor([937.5, 625.0]), torch.tensor([6.0, 3.5])
    with torch.no_grad():
        got = ours(x, t, text.tokens, text.mask, text.pooled, reference=reference, guidance=scale)
        model_input = torch.cat([reference, x[:, :, frames:]], dim=2)  # the pipeline's latent_model_input
        want = theirs(model_input, t, text.tokens, text.mask, text.pooled, guidance=scale * 1000).sample
    assert (got[:, :, frames:] - want[:, :, frames:]).abs().max().item() <= PARITY_ATOL
    assert torch.equal(got[:, :, :frames], torch.zeros_like(got[:, :, :frames]))  # discarded: not denoised
    # the reference frames' timestep-0 modulation matters: without it (plain blocks) the rest differs
    plain = ours.config.__class__(**{**ours.config.__dict__, "image_condition": "none"})
    baseline = random_dit(plain, seed=21)
    with torch.no_grad():
        other = baseline(model_input, t, text.tokens, text.mask, text.pooled, guidance=scale)
    assert (other[:, :, frames:] - got[:, :, frames:]).abs().max() > 100 * PARITY_ATOL


def test_skyreels_concat_matches_diffusers():
    """SkyReels-V1: 32 input channels = [noisy ; reference zero-padded in time], no mask."""
    config = tiny(in_channels=32, guidance_embed=True)
    ours = random_dit(config, seed=22)
    theirs = diffusers_twin(config, ours.state_dict())
    g = torch.Generator().manual_seed(2)
    x, reference = torch.randn(1, 16, 3, 4, 4, generator=g), torch.randn(1, 16, 1, 4, 4, generator=g)
    text = make_text(valid=[6], seed=4)
    padded = torch.cat([reference, torch.zeros(1, 16, 2, 4, 4)], dim=2)
    with torch.no_grad():
        got = ours(x, torch.tensor([800.0]), text.tokens, text.mask, text.pooled, reference=reference,
                   guidance=torch.tensor([1.0]))
        want = theirs(torch.cat([x, padded], dim=1), torch.tensor([800.0]), text.tokens, text.mask, text.pooled,
                      guidance=torch.tensor([1000.0])).sample
    assert (got - want).abs().max().item() <= PARITY_ATOL


@pytest.mark.parametrize("channels, choice, stored, name, text_guidance, family, why", [
    (33, "auto", None, "hunyuan_video_image_to_video_720p_bf16.safetensors", False, HUNYUAN_I2V_V1, "33 input"),
    (33, "auto", None, "magic141.pth", True, MAGIC141, "text_guidance_in"),
    (33, "auto", "magic141", "anything.safetensors", False, MAGIC141, "stored"),
    (33, "auto", None, "magic141_DEMO_passthrough_dit.safetensors", "pack", MAGIC141, "before it stored families"),
    (32, "auto", None, "skyreels_hunyuan_i2v_bf16.safetensors", False, SKYREELS_V1, "32 input"),
    (16, "auto", None, "hunyuan_video_v2_replace_image_to_video_720p_bf16.safetensors", False, HUNYUAN_I2V_V2,
     "file name"),
    (16, "auto", None, "hunyuan_video_t2v_720p_bf16.safetensors", False, HUNYUAN_T2V, "nothing in the file"),
    (16, "HunyuanVideo-I2V v2", None, "hunyuan_video_t2v_720p_bf16.safetensors", False, HUNYUAN_I2V_V2, "chosen"),
    (16, "auto", "hunyuan_i2v_v2", "model.safetensors", False, HUNYUAN_I2V_V2, "stored"),
])
def test_the_family_is_read_from_the_file_and_says_why(channels, choice, stored, name, text_guidance, family, why):
    found, reason = resolve_family(tiny(in_channels=channels), name, choice, stored,
                                   text_guidance=text_guidance is True, pack_written=text_guidance == "pack")
    assert found == family and why in reason


def test_a_family_choice_against_the_channels_is_refused_naming_both():
    with pytest.raises(ValueError, match="has 33 input channels but HunyuanVideo-I2V v2 .* needs 16; .*Magic141, "
                                         "HunyuanVideo-I2V v1"):
        resolve_family(tiny(), "m.safetensors", "v2")
    found, reason = resolve_family(tiny(in_channels=16), "x.safetensors", "auto", diffusers_condition="token_replace")
    assert found == HUNYUAN_I2V_V2 and "config.json" in reason


# -- diffusers' HunyuanVideoImageToVideoPipeline, step by step -----------------------------------------------------

def diffusers_pipeline(transformer, vae, shift: float):
    """diffusers' image-to-video pipeline with no text encoders (embeddings are passed in) and the tiny VAE."""
    return diffusers.HunyuanVideoImageToVideoPipeline(
        text_encoder=None, tokenizer=None, transformer=transformer, vae=vae,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=shift), text_encoder_2=None, tokenizer_2=None,
        image_processor=None)


@pytest.mark.parametrize("family", ["v1", "v2"])
def test_every_step_matches_diffusers_image_to_video_pipeline(family):
    """Our sampler against diffusers' pipeline (latent_concat for v1, token_replace for v2) on the same tiny weights,
    noise, prompt embeddings and image latent, every step's latent within 1e-4. Documented differences, accounted for
    here: (1) diffusers starts from 0.999 noise + 0.001 x (image latent in every frame), we start from the noise:
    diffusers is given latents (noise - 0.001 x) / 0.999 so both start at the same point; (2) for latent_concat it
    returns the latent without its first frame (and its video without the first 4 frames): compared there;
    (3) the image latent is the VAE posterior's mode (diffusers' "argmax"), which we pass as the reference."""
    from PIL import Image
    from test_vae import diffusers_twin as vae_twin

    from magic141_core import Conditioning
    from magic141_core.sampling.noise import make_noise
    from magic141_core.sampling.sampler import sample_latent
    from magic141_core.vae.config import tiny_vae
    from magic141_core.vae.loading import random_vae

    v2 = family == "v2"
    config = tiny(**V2) if v2 else tiny(double_blocks=2, single_blocks=2)
    ours = random_dit(config, seed=23)
    transformer = diffusers_twin(config, ours.state_dict())
    vae = vae_twin(tiny_vae(), random_vae(tiny_vae(), seed=3).state_dict())
    steps, shift, guidance, seed, shape = 4, 7.0, 6.0 if v2 else 1.0, 11, (1, 16, 3, 4, 6)
    pipe = diffusers_pipeline(transformer, vae, shift)
    image = Image.fromarray((torch.rand(32, 48, 3, generator=torch.Generator().manual_seed(5)) * 255).byte().numpy())
    with torch.no_grad():
        pixels = pipe.video_processor.preprocess(image, 32, 48).unsqueeze(2)  # [1, 3, 1, 32, 48] in [-1, 1]
        reference = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor  # [1, 16, 1, 4, 6]
    text = make_text(length=9, valid=[7], seed=6)
    noise = make_noise(shape, seed)
    theirs = []
    pipe(image=image, prompt_embeds=text.tokens, pooled_prompt_embeds=text.pooled, prompt_attention_mask=text.mask,
         height=32, width=48, num_frames=9, num_inference_steps=steps, guidance_scale=guidance,
         latents=(noise - 0.001 * reference) / 0.999, output_type="latent",
         callback_on_step_end=lambda p, i, t, kw: theirs.append(kw["latents"].clone()) or {})
    mine = []
    result = sample_latent(ours, Conditioning(text, reference=reference), shape, steps=steps, shift=shift,
                           guidance=guidance, seed=seed, callback=lambda step: mine.append(step.x.clone()))
    assert len(mine) == len(theirs) == steps
    for i, (a, b) in enumerate(zip(mine, theirs)):
        assert (a - b).abs().max().item() <= 1e-4, f"step {i + 1}"
    if v2:  # the reference frame stays the clean image latent, exactly, as in diffusers
        assert torch.equal(result[:, :, :1], reference) and torch.equal(theirs[-1][:, :, :1], reference)
    assert result[:, :, 1:].abs().max() > 0.1  # a real latent, not a degenerate one


def test_int8_with_its_family_and_a_lora_take_the_token_replace_model(tmp_path):
    """A v2 file chosen as v2 (its name does not say so), quantized on load and saved int8, reloads as v2 by itself
    (the family stored), computes close to the float model, and a LoRA in official names changes it."""
    from safetensors.torch import save_file

    from magic141_core import save_dit
    from magic141_core.dit.loading import load_dit
    from magic141_core.weights.lora import load_loras_

    float_model = random_dit(tiny(**V2), seed=24)
    path = tmp_path / "model.safetensors"
    save_file(float_model.state_dict(), str(path))  # tensors only: auto would take it for text-to-video
    assert load_dit(path, dtype=torch.float32).family == HUNYUAN_T2V
    int8 = load_dit(path, dtype=torch.float32, int8=True, family="v2")
    save_dit(int8, tmp_path / "int8.safetensors")
    again = load_dit(tmp_path / "int8.safetensors", dtype=torch.float32)
    assert again.family == HUNYUAN_I2V_V2 and again.family_reason == "stored in the file"
    g = torch.Generator().manual_seed(3)
    x, reference = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 16, 1, 4, 4, generator=g)
    text = make_text(valid=[6], seed=5)
    args = (x, torch.tensor([700.0]), text.tokens, text.mask, text.pooled)
    with torch.no_grad():
        want = float_model(*args, reference=reference, guidance=torch.tensor([6.0]))
        got = again(*args, reference=reference, guidance=torch.tensor([6.0]))
    assert (got - want).abs().max() < 0.05 * want.abs().max()
    layer = float_model.double_blocks[0].img_attn_qkv
    lora = {"diffusion_model.double_blocks.0.img_attn_qkv.lora_A.weight": torch.randn(2, layer.in_features),
            "diffusion_model.double_blocks.0.img_attn_qkv.lora_B.weight": torch.randn(layer.out_features, 2)}
    save_file(lora, str(tmp_path / "lora.safetensors"))
    load_loras_(float_model, [(tmp_path / "lora.safetensors", 1.0)])
    with torch.no_grad():
        assert (float_model(*args, reference=reference, guidance=torch.tensor([6.0])) - want).abs().max() > 1e-3
