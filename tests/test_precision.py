"""fp16 at the real models' activation ranges, the per-device dtype policy, and the finite-output check of every
stage (transformer step, VAE decode, text encoders, long-video window, Save MP4): an error, never a black video."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import make_text, run_node

from magic141_core import Conditioning, sample_latent, tiny
from magic141_core.dit.loading import random_dit
from magic141_core.runtime.device import RANGE_SAFE, compute_dtype_for
from magic141_core.runtime.finite import NonFiniteOutput
from magic141_core.video.long_video import CoreFrameVAE, LongVideoSettings, generate_long_video
from magic141_core.vae import Tiling, random_vae, tiny_vae
from magic141_core.video.mp4 import Mp4Writer

DIT_RANGE = 1e5  # hidden activations of the 13B HunyuanVideo DiT (issue 18's reproduction)
SHAPE = (1, 16, 2, 4, 4)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def dit_at_real_range(dtype: torch.dtype, seed: int = 1):
    """A tiny DiT whose patch embedding outputs ~1e5, like the 13B model's hidden states."""
    model = random_dit(tiny(), seed=seed)
    with torch.no_grad():
        model.img_in.proj.weight.mul_(DIT_RANGE)
        model.img_in.proj.bias.mul_(DIT_RANGE)
    return model.to(dtype)


def cond() -> Conditioning:
    reference = torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    return Conditioning(positive=make_text(valid=[7], seed=2), reference=reference)


# -- fp16 at the real range: the same video as fp32 ----------------------------------------------------------------


def test_fp16_dit_at_the_real_activation_range_samples_the_fp32_latent():
    fp16 = dit_at_real_range(torch.float16)
    with torch.no_grad():  # the hazard is real: computed in fp16, the patch embedding alone overflows
        tokens = fp16.img_in(torch.randn(1, 33, 2, 4, 4, generator=torch.Generator().manual_seed(0)).half())
    assert not torch.isfinite(tokens).all()
    fp16.compute_dtype = torch.float16  # even asked for explicitly, fp16 is not what it computes in
    assert fp16.activation_dtype in RANGE_SAFE
    want = sample_latent(dit_at_real_range(torch.float32), cond(), SHAPE, steps=4, seed=3)
    got = sample_latent(fp16, cond(), SHAPE, steps=4, seed=3)
    assert torch.isfinite(got).all() and want.abs().max() > 1
    assert rel(got, want) < 1e-2  # measured 3e-3 (bf16 compute) on a CPU with BF16 units


def test_fp16_vae_decode_at_a_large_activation_range_matches_fp32():
    """The decoder's first conv outputs ~2.7e5 here (past fp16's 65504; weights x 1e3 still fit fp16, the latent
    x 100 does the rest); decoded from fp16 weights it stays the fp32 video."""
    vae = random_vae(tiny_vae(), seed=3)
    with torch.no_grad():
        vae.post_quant_conv.weight.mul_(1e3)
        vae.post_quant_conv.bias.mul_(1e3)
    z = 100 * torch.randn(1, 16, 2, 2, 3, generator=torch.Generator().manual_seed(8))
    want = vae.decode(z, Tiling(chunk_frames=1))
    half = vae.to(torch.float16)
    with torch.no_grad():  # the hazard is real: in fp16 the first conv overflows
        assert not torch.isfinite(half.post_quant_conv(z.half())).all()
    half.compute_dtype = torch.float16
    assert half.activation_dtype in RANGE_SAFE
    got = half.decode(z, Tiling(chunk_frames=1))
    assert torch.isfinite(got).all() and rel(got, want) < 1e-2  # measured 4e-3 (bf16 compute)


@pytest.mark.parametrize(("capability", "expected"), [((7, 0), torch.float32), ((7, 5), torch.float32),
                                                      ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_fp16_weights_compute_in_bf16_only_on_gpus_that_have_it(monkeypatch, capability, expected):
    """V100 (7.0) and T4 / RTX 20xx (7.5) have no bf16: fp32 there; Ampere (8.x) and newer: bf16. No GPU here, so
    the device query is what is replaced."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cuda = torch.device("cuda", 0)
    assert compute_dtype_for(cuda, torch.float16, RANGE_SAFE) == expected
    assert compute_dtype_for(cuda, torch.float16) == torch.float16  # the text encoders keep their official fp16
    assert compute_dtype_for(cuda, torch.float32, RANGE_SAFE) == torch.float32


@pytest.mark.parametrize("native_bf16", [True, False])
def test_fp16_weights_on_a_cpu(monkeypatch, native_bf16):
    import magic141_core.runtime.device as device

    monkeypatch.setattr(device, "cpu_half_is_fast", lambda dtype: native_bf16)
    expected = torch.bfloat16 if native_bf16 else torch.float32
    assert compute_dtype_for(torch.device("cpu"), torch.float16, RANGE_SAFE) == expected


# -- a non-finite output stops the stage with its own error, and nothing is written ----------------------------------


def test_a_nan_transformer_step_is_an_error_naming_the_stage_dtype_and_fix():
    model = random_dit(tiny(), seed=1)
    with torch.no_grad():
        model.final_layer.linear.bias[0] = float("nan")
    with pytest.raises(NonFiniteOutput, match=r"the transformer \(denoising at timestep 1000\) .*NaN.* computing in "
                                              r"float32\. Fix: load the transformer with weight_dtype bf16 or fp32"):
        sample_latent(model, cond(), SHAPE, steps=4, seed=3)


def test_a_nan_vae_decode_is_an_error():
    vae = random_vae(tiny_vae(), seed=3)
    with torch.no_grad():
        vae.decoder.conv_out.conv.bias[0] = float("inf")
    with pytest.raises(NonFiniteOutput, match=r"the VAE decoder .*inf.* computing in float32\. Fix: decode in fp32"):
        vae.decode(torch.randn(1, 16, 2, 2, 3), Tiling(chunk_frames=1))


class NaNFramesVAE(CoreFrameVAE):
    """A VAE whose decoder output turns NaN from window `bad` on (as an fp16-overflowing native VAE would)."""

    def __init__(self, vae, bad: int):
        super().__init__(vae)
        self.bad, self.windows = bad, 0

    def decode_frames(self, latent):
        self.windows += 1
        for chunk in super().decode_frames(latent):
            yield chunk * float("nan") if self.windows > self.bad else chunk


class OneTextEncoders:
    def encode(self, prompt, image, negative=False):
        return Conditioning(positive=make_text(valid=[6], seed=1))


@pytest.mark.parametrize("bad", [0, 1])
def test_a_nan_long_video_window_is_an_error_and_is_never_written(tmp_path, bad):
    dit, vae = random_dit(tiny(), seed=1), NaNFramesVAE(random_vae(tiny_vae(), seed=2), bad)
    path = tmp_path / "long.mp4"
    with pytest.raises(NonFiniteOutput, match=f"long-video window {bad + 1} of 2 \\(VAE decode\\)"):
        with Mp4Writer(path, 24, keep_partial=True) as writer:
            generate_long_video(dit, OneTextEncoders(), vae, torch.rand(1, 32, 32, 3), ["a", "b"], 5, writer.write,
                                LongVideoSettings(context_frames=1))
    assert not path.exists()
    partial = sorted(p.name for p in tmp_path.iterdir())
    # a NaN first window leaves nothing; a NaN second window leaves the good first one, named *_partial (as a stop)
    assert partial == ([] if bad == 0 else ["long_partial.mp4"])


def _scaled_copy(path, out, factors: dict[str, float]):
    from magic141_core.weights import read_state_dict, save_safetensors

    sd = read_state_dict(path)
    for key, factor in factors.items():
        sd[key] = sd[key] * factor
    save_safetensors(sd, out)
    return out


def _encoders(tiny_enc, llm, vision, clip, dtype, cache=None):
    from magic141_core.text import Magic141Encoders

    return Magic141Encoders.from_comfyui_files(llm, vision, clip, tiny_enc["llama_tok_dir"], tiny_enc["clip_tok_dir"],
                                               device="cpu", dtype=dtype, cache_dir=cache)


@pytest.fixture(scope="module")
def tiny_enc(tmp_path_factory):
    from tiny_llava import build_tiny_encoders

    return build_tiny_encoders(tmp_path_factory.mktemp("encoders"))


# the residual streams of the real encoders: Llama-3-8B's "massive activations" reach ~2e3, CLIP ViT-L's ~1e2
# (Sun et al. 2024, "Massive Activations in Large Language Models"); fp16 holds both, so the encoders keep fp16
LLM_RANGE, CLIP_RANGE = 2e3, 1e2


def test_fp16_llava_and_clip_at_the_real_activation_range_match_fp32(tiny_enc, tmp_path):
    f = tiny_enc["files"]
    embed = tiny_enc["llava"].model.language_model.embed_tokens.weight
    clip_embed = tiny_enc["clip"].get_input_embeddings().weight  # transformers 4 and 5 nest CLIP differently
    llm = _scaled_copy(f["llava_llama3_fp16"], tmp_path / "llm.safetensors",
                       {"model.embed_tokens.weight": LLM_RANGE / embed.abs().max().item()})
    vision = _scaled_copy(f["llava_llama3_vision"], tmp_path / "vision.safetensors",
                          {"vision_model.pre_layrnorm.weight": CLIP_RANGE, "vision_model.pre_layrnorm.bias": CLIP_RANGE})
    clip_factor = CLIP_RANGE / clip_embed.abs().max().item()
    clip = _scaled_copy(f["clip_l"], tmp_path / "clip.safetensors",
                        {"text_model.embeddings.token_embedding.weight": clip_factor,
                         "text_model.embeddings.position_embedding.weight": clip_factor})
    image = torch.rand(1, 61, 97, 3, generator=torch.Generator().manual_seed(3))
    want = _encoders(tiny_enc, llm, vision, clip, torch.float32).encode("a red car", image).positive
    got = _encoders(tiny_enc, llm, vision, clip, torch.float16).encode("a red car", image).positive
    assert want.tokens.abs().max() > LLM_RANGE / 4  # the range reaches the output (hidden state -3)
    for a, b in ((got.tokens, want.tokens), (got.pooled, want.pooled)):
        assert torch.isfinite(a).all() and rel(a, b) < 1e-2


def test_nan_encoder_output_is_an_error_and_is_not_cached(tiny_enc, tmp_path):
    # finite weights (a file holding NaN is refused while loading) whose output overflows fp16: the last norm's gain
    # at 3e4 (fp16 holds it) times normalised values of a few units passes fp16's 65504
    from safetensors.torch import load_file

    f = tiny_enc["files"]
    gain = load_file(f["clip_l"])["text_model.final_layer_norm.weight"]
    clip = _scaled_copy(f["clip_l"], tmp_path / "clip_l_overflow.safetensors",
                        {"text_model.final_layer_norm.weight": 3e4 / gain.abs().max().item()})
    encoders = _encoders(tiny_enc, f["llava_llama3_fp16"], f["llava_llama3_vision"], clip, torch.float16,
                         cache=tmp_path / "cache")
    with pytest.raises(NonFiniteOutput, match=r"the CLIP-L text encoder .* computing in float16\. Fix: load the "
                                              r"encoders with dtype fp32 or bf16"):
        encoders.encode_text("a red car")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_save_mp4_refuses_nan_frames_and_writes_nothing(pack, comfy_base):
    images = torch.rand(3, 16, 16, 3)
    images[1, 4, 4, 0] = float("nan")
    before = set((comfy_base / "output").rglob("*"))
    with pytest.raises(RuntimeError, match=r"the frames given to Save MP4 \(from VAE Decode\) .*NaN in 1 of 2304"):
        run_node(pack.NODE_CLASS_MAPPINGS["Magic141SaveMP4"], images=images, fps=24.0, quality=19,
                 filename_prefix="nan/clip")
    assert set((comfy_base / "output").rglob("*")) == before


def test_model_loader_tooltip_states_the_compute_dtype_on_this_device(pack):
    tooltip = pack.NODE_CLASS_MAPPINGS["Magic141ModelLoader"].INPUT_TYPES()["required"]["weight_dtype"][1]["tooltip"]
    fp16 = {torch.bfloat16: "bf16", torch.float32: "fp32"}[compute_dtype_for(torch.device("cpu"), torch.float16,
                                                                               RANGE_SAFE)]
    assert "never computes in fp16" in tooltip and "(cpu): bf16 weights compute in" in tooltip
    assert f"fp16 weights compute in {fp16}" in tooltip


@pytest.mark.parametrize("stage", ["vae"])  # "dit" works the same (one more minute of CI): its step fails earlier
def test_the_cli_stops_on_a_nan_stage_with_one_line_and_writes_no_video(demo_models, tmp_path, stage):
    """End to end with real files: a transformer or VAE file holding a NaN is refused while loading (naming the
    tensor; issue 20), exit 2, one line, no MP4. (Each stage's own finite-output check is tested above.)"""
    from comfyui_env import COMFYUI, REPO

    from safetensors.torch import save_file

    from magic141_core.weights import read_metadata, read_state_dict

    key = {"dit": "final_layer.linear.bias", "vae": "decoder.conv_out.conv.bias"}[stage]
    sd = read_state_dict(demo_models[stage])
    sd[key] = sd[key].clone()
    sd[key][0] = float("nan")
    models = {**demo_models, stage: tmp_path / f"nan_{stage}.safetensors"}
    # written as a foreign tool would (our own writer refuses NaN)
    save_file({k: v.contiguous() for k, v in sd.items()}, models[stage], read_metadata(demo_models[stage]))
    out = tmp_path / "clip.mp4"
    args = ["generate", "--image", COMFYUI / "input" / "example.png", "--prompt", "a lake", "--frames", 5,
            "--resolution", "64x48", "--out", out, "--dit", models["dit"], "--vae", models["vae"],
            "--llava", models["llava"], "--llava-vision", models["vision"], "--clip-l", models["clip_l"],
            "--comfyui", COMFYUI]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "magic141_core", *map(str, args)], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 2 and f"tensor '{key}' holds NaN or infinite values" in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.glob("*.mp4"))
