"""The DiT against diffusers' HunyuanVideoTransformer3DModel (latent_concat), and its own invariants."""

from __future__ import annotations

import diffusers  # the reference: required, so a broken install fails these tests instead of skipping them
import pytest
import torch
from conftest import make_text

from magic141_core import DiTConfig, tiny
from magic141_core.weights import from_diffusers, to_diffusers
from magic141_core.dit.loading import random_dit
from magic141_core.runtime.device import RANGE_SAFE, safe_dtype
from magic141_core.dit.attention import rope_table

PARITY_ATOL = 1e-4  # fp32 on CPU; the only differences are summation order in fused kernels (~1e-6 seen)


def diffusers_twin(config: DiTConfig, ours_sd: dict) -> torch.nn.Module:
    """diffusers' model of the same config holding our weights through the key map (strict load)."""
    model = diffusers.HunyuanVideoTransformer3DModel(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        num_attention_heads=config.num_heads,
        attention_head_dim=config.head_dim,
        num_layers=config.double_blocks,
        num_single_layers=config.single_blocks,
        num_refiner_layers=config.refiner_blocks,
        mlp_ratio=config.mlp_ratio,
        patch_size=config.patch_size[1],
        patch_size_t=config.patch_size[0],
        guidance_embeds=config.guidance_embed,
        text_embed_dim=config.text_dim,
        pooled_projection_dim=config.pooled_dim,
        rope_theta=config.rope_theta,
        rope_axes_dim=config.rope_axes,
        image_condition_type={"concat_mask": "latent_concat", "token_replace": "token_replace"}.get(
            config.image_condition),
    )
    model.load_state_dict(to_diffusers(ours_sd), strict=True)
    return model.eval()


def i2v_input(x, reference):
    """The 33-channel input the diffusers I2V pipeline builds: [noisy ; reference zero-padded ; first-frame mask]."""
    B, _, T, H, W = x.shape
    padded = torch.cat([reference, torch.zeros(B, 16, T - 1, H, W)], dim=2)
    mask = torch.cat([torch.ones(B, 1, 1, H, W), torch.zeros(B, 1, T - 1, H, W)], dim=2)
    return torch.cat([x, padded, mask], dim=1)


@pytest.mark.parametrize("guidance_embed", [False, True], ids=["no-guidance-embed", "guidance_in"])
def test_matches_diffusers_with_padded_text(guidance_embed):
    config = tiny(guidance_embed=guidance_embed, double_blocks=2, single_blocks=2, refiner_blocks=2)
    ours = random_dit(config, seed=5)
    theirs = diffusers_twin(config, ours.state_dict())
    g = torch.Generator().manual_seed(0)
    x, reference = torch.randn(2, 16, 3, 8, 12, generator=g), torch.randn(2, 16, 1, 8, 12, generator=g)
    text = make_text(batch=2, length=12, valid=[9, 5])  # both padded, by different amounts
    t, scale = torch.tensor([937.5, 625.0]), torch.tensor([6.0, 3.5])
    with torch.no_grad():
        got = ours(x, t, text.tokens, text.mask, text.pooled, reference=reference,
                   guidance=scale if guidance_embed else None)
        want = theirs(i2v_input(x, reference), t, text.tokens, text.mask, text.pooled,
                      guidance=scale * 1000 if guidance_embed else None).sample
    assert got.shape == want.shape == (2, 16, 3, 8, 12)
    assert (got - want).abs().max().item() <= PARITY_ATOL


def test_text_to_video_config_matches_diffusers():
    config = tiny(in_channels=16, guidance_embed=True)
    ours = random_dit(config, seed=6)
    theirs = diffusers_twin(config, ours.state_dict())
    x = torch.randn(1, 16, 2, 4, 4)
    text = make_text(valid=[6])
    with torch.no_grad():
        got = ours(x, torch.tensor([500.0]), text.tokens, text.mask, text.pooled, guidance=torch.tensor([6.0]))
        want = theirs(x, torch.tensor([500.0]), text.tokens, text.mask, text.pooled, guidance=torch.tensor([6000.0]))
    assert (got - want.sample).abs().max().item() <= PARITY_ATOL


def test_diffusers_key_round_trip_is_exact():
    config = tiny(guidance_embed=True, text_guidance_embed=True)
    sd = random_dit(config, seed=7).state_dict()
    converted = to_diffusers(sd)
    assert "x_embedder.proj.weight" in converted and "double_blocks.0.img_attn_qkv.weight" not in converted
    back = from_diffusers(converted)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_final_layer_halves_are_swapped_for_diffusers():
    sd = random_dit(tiny(), seed=8).state_dict()
    shift, scale = sd["final_layer.adaLN_modulation.1.weight"].chunk(2)
    d_scale, d_shift = to_diffusers(sd)["norm_out.linear.weight"].chunk(2)
    assert torch.equal(shift, d_shift) and torch.equal(scale, d_scale)


def test_padding_never_changes_the_video():
    """Extra padding tokens (any values) must not change the output: they are masked out of every attention."""
    model = random_dit(tiny(), seed=9)
    x, reference = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 16, 1, 4, 4)
    short = make_text(length=6, valid=[6])
    long = make_text(length=20, valid=[6])
    long.tokens[:, :6], long.pooled = short.tokens, short.pooled
    long.tokens[:, 6:] = 1e3  # garbage in the padding
    t = torch.tensor([800.0])
    with torch.no_grad():
        a = model(x, t, short.tokens, short.mask, short.pooled, reference=reference)
        b = model(x, t, long.tokens, long.mask, long.pooled, reference=reference)
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("native_bf16", [True, False], ids=["cpu-with-bf16-units", "cpu-without"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_every_compute_dtype_runs_and_stays_close_to_fp32(dtype, native_bf16, monkeypatch):
    """Both CPU kinds forced (the flags decide what fp16 becomes), so the test means the same on every machine."""
    import magic141_core.runtime.device as device

    monkeypatch.setattr(device, "cpu_half_is_fast", lambda half: native_bf16 and half == torch.bfloat16)
    reference_model = random_dit(tiny(), seed=10)
    model = random_dit(tiny(), seed=10, dtype=dtype)
    model.compute_dtype = dtype  # force half-precision activations even on a CPU that would pick fp32
    x, ref = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 16, 1, 4, 4)
    text = make_text(valid=[5])
    with torch.no_grad():
        want = reference_model(x, torch.tensor([700.0]), text.tokens, text.mask, text.pooled, reference=ref)
        got = model(x, torch.tensor([700.0]), text.tokens, text.mask, text.pooled, reference=ref)
    # fp16 is never computed (its range is too small for the 13B model): bf16 where native, else fp32
    expected = safe_dtype(torch.device("cpu"), dtype, RANGE_SAFE)
    assert expected == (torch.bfloat16 if dtype == torch.float16 and native_bf16 else
                        torch.float32 if dtype == torch.float16 else dtype)
    assert got.dtype == expected == model.activation_dtype and torch.isfinite(got).all()
    assert expected != torch.float16
    rel = ((got.float() - want).norm() / want.norm()).item()
    assert rel < {torch.float32: 1e-6, torch.bfloat16: 0.05, torch.float16: 0.01}[dtype if expected != torch.bfloat16 else expected]


def test_bf16_weights_compute_in_fp32_when_the_cpu_has_no_fast_bf16(monkeypatch):
    import magic141_core.runtime.device as device

    monkeypatch.setattr(device, "cpu_half_is_fast", lambda dtype: False)
    model = random_dit(tiny(), seed=11, dtype=torch.bfloat16)
    text = make_text(valid=[5])
    with torch.no_grad():
        out = model(torch.randn(1, 16, 1, 4, 4), torch.tensor([1000.0]), text.tokens, text.mask, text.pooled,
                    reference=torch.randn(1, 16, 1, 4, 4))
    assert out.dtype == torch.float32


def test_rope_table_is_built_once_per_shape():
    model = random_dit(tiny(), seed=12)
    text = make_text(valid=[5])
    rope_table.cache_clear()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(1, 16, 2, 4, 6), torch.tensor([900.0]), text.tokens, text.mask, text.pooled,
                  reference=torch.randn(1, 16, 1, 4, 6))
    info = rope_table.cache_info()
    assert (info.misses, info.hits) == (1, 2)  # one table per shape, reused by every later forward


def test_rope_rotates_video_tokens_only():
    cos, sin = rope_table((2, 2, 2), 3, (4, 14, 14), 256.0, torch.device("cpu"))
    assert cos.shape == (8 + 3, 32)
    assert torch.equal(cos[8:], torch.ones(3, 32)) and torch.equal(sin[8:], torch.zeros(3, 32))
    assert torch.equal(cos[0], torch.ones(32))  # position (0, 0, 0) is not rotated
    assert not torch.equal(cos[7], torch.ones(32))


def test_config_is_inferred_from_the_state_dict():
    config = tiny(double_blocks=2, single_blocks=3, guidance_embed=True, text_guidance_embed=True)
    sd = random_dit(config).state_dict()
    assert DiTConfig.from_state_dict(sd) == config
    assert DiTConfig.from_state_dict(random_dit(tiny(in_channels=16)).state_dict()).in_channels == 16


def test_13b_config_has_the_paper_sizes():
    with torch.device("meta"):
        from magic141_core import Magic141DiT, full_13b

        model = Magic141DiT(full_13b(text_guidance_embed=True))
    params = sum(p.numel() for p in model.parameters())
    assert 12.5e9 < params < 13.1e9  # model.md: 12.8 B
    assert model.img_in.proj.weight.shape == (3072, 33, 1, 2, 2)


@pytest.mark.parametrize(
    "x_shape, ref_shape, message",
    [
        ((1, 16, 2, 5, 4), (1, 16, 1, 5, 4), "multiples of 16"),
        ((1, 4, 2, 4, 4), (1, 16, 1, 4, 4), r"latent \[B, 16"),
        ((1, 16, 2, 4, 4), (1, 16, 1, 4, 6), "reference latent must be"),
        ((1, 16, 2, 4, 4), None, "needs the reference latent"),
    ],
)
def test_bad_shapes_raise_clear_errors(tiny_dit, x_shape, ref_shape, message):
    text = make_text(valid=[5])
    reference = None if ref_shape is None else torch.randn(ref_shape)
    with pytest.raises(ValueError, match=message):
        tiny_dit(torch.randn(x_shape), torch.tensor([900.0]), text.tokens, text.mask, text.pooled, reference=reference)
