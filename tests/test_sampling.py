"""The 4-step shifted flow-matching sampler, guidance modes, and a tiny end-to-end run."""

from __future__ import annotations

import numpy as np
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


def test_a_prompt_for_several_latents_must_be_one_or_one_each():
    with pytest.raises(ValueError, match="batch"):
        make_text(batch=2).repeat_to(3)


# -- against independent references: diffusers' scheduler, and each sample computed alone -------------------------


def diffusers_scheduler(steps: int, shift: float):
    """diffusers' FlowMatchEulerDiscreteScheduler as its HunyuanVideo pipeline sets it up: sigmas linspace(1, 0,
    steps + 1) without the final 0, shifted by the scheduler (the official Magic141 sampler's schedule)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])
    return scheduler


@pytest.mark.parametrize("steps, shift", [(4, 5.0), (8, 7.0), (3, 1.0), (50, 0.5)])
def test_sigmas_and_timesteps_are_diffusers_flow_match_schedule(steps, shift):
    """Bound 1e-6 (sigmas in [0, 1]) and 1e-3 (timesteps in [0, 1000]): the same fp32 formula, measured equal to
    within 1.2e-7 / 1.2e-4; an inverted shift (1 / shift) moves the sigmas by 0.33 to 0.75 here."""
    reference = diffusers_scheduler(steps, shift)
    sigmas = flow_sigmas(steps, shift)
    assert sigmas.shape == reference.sigmas.shape == (steps + 1,)
    assert (sigmas - reference.sigmas).abs().max().item() < 1e-6
    assert (timesteps(sigmas) - reference.timesteps).abs().max().item() < 1e-3


def test_the_sampling_loop_is_diffusers_scheduler_stepping_the_same_model(tiny_dit, tiny_cond):
    """sample_latent (guidance 1: the distilled model's one forward per step) against diffusers' scheduler stepping
    the same model from the same noise: the schedule, the timesteps the model sees and the Euler update at once.
    Bound 1e-5: fp32 on both sides, measured 0 (the same operations); timesteps 0.1 % off (x 999 instead of x 1000)
    already move it by 0.2."""
    shape = (1, 16, 2, 4, 4)
    got = sample_latent(tiny_dit, tiny_cond, shape, steps=4, shift=5.0, guidance=1.0, seed=21)
    scheduler, pos = diffusers_scheduler(4, 5.0), tiny_cond.positive
    x = make_noise(shape, 21)
    with torch.no_grad():
        for t in scheduler.timesteps:
            v = tiny_dit(x, t.reshape(1), pos.tokens, pos.mask, pos.pooled, reference=tiny_cond.reference)
            x = scheduler.step(v, t, x).prev_sample
    assert (got - x).abs().max().item() < 1e-5


def test_a_batch_under_cfg_equals_each_sample_sampled_alone(tiny_dit, tiny_cond, count_forwards):
    """Two latents with their own start images, one prompt and one negative prompt that are both padded (7 and 4 of
    10 tokens), guidance 3: one forward of 4 samples per step ([uncond x2 ; cond x2], the padding masked per
    sample) must give, sample by sample, the official unbatched CFG (two forwards per step, batch 1, nothing
    padded away). Bound 1e-4: fp32, measured 3.6e-6 (batched kernels sum in another order); padding left visible
    moves a sample by 1.35."""
    shape, seed, guidance = (2, 16, 2, 4, 4), 8, 3.0
    references = torch.randn(2, 16, 1, 4, 4, generator=torch.Generator().manual_seed(9))
    cond = Conditioning(tiny_cond.positive, tiny_cond.negative, reference=references)
    calls = count_forwards(tiny_dit)
    got = sample_latent(tiny_dit, cond, shape, steps=4, guidance=guidance, seed=seed)
    assert calls == [4, 4, 4, 4]
    pos, neg = tiny_cond.positive, tiny_cond.negative
    noise = make_noise(shape, seed)
    for i in range(2):
        def two_forwards(x, sigma, i=i):
            t = (sigma * 1000).reshape(1)
            vc = tiny_dit(x, t, pos.tokens, pos.mask, pos.pooled, reference=references[i : i + 1])
            vu = tiny_dit(x, t, neg.tokens, neg.mask, neg.pooled, reference=references[i : i + 1])
            return vu + guidance * (vc - vu)

        with torch.no_grad():
            want = euler_sample(two_forwards, noise[i : i + 1], flow_sigmas(4))
        assert (got[i : i + 1] - want).abs().max().item() < 1e-4, i
