"""The 4-step shifted flow-matching sampler, guidance modes, and a tiny end-to-end run."""

from __future__ import annotations

import pytest
import torch
from conftest import make_text

from magic141_core import Conditioning, flow_sigmas, latent_shape, sample_latent, tiny
from magic141_core.dit.loading import random_dit
from magic141_core.sampling.schedule import timesteps
from magic141_core.sampling.euler import euler_sample
from magic141_core.sampling.noise import (
    INITIAL_NOISE,
    POSTERIOR_SAMPLE,
    PURPOSES,
    make_noise,
    stream_noise,
    stream_seed,
)


def test_four_step_shift_five_timesteps_are_the_official_ones():
    ts = timesteps(flow_sigmas(4, 5.0))
    assert ts.dtype == torch.float32
    assert ts.tolist()[0] == 1000.0 and ts.tolist()[1] == 937.5 and ts.tolist()[3] == 625.0
    assert ts[2].item() == pytest.approx(2500 / 3, abs=1e-4)
    assert flow_sigmas(4, 5.0)[-1].item() == 0.0


def test_shift_one_is_the_plain_linear_schedule():
    assert torch.allclose(flow_sigmas(5, 1.0), torch.linspace(1, 0, 6))


@pytest.mark.parametrize("steps, shift", [(0, 5.0), (-1, 5.0), (4, float("nan")), (4, 0.0)])
def test_bad_schedule_arguments(steps, shift):
    with pytest.raises(ValueError):
        flow_sigmas(steps, shift)


def test_euler_step_is_the_official_update():
    """x <- x + v * (sigma_next - sigma); with a constant velocity v the result is noise - v (sigma 1 -> 0)."""
    noise = torch.randn(1, 16, 1, 2, 2)
    v = torch.randn_like(noise)
    seen = []
    out = euler_sample(lambda x, s: v, noise, flow_sigmas(4), callback=seen.append)
    assert torch.allclose(out, noise - v, atol=1e-6)
    assert [s.index for s in seen] == [0, 1, 2, 3]
    assert torch.allclose(seen[0].denoised, noise - v, atol=1e-6)  # x0 estimate = x - sigma * v at sigma 1


def test_noise_is_seeded_on_cpu():
    assert torch.equal(make_noise((2, 3), 39), make_noise((2, 3), 39))
    assert not torch.equal(make_noise((2, 3), 39), make_noise((2, 3), 40))


def test_every_draw_has_its_own_stream_and_a_seed_repeats_them():
    """The random-number policy: streams named by (seed, purpose, window) are uncorrelated (|r| < 0.02 on 64k
    values: 5 standard errors), including a window of one seed against the next seed's (the old seed + k scheme made
    them equal), and each draw is the same on every call. The old policy, one generator seed for every purpose, is
    what this catches: r = 1."""
    draws = {(seed, purpose, window): stream_noise((65536,), seed, purpose, window)
             for seed in (39, 40) for purpose in PURPOSES for window in (0, 1, 2)}
    r = torch.corrcoef(torch.stack(list(draws.values())))
    assert r[~torch.eye(len(draws), dtype=torch.bool)].abs().max() < 0.02
    assert all(torch.equal(stream_noise((65536,), *key), value) for key, value in list(draws.items())[::5])
    same = torch.corrcoef(torch.stack([make_noise((65536,), 39), make_noise((65536,), 39)]))[0, 1]
    assert same > 0.999  # sharing a seed is what correlation exposes
    # window 0's initial noise is the plain seed, as ComfyUI's KSampler draws it; every other stream is hashed
    assert stream_seed(39, INITIAL_NOISE, 0) == 39
    assert torch.equal(draws[(39, INITIAL_NOISE, 0)], make_noise((65536,), 39))
    assert len({stream_seed(39, p, w) for p in PURPOSES for w in range(50)}) == 150
    with pytest.raises(ValueError, match="purpose must be one of"):
        stream_seed(39, "dropout")
    with pytest.raises(ValueError, match="window must be a whole number >= 0"):
        stream_seed(39, POSTERIOR_SAMPLE, -1)


def test_guidance_one_is_one_forward_per_step(tiny_dit, tiny_cond, count_forwards):
    calls = count_forwards(tiny_dit)
    sample_latent(tiny_dit, tiny_cond, (1, 16, 2, 4, 4), steps=4, guidance=1.0)
    assert calls == [1, 1, 1, 1]


def test_cfg_is_one_batched_forward_per_step_and_matches_two_forwards(tiny_dit, tiny_cond, count_forwards):
    reference = tiny_cond.reference
    calls = count_forwards(tiny_dit)
    got = sample_latent(tiny_dit, tiny_cond, (1, 16, 2, 4, 4), steps=4, guidance=3.0, seed=1)
    assert calls == [2, 2, 2, 2]  # four forwards, each with [uncond ; cond]

    def two_forwards(x, sigma):  # the official sampler's unbatched CFG
        t = (sigma * 1000).reshape(1)
        pos, neg = tiny_cond.positive, tiny_cond.negative
        vc = tiny_dit(x, t, pos.tokens, pos.mask, pos.pooled, reference=reference)
        vu = tiny_dit(x, t, neg.tokens, neg.mask, neg.pooled, reference=reference)
        return vu + 3.0 * (vc - vu)

    with torch.no_grad():
        want = euler_sample(two_forwards, make_noise((1, 16, 2, 4, 4), 1), flow_sigmas(4))
    assert torch.allclose(got, want, atol=1e-5)


def test_cfg_without_a_negative_prompt_is_refused(tiny_dit, tiny_cond):
    with pytest.raises(ValueError, match="negative prompt"):
        sample_latent(tiny_dit, Conditioning(tiny_cond.positive, reference=tiny_cond.reference), (1, 16, 1, 4, 4),
                      guidance=2.0)


@pytest.mark.parametrize("guidance", [float("nan"), float("inf"), -1.0])
def test_bad_guidance_is_refused(tiny_dit, tiny_cond, guidance):
    with pytest.raises(ValueError, match="guidance"):
        sample_latent(tiny_dit, tiny_cond, (1, 16, 1, 4, 4), guidance=guidance)


def _velocity_at(model, guidance, cond):
    text = cond.positive
    with torch.no_grad():
        return model(torch.ones(1, 16, 1, 4, 4), torch.tensor([900.0]), text.tokens, text.mask, text.pooled,
                     reference=torch.ones(1, 16, 1, 4, 4), guidance=torch.tensor([guidance]))


def test_guidance_in_receives_the_scale(tiny_cond, count_forwards):
    model = random_dit(tiny(guidance_embed=True), seed=3)
    assert not torch.allclose(_velocity_at(model, 1.0, tiny_cond), _velocity_at(model, 6.0, tiny_cond))
    calls = count_forwards(model)
    sample_latent(model, Conditioning(tiny_cond.positive, reference=tiny_cond.reference), (1, 16, 1, 4, 4),
                  guidance=6.0)
    assert calls == [1, 1, 1, 1]  # embedded guidance: no CFG batch, no negative prompt needed


def test_text_guidance_in_is_loaded_but_applied_only_on_request(tiny_cond):
    model = random_dit(tiny(text_guidance_embed=True), seed=4)
    assert model.text_guidance_in is not None and model.guidance_embedder is None
    assert torch.equal(_velocity_at(model, 1.0, tiny_cond), _velocity_at(model, 6.0, tiny_cond))
    model.apply_text_guidance = True
    assert not torch.allclose(_velocity_at(model, 1.0, tiny_cond), _velocity_at(model, 6.0, tiny_cond))


def test_tiny_end_to_end_is_seeded_and_shaped(tiny_dit, tiny_cond):
    shape = latent_shape(frames=9, height=32, width=48)
    assert shape == (1, 16, 3, 4, 6)
    cond = Conditioning(tiny_cond.positive, tiny_cond.negative, reference=torch.randn(1, 16, 1, 4, 6))
    a = sample_latent(tiny_dit, cond, shape, seed=39)
    b = sample_latent(tiny_dit, cond, shape, seed=39)
    c = sample_latent(tiny_dit, cond, shape, seed=40)
    assert a.shape == shape and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_interrupt_from_the_callback_stops_between_steps(tiny_dit, tiny_cond, count_forwards):
    calls = count_forwards(tiny_dit)

    def stop_after_two(step):
        if step.index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample_latent(tiny_dit, tiny_cond, (1, 16, 1, 4, 4), callback=stop_after_two)
    assert len(calls) == 2


def test_batch_of_latents_shares_one_prompt(tiny_dit, tiny_cond):
    out = sample_latent(tiny_dit, tiny_cond, (2, 16, 1, 4, 4), guidance=2.0)
    assert out.shape == (2, 16, 1, 4, 4)
    assert not torch.equal(out[0], out[1])  # different noise per sample


@pytest.mark.parametrize(
    "frames, height, width, message",
    [(80, 544, 960, "4k\\+1 frames, got 80; use 77 or 81"), (81, 540, 960, "multiple of 16, got 540; use 544"),
     (0, 544, 960, "4k\\+1"), (81, 544, -16, "width")],
)
def test_latent_shape_validates(frames, height, width, message):
    with pytest.raises(ValueError, match=message):
        latent_shape(frames, height, width)


def test_reference_size_must_match(tiny_dit, tiny_cond):
    with pytest.raises(ValueError, match="start image"):
        sample_latent(tiny_dit, tiny_cond, (1, 16, 1, 4, 6))


def test_text_tokens_stay_aligned_in_cfg_batch():
    text = make_text(batch=1, length=5, valid=[5])
    assert text.repeat_to(3).tokens.shape == (3, 5, 32)
    with pytest.raises(ValueError, match="batch"):
        make_text(batch=2).repeat_to(3)
