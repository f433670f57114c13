"""Native MODEL and CONDITIONING interop, in-process against the real upstream ComfyUI: our Model Loader's MODEL in
native KSampler / ModelSamplingSD3, a native HunyuanVideo-I2V MODEL (Load Diffusion Model) in Magic141 Sampler, and
CONDITIONING both ways. The weights are a tiny DiT that ComfyUI's own model detection accepts (head dim 128, CLIP-L
pooled 768, RoPE split 16/56/56), so ComfyUI's HunyuanVideo implementation runs on exactly the same weights."""

from __future__ import annotations

import pytest
import torch
from conftest import make_text, run_node

from magic141_core import Conditioning, save_dit, tiny
from magic141_core.dit.loading import random_dit

NATIVE_TINY = dict(hidden_size=256, num_heads=2, refiner_blocks=2, pooled_dim=768, rope_axes=(16, 56, 56), text_dim=32)
SHAPE = (1, 16, 3, 4, 6)  # 9 frames of 48 x 32 pixels


@pytest.fixture(scope="module")
def native_files(comfy_base):
    """The same tiny I2V weights as a file for both loaders, and a 16-channel text-to-video one."""
    folder = comfy_base / "models" / "diffusion_models"
    save_dit(random_dit(tiny(**NATIVE_TINY), seed=11), folder / "native_tiny_i2v.safetensors")
    save_dit(random_dit(tiny(**NATIVE_TINY, in_channels=16), seed=12), folder / "native_tiny_t2v.safetensors")
    return "native_tiny_i2v.safetensors", "native_tiny_t2v.safetensors"


def cond(batch: int = 1, valid=(7,), seed: int = 2) -> Conditioning:
    text = make_text(batch=batch, length=9, valid=list(valid), dim=32, pooled_dim=768, seed=seed)
    reference = torch.randn(1, 16, 1, *SHAPE[-2:], generator=torch.Generator().manual_seed(seed + 10))
    return Conditioning(positive=text, negative=make_text(batch, 9, [5] * batch, 32, 768, seed + 1),
                        reference=reference)


def ours(pack, name, **options):
    return run_node(pack.NODE_CLASS_MAPPINGS["Magic141ModelLoader"], model_name=name, weight_dtype="fp32",
                    **options)[0]


def native(name):
    import nodes

    return nodes.UNETLoader().load_unet(name, "default")[0]


def magic_sample(pack, model, conditioning, batch=1, seed=5, negative=None):
    latent = {"samples": torch.zeros(batch, *SHAPE[1:])}
    return run_node(pack.NODE_CLASS_MAPPINGS["Magic141Sampler"], model=model, conditioning=conditioning,
                    latent=latent, steps=4, shift=5.0, guidance=1.0, seed=seed,
                    **({} if negative is None else {"negative": negative}))[0]["samples"]


def ksample(model, positive, negative, batch=1, seed=5):
    import nodes

    latent = {"samples": torch.zeros(batch, *SHAPE[1:])}
    return nodes.KSampler().sample(model, seed, 4, 1.0, "euler", "simple", positive, negative, latent)[0]["samples"]


def native_pair(pack, c: Conditioning):
    from Magic141.nodes.native import to_native  # the pack's own module (as ComfyUI loads it)

    return (to_native(c.positive, c.reference, SHAPE[2]), to_native(c.negative, c.reference, SHAPE[2]))


@pytest.mark.parametrize("batch, valid", [(1, (7,)), (2, (9, 4))])
def test_native_ksampler_on_our_model_equals_magic141_sampler(pack, native_files, batch, valid):
    model, c = ours(pack, native_files[0]), cond(batch, valid)
    positive, negative = native_pair(pack, c)
    assert positive[0][0].shape[1] == max(valid)  # padding cropped
    assert ("attention_mask" in positive[0][1]) == (len(set(valid)) > 1)
    expected = magic_sample(pack, model, c, batch)
    got = ksample(model, positive, negative, batch)
    assert got.shape == expected.shape and torch.isfinite(got).all()
    assert (got - expected).abs().max() <= 1e-5


def test_native_ksampler_cfg_with_prompts_of_different_lengths_equals_magic141_cfg(pack, native_files):
    """Native KSampler's classifier-free guidance (cfg 3; positive 8 tokens, negative 4, each cropped) equals
    Magic141 Sampler's real CFG at guidance 3 (one batched forward of both, padding masked)."""
    import nodes

    model, c = ours(pack, native_files[0]), cond(1, (8,), seed=9)
    c.negative = make_text(1, 9, [4], 32, 768, seed=10)
    positive, negative = native_pair(pack, c)
    latent = {"samples": torch.zeros(SHAPE)}
    got = nodes.KSampler().sample(model, 5, 4, 3.0, "euler", "simple", positive, negative, latent)[0]["samples"]
    expected = run_node(pack.NODE_CLASS_MAPPINGS["Magic141Sampler"], model=model, conditioning=c, latent=latent,
                        steps=4, shift=5.0, guidance=3.0, seed=5)[0]["samples"]
    assert (got - expected).abs().max() <= 3e-5  # fp32 rounding, amplified by cfg 3 (values up to ~8)


def test_model_sampling_sd3_shift_5_and_native_lora_free_path_keep_the_result(pack, native_files):
    import comfy_extras.nodes_model_advanced as advanced

    model, c = ours(pack, native_files[0]), cond()
    positive, negative = native_pair(pack, c)
    (shifted,) = advanced.ModelSamplingSD3().patch(model, 5.0)
    (shift_7,) = advanced.ModelSamplingSD3().patch(model, 7.0)
    base = ksample(model, positive, negative)
    assert (ksample(shifted, positive, negative) - base).abs().max() <= 1e-6
    assert (ksample(shift_7, positive, negative) - base).abs().max() > 1e-3  # the patch really reaches our model


def test_magic141_sampler_on_a_native_hunyuan_i2v_model_equals_ours(pack, native_files):
    ours_model, native_model = ours(pack, native_files[0]), native(native_files[0])
    assert type(native_model.model).__name__ == "HunyuanVideoI2V"
    for batch, valid in ((1, (7,)), (2, (9, 4))):
        c = cond(batch, valid, seed=3)
        expected = magic_sample(pack, ours_model, c, batch)
        got = magic_sample(pack, native_model, c, batch)
        assert (got - expected).abs().max() <= 1e-5, (batch, valid)
    # and native KSampler on ComfyUI's own DiT agrees (one sample, cropped; ComfyUI's HunyuanVideo default is shift 7)
    import comfy_extras.nodes_model_advanced as advanced

    (shift_5,) = advanced.ModelSamplingSD3().patch(native_model, 5.0)
    c = cond(1, (7,), seed=4)
    positive, negative = native_pair(pack, c)
    assert (ksample(shift_5, positive, negative) - magic_sample(pack, ours_model, c)).abs().max() <= 1e-5


def test_native_conditioning_into_magic141_sampler(pack, native_files):
    model, c = ours(pack, native_files[0]), cond(seed=6)
    positive, negative = native_pair(pack, c)
    expected = magic_sample(pack, model, c)
    assert (magic_sample(pack, model, positive, negative=negative) - expected).abs().max() <= 1e-5  # scale round trip


def test_int8_and_block_swap_options_work_behind_the_native_model(pack, native_files):
    model, c = ours(pack, native_files[0], int8="quantize on load", block_swap=1), cond()
    positive, negative = native_pair(pack, c)
    expected = magic_sample(pack, model, c)
    # int8 layers compute in bf16 where the CPU has bf16 units: the two wirings then agree to bf16 precision
    # (0.4 % of the range on ComfyUI 0.30.0, whose wrapper hands the DiT its inputs in another dtype), not 1e-5
    assert (ksample(model, positive, negative) - expected).abs().max() <= 1e-2 * expected.abs().max()
    float_result = magic_sample(pack, ours(pack, native_files[0]), c)
    assert (expected - float_result).abs().max() < 0.05 * float_result.abs().max()  # int8 tolerance


def test_other_model_families_get_a_message_naming_them(pack, native_files):
    t2v = native(native_files[1])
    with pytest.raises(ValueError, match="Magic141 Sampler got a HunyuanVideo model with 16 input channels "
                                         "\\(text-to-video, or HunyuanVideo-I2V v2, which ComfyUI cannot tell apart"):
        magic_sample(pack, t2v, cond())
    with pytest.raises(ValueError, match="got HunyuanVideo text-to-video \\(text-to-video, 16 input channels\\): it "
                                         "has no image path. If the file is HunyuanVideo-I2V v2"):
        magic_sample(pack, ours(pack, native_files[1]), cond())


@pytest.mark.parametrize("extras, message", [
    ({"guiding_frame_index": 0}, "comes from HunyuanImageToVideo 'v2 \\(replace\\)' but the model is Magic141 "
                                 "\\(concat \\+ mask, 33 input channels\\); set HunyuanImageToVideo's guidance_type to "
                                 "'v1 \\(concat\\)'"),
    ({"ref_latent": torch.zeros(1)}, "HunyuanImageToVideo 'custom'"),
    ({"pooled_output": None}, "not HunyuanVideo conditioning"),
])
def test_bad_native_conditioning_is_named(pack, native_files, extras, message):
    positive, _ = native_pair(pack, cond())
    positive = [[positive[0][0], {**positive[0][1], **extras}]]
    with pytest.raises(ValueError, match=message):
        magic_sample(pack, ours(pack, native_files[0]), positive)
    with pytest.raises(ValueError, match="holds 2 conditionings"):
        magic_sample(pack, ours(pack, native_files[0]), native_pair(pack, cond())[0] * 2)


class PoolVAE:
    """A deterministic stand-in `FrameVAE` (8x average pool / nearest upsample, 4x in time)."""

    def encode_frames(self, frames, seed):
        pooled = torch.nn.functional.avg_pool2d(frames[::4].movedim(-1, 1), 8)  # [L, 3, h, w]: frames 0, 4, 8, ...
        return pooled.repeat(1, 6, 1, 1)[:, :16].movedim(0, 1)[None]  # [1, 16, L, h, w]

    def decode_frames(self, latent):
        frames = latent[0, :3].movedim(0, -1).repeat_interleave(4, 0)[3:]  # [1 + 4(T-1), h, w, 3]
        yield torch.sigmoid(frames.repeat_interleave(8, 1).repeat_interleave(8, 2))


def test_long_video_on_a_native_model_equals_ours_per_window(pack, native_files):
    from Magic141.magic141_core.video.long_video import LongVideoSettings, generate_long_video
    from Magic141.nodes.host import native_model
    from Magic141.nodes.native import FixedEncoders

    c = cond(seed=8)
    prior = torch.rand(1, 32, 48, 3, generator=torch.Generator().manual_seed(1))
    runs = []
    for model in (ours(pack, native_files[0]), native(native_files[0])):
        latents = []
        generate_long_video(native_model.velocity_model(model, "test"), FixedEncoders(c), PoolVAE(), prior, ["a"] * 3,
                            9, lambda frames: None, LongVideoSettings(seed=5),
                            on_step=lambda k, step: latents.append(step.x) if step.index == step.total - 1 else None)
        runs.append(latents)
    assert len(runs[0]) == len(runs[1]) == 3
    for window, (a, b) in enumerate(zip(*runs)):
        assert (a - b).abs().max() <= 1e-5, window


def test_long_video_needs_encoders_or_a_native_conditioning(pack, native_files):
    node = pack.NODE_CLASS_MAPPINGS["Magic141LongVideo"]
    inputs = dict(model=ours(pack, native_files[0]), vae=None, prior=torch.rand(1, 32, 48, 3), prompts="a",
                  duration=1, unit="windows", window_length=5, context_frames=1, resolution="custom", width=48,
                  height=32, steps=1,
                  shift=5.0, guidance=1.0, seed=1, color_match=True, noise_augmentation=0.0, anchor="prior",
                  fps=24.0, quality=19, filename_prefix="never")
    with pytest.raises(ValueError, match="connect either encoders .* or a native conditioning"):
        run_node(node, **inputs)
    with pytest.raises(ValueError, match="connect either encoders"):
        run_node(node, **inputs, encoders=object(), conditioning=native_pair(pack, cond())[0])


def test_a_multi_frame_reference_is_laid_out_as_native_hunyuan_image_to_video(pack, native_files, demo_models):
    """Motion context: a 5-frame context is 2 latent frames. Native HunyuanImageToVideo (v1 concat) given those 5
    frames as start_image, through ComfyUI's own HunyuanVideoI2V.concat_cond, makes exactly the reference and mask
    channels that dit.model.image_to_video_input builds from the same latent: reference in latent frames 0-1, zeros
    after, mask 1 on frames 0-1."""
    import comfy.sd
    import comfy.utils
    from comfy_extras.nodes_hunyuan import HunyuanImageToVideo

    from magic141_core.dit.model import image_to_video_input
    from magic141_core.vae import scale_latent

    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(demo_models["vae"])))
    frames = torch.rand(5, 32, 48, 3, generator=torch.Generator().manual_seed(3))
    positive, latent = HunyuanImageToVideo.execute([[torch.zeros(1, 4, 32), {}]], vae, 48, 32, 9, 1, "v1 (concat)",
                                                   start_image=frames).args
    values = positive[0][1]
    noise = torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(4))
    native_channels = native(native_files[0]).model.concat_cond(noise=noise, device="cpu", **values)
    assert latent["samples"].shape == noise.shape and values["concat_latent_image"].shape[2] == 2
    ours = image_to_video_input(noise, scale_latent(values["concat_latent_image"]))[:, 16:]
    assert ours.shape == native_channels.shape == (1, 17, 3, 4, 6)
    assert torch.allclose(ours, native_channels, atol=1e-6)
    assert ours[:, 16, :2].eq(1).all() and ours[:, 16, 2:].eq(0).all() and ours[:, :16, 2:].eq(0).all()
