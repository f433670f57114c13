"""Cancel points inside the transformer and the VAE (runtime/interrupt.py): where they are checked, that a raising
check stops the work there, and that the cancellable (chunked) CPU attention computes the same video."""

from __future__ import annotations

import pytest
import torch

from magic141_core.runtime import interrupt
from magic141_core.dit import attention as attention_module
from magic141_core.sampling.sampler import sample_latent
from magic141_core.vae import Tiling, causal, random_vae, tiny_vae


class Cancelled(Exception):
    pass


@pytest.fixture
def hook():
    """Install a counting check that raises once `limit` checks have passed (None: never); removed afterwards."""
    state = {"calls": 0, "limit": None}

    def check():
        state["calls"] += 1
        if state["limit"] is not None and state["calls"] > state["limit"]:
            raise Cancelled

    previous = interrupt.set_interrupt_check(check)
    yield state
    interrupt.set_interrupt_check(previous)


def test_the_transformer_checks_between_blocks_and_a_cancel_stops_inside_the_first_step(tiny_dit, tiny_cond, hook):
    blocks = len(tiny_dit.double_blocks) + len(tiny_dit.single_blocks)
    sample_latent(tiny_dit, tiny_cond, (1, 16, 2, 4, 4), steps=1)
    assert hook["calls"] >= blocks
    hook.update(calls=0, limit=1)  # the second check, inside the first forward, cancels
    with pytest.raises(Cancelled):
        sample_latent(tiny_dit, tiny_cond, (1, 16, 2, 4, 4), steps=4)
    assert hook["calls"] == 2


def test_cancellable_cpu_attention_gives_the_same_video(tiny_dit, tiny_cond, hook, monkeypatch):
    shape = (1, 16, 3, 4, 4)
    interrupt.set_interrupt_check(None)
    whole = sample_latent(tiny_dit, tiny_cond, shape, steps=2, seed=3)
    interrupt.set_interrupt_check(lambda: hook.update(calls=hook["calls"] + 1))
    monkeypatch.setattr(attention_module, "CPU_CHUNK_SCORES", 1)  # the smallest chunks: 256 query rows ... or fewer
    q = torch.randn(1, 2, 700, 8)
    assert attention_module._query_chunk(q, q) == 256
    monkeypatch.setattr(attention_module, "_query_chunk", lambda q, k: 5)  # 12 video + text rows: several chunks
    chunked = sample_latent(tiny_dit, tiny_cond, shape, steps=2, seed=3)
    assert hook["calls"] > 2 * 10  # attention calls were split
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)


def test_without_a_hook_attention_is_one_call():
    q = torch.randn(1, 2, 700, 8)
    assert not interrupt.interrupt_check_installed()
    assert attention_module._query_chunk(q, q) == 700


@pytest.mark.parametrize("stream", [True, False])
def test_vae_decode_checks_between_tiles_and_chunks_and_stops_there(hook, stream):
    vae = random_vae(tiny_vae(), seed=3)
    z = torch.randn(1, vae.config.latent_channels, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    tiling = Tiling(tile_height=6, tile_width=6, overlap=2, chunk_frames=2)  # 4 tiles x 2 chunks

    def decode():
        return list(vae.decode_stream(z, tiling)) if stream else vae.decode(z, tiling)

    decode()
    per_step = len(vae.decoder.up_blocks) + 1  # before each tile x chunk, and before each decoder up block
    assert hook["calls"] == 4 * 2 * per_step
    hook.update(calls=0, limit=per_step * 5)  # cancel at the 6th tile x chunk
    with pytest.raises(Cancelled):
        decode()
    assert hook["calls"] == per_step * 5 + 1


def test_large_vae_convolutions_and_attention_run_in_cancellable_pieces_giving_the_same_frames(hook, monkeypatch):
    """On a CPU with a check installed, convolutions and attention above `CPU_CANCEL_FLOPS` (a 540p chunk: seconds
    to minutes each) run in pieces of output frames / query rows with the check between them: the same frames."""
    vae = random_vae(tiny_vae(), seed=3)
    z = torch.randn(1, vae.config.latent_channels, 5, 6, 6, generator=torch.Generator().manual_seed(1))
    tiling = Tiling(chunk_frames=2)
    whole = vae.decode(z, tiling)  # tiny: nothing is large enough to split
    unsplit = hook["calls"]
    monkeypatch.setattr(causal, "CPU_CANCEL_FLOPS", 1)  # everything splits: one output frame / 64 rows per piece
    hook.update(calls=0)
    pieces = vae.decode(z, tiling)
    assert hook["calls"] > 5 * unsplit
    torch.testing.assert_close(pieces, whole, rtol=0, atol=1e-5)  # fp32 kernel order (1.7e-6 seen)
    hook.update(calls=0, limit=unsplit + 3)  # a cancel inside the first chunk's convolutions
    with pytest.raises(Cancelled):
        vae.decode(z, tiling)
    assert hook["calls"] == unsplit + 4
