"""Sequence parallelism (`magic141_core.parallel`): two gloo processes launched with torchrun give the single-process
latent (within 1e-5) and the same decoded frames (bit for bit); an error on one rank ends the whole launch quickly;
the CLI's `generate` runs under torchrun with rank 0 alone writing and reporting.

This file is also the torchrun worker script (`python test_parallel.py OUT_DIR`), launched once per test session.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from comfyui_env import COMFYUI, require_host
from conftest import make_text

from magic141_core import Conditioning, sample_latent, tiny
from magic141_core.dit.loading import random_dit
from magic141_core.parallel import SequenceParallel, init_from_env, tiling_for_ranks
from magic141_core.vae import Tiling, random_vae, tiny_vae
from magic141_core.vae.streaming import resolve_tiling
from magic141_core.vae.tiling import tile_spans
from magic141_core.video.mp4 import read_mp4

REPO = Path(__file__).resolve().parents[1]
WORLD = 2
BUDGET = 1 << 34  # a budget the whole frame fits in: the planned tiling has one tile, refined to one per rank


def dit_cases() -> dict:
    """name -> (conditioning, latent shape, guidance)."""
    def reference(h, w):
        return torch.randn(1, 16, 1, h, w, generator=torch.Generator().manual_seed(4))

    return {
        # 3 x 2 x 3 = 18 video tokens, no text padding: no key mask at all, 9 tokens per rank
        "even tokens": (Conditioning(make_text(valid=None, seed=2), reference=reference(4, 6)), (1, 16, 3, 4, 6), 1.0),
        # 3 x 3 x 1 = 9 video tokens (padded to 10), real CFG: batch 2 with different text lengths
        "odd tokens, CFG": (Conditioning(make_text(valid=[7], seed=2), make_text(valid=[4], seed=3), reference(6, 2)),
                            (1, 16, 3, 6, 2), 3.0),
    }


def vae_cases() -> dict:
    """name -> (unscaled latent, tiling or None = planned from BUDGET)."""
    g = torch.Generator().manual_seed(6)
    return {
        "2x2 tiles, 2 chunks": (torch.randn(1, 16, 3, 6, 6, generator=g), Tiling(4, 4, overlap=1, chunk_frames=1)),
        "3 tiles on 2 ranks": (torch.randn(1, 16, 2, 4, 10, generator=g), Tiling(None, 4, 1, chunk_frames=None)),
        "planned": (torch.randn(1, 16, 2, 4, 16, generator=g), None),  # 1 tile planned, split in 2 columns
    }


def tiny_models():
    """The tiny DiT with 4 heads (2 per rank, so the head order inside a rank matters too) and the tiny VAE."""
    return random_dit(tiny(num_heads=4, rope_axes=(4, 6, 6)), seed=1), random_vae(tiny_vae(), seed=3)


def token_replace_case():
    """A HunyuanVideo-I2V v2 (token replace) DiT with 2 reference frames of 6 tokens: 12 of the 18 video tokens are
    modulated at timestep 0, all 9 of rank 0's and 3 of rank 1's."""
    model = random_dit(tiny(num_heads=4, rope_axes=(4, 6, 6), in_channels=16, image_condition="token_replace",
                            guidance_embed=True), seed=2)
    reference = torch.randn(1, 16, 2, 4, 6, generator=torch.Generator().manual_seed(8))
    return model, Conditioning(make_text(valid=[7], seed=2), reference=reference), (1, 16, 3, 4, 6)


def planned_tiling(vae, z) -> Tiling:
    """What the parallel decode picks for `tiling=None` on WORLD ranks."""
    plan = resolve_tiling(vae, z.shape, None, BUDGET, decoder=True, stream=True)
    return tiling_for_ranks(plan, tuple(z.shape[3:]), WORLD)


# ---------------------------------------------------------------------------------------- the torchrun worker


def worker(out: Path):
    """Everything distributed, in one launch (each launch costs ~10 s of imports here): the CLI's `generate` (when
    the fixture prepared models for it), the sampler and decode cases, an error raised inside rank 0's `from_rank_zero`,
    then rank 1 raises for real while rank 0 waits for it in an all-to-all (and beyond, as it would under NCCL)."""
    from magic141_core.parallel import decode_stream

    sp = init_from_env("cpu")
    results = {}
    if (out / "cli.json").exists():
        results["cli exit code"] = run_cli(json.loads((out / "cli.json").read_text()), out / f"cli{sp.rank}")
    model, vae = tiny_models()
    sp.attach(model)
    tokens = []  # video tokens this rank's final layer sees, per forward
    model.final_layer.register_forward_hook(lambda module, args, output: tokens.append(args[0].shape[1]))
    for name, (cond, shape, guidance) in dit_cases().items():
        results[name] = sample_latent(model, cond, shape, steps=2, guidance=guidance, seed=5)
    results["tokens"] = tokens
    replace_model, cond, shape = token_replace_case()
    sp.attach(replace_model)
    results["token replace"] = sample_latent(replace_model, cond, shape, steps=2, guidance=6.0, seed=5)
    for name, (z, tiling) in vae_cases().items():
        results[name] = torch.cat(list(decode_stream(sp, vae, z, tiling, memory_budget=BUDGET)), dim=2)
    try:
        sp.from_rank_zero(lambda: int("not a number"))
    except (ValueError, RuntimeError) as e:
        results["rank 0 error"] = f"{type(e).__name__}: {e}"
    results["broadcast"] = sp.from_rank_zero(lambda: {"value": torch.full((2,), 7.0)})
    torch.save(results, out / f"rank{sp.rank}.pt")

    if sp.rank == 1:
        (out / "failure time").write_text(repr(time.time()))
        raise RuntimeError("injected failure on rank 1")
    try:
        sample_latent(model, *dit_cases()["even tokens"][:2], steps=2)  # waits in the first all-to-all for rank 1
    except RuntimeError:  # gloo saw the connection close; NCCL would wait on, so this rank does too: only torchrun
        time.sleep(120)  # stopping it ends the launch in time
    (out / "rank0 finished").touch()


def run_cli(argv: list[str], log: Path) -> int:
    """`python -m magic141_core ARGV` inside this rank, its stdout and stderr kept in LOG.out / LOG.err."""
    from magic141_core.cli import main

    stdout, stderr = open(log.with_suffix(".out"), "w"), open(log.with_suffix(".err"), "w")  # open until exit
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    stdout.flush(), stderr.flush()
    return code


# ----------------------------------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """One `torchrun --nproc-per-node 2` of `worker`; returns (results per rank, output folder, seconds from rank
    1's failure to the end of the launch, the launch's exit code and stderr)."""
    out = tmp_path_factory.mktemp("sequence_parallel")
    if (COMFYUI / "comfy" / "sd1_tokenizer").is_dir():
        (out / "cli.json").write_text(json.dumps(cli_args(out)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}", __file__,
           str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            timeout=300)
    ended = time.time()
    if not all((out / f"rank{r}.pt").exists() for r in range(WORLD)):
        pytest.fail(f"the launch failed before the failure injection:\n{result.stdout[-2000:]}{result.stderr[-4000:]}")
    results = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return results, out, ended - float((out / "failure time").read_text()), result


def cli_args(out: Path) -> list[str]:
    """`generate` on the small demo encoders, a demo-size DiT (4 heads) and the tiny VAE, 2 steps, 128x64."""
    from magic141_core.demo.models import write_demo_models
    from magic141_core.vae import save_vae

    paths = write_demo_models(out / "models", COMFYUI / "comfy" / "text_encoders" / "llama_tokenizer",
                              COMFYUI / "comfy" / "sd1_tokenizer", include_vae=False)
    save_vae(random_vae(tiny_vae(), seed=3), out / "vae.safetensors")
    return ["generate", "--image", str(COMFYUI / "input" / "example.png"), "--prompt", "a calm lake",
            "--frames", "5", "--resolution", "128x64", "--steps", "2", "--out", str(out / "clip.mp4"),
            "--dit", str(paths["dit"]), "--vae", str(out / "vae.safetensors"), "--llava", str(paths["llava"]),
            "--llava-vision", str(paths["vision"]), "--clip-l", str(paths["clip_l"]), "--comfyui", str(COMFYUI),
            "--device", "cpu"]


@pytest.fixture(scope="module")
def ranks(launch):
    return launch[0]


@pytest.mark.parametrize("case", list(dit_cases()))
def test_two_ranks_sample_the_single_process_latent(ranks, case):
    model, _ = tiny_models()
    cond, shape, guidance = dit_cases()[case]
    single = sample_latent(model, cond, shape, steps=2, guidance=guidance, seed=5)
    assert torch.equal(ranks[0][case], ranks[1][case])  # every rank ran the same sampler
    assert (ranks[0][case] - single).abs().max() < 1e-5


def test_two_ranks_sample_the_single_process_token_replace_latent(ranks):
    model, cond, shape = token_replace_case()
    single = sample_latent(model, cond, shape, steps=2, guidance=6.0, seed=5)
    assert torch.equal(ranks[0]["token replace"], ranks[1]["token replace"])
    assert (ranks[0]["token replace"] - single).abs().max() < 1e-5
    assert torch.equal(single[:, :, :2], cond.reference)  # the reference frames are held


def test_each_rank_holds_half_of_the_video_tokens(ranks):
    # per case 2 steps: 18 tokens -> 9 per rank; 9 tokens -> padded to 10 -> 5 per rank
    assert ranks[0]["tokens"] == ranks[1]["tokens"] == [9, 9, 5, 5]


@pytest.mark.parametrize("case", list(vae_cases()))
def test_two_ranks_decode_the_single_process_frames(ranks, case):
    _, vae = tiny_models()
    z, tiling = vae_cases()[case]
    if tiling is None:
        tiling = planned_tiling(vae, z)
        rows, cols = (tile_spans(z.shape[i], size, tiling.overlap) for i, size in ((3, tiling.tile_height),
                                                                                  (4, tiling.tile_width)))
        assert len(rows) * len(cols) >= WORLD
    single = torch.cat(list(vae.decode_stream(z, tiling=tiling)), dim=2)
    assert torch.equal(ranks[0][case], ranks[1][case])
    assert torch.equal(ranks[0][case], single)


def test_an_error_in_rank_0s_work_reaches_every_rank(ranks):
    assert ranks[0]["rank 0 error"] == "ValueError: invalid literal for int() with base 10: 'not a number'"
    assert ranks[1]["rank 0 error"] == ("RuntimeError: rank 0 failed: ValueError: invalid literal for int() with "
                                        "base 10: 'not a number'")
    assert all(torch.equal(r["broadcast"]["value"], torch.full((2,), 7.0)) for r in ranks)  # and the group goes on


def test_a_rank_that_raises_ends_the_launch_quickly(launch):
    _, out, seconds_after_failure, result = launch
    assert result.returncode != 0 and "injected failure on rank 1" in result.stderr
    assert not (out / "rank0 finished").exists()
    # torchrun stopped rank 0, which would wait 120 s (the collective timeout is 10 min): about 5 s quiet, and a
    # bound a loaded machine does not reach
    assert seconds_after_failure < 90


def test_cli_generate_under_torchrun_writes_one_video_from_rank_0(launch):
    require_host()
    results, out, _, _ = launch
    errors = (out / "cli0.err").read_text() + (out / "cli1.err").read_text()
    assert [r["cli exit code"] for r in results] == [0, 0], errors
    rank0 = (out / "cli0.out").read_text().splitlines()
    assert rank0 == [*rank0[:2], f"wrote {out / 'clip.mp4'}"] and rank0[0].startswith("size: custom: 128x64, 5 frames")
    assert rank0[1] == ("model: Magic141 (concat + mask, 33 input channels): stored in the file; distilled to 4 "
                        "steps: about 4 steps, shift 5, guidance 1")
    assert (out / "cli1.out").read_text() == ""  # rank 0 alone reports
    assert "step" in (out / "cli0.err").read_text() and (out / "cli1.err").read_text() == ""  # progress: rank 0 only
    frames, _ = read_mp4(out / "clip.mp4")
    assert frames.shape == (5, 64, 128, 3)


def test_heads_must_divide_by_the_process_count():
    model = random_dit(tiny(num_heads=1, rope_axes=(8, 28, 28)))
    with pytest.raises(ValueError, match="process count must divide 1; got 2, use one of \\[1\\]"):
        SequenceParallel(rank=0, world_size=2).attach(model)
    assert model.parallel is None


def test_a_shard_pads_the_video_tokens_and_masks_the_padding():
    sp = SequenceParallel(rank=1, world_size=2)
    shard = sp.shard(video_len=9, txt_len=3, num_heads=2)  # ranks hold tokens 0-4 and 5-9 (9 = padding)
    img = torch.arange(9.0).view(1, 9, 1)
    assert shard.split(img).flatten().tolist() == [5, 6, 7, 8, 0]
    cos = torch.arange(12.0)[:, None].expand(12, 4)  # rows 0-8 video, 9-11 text
    local_cos, local_sin = shard.split_rope((cos, torch.zeros(12, 4)))
    assert local_cos[:, 0].tolist() == [5, 6, 7, 8, 1, 9, 10, 11]  # padding row: the identity rotation
    mask = shard.key_mask(torch.tensor([3, 1]))  # [B, 1, 1, 10 + 3]
    assert mask[0, 0, 0].tolist() == [True] * 9 + [False] + [True] * 3
    assert mask[1, 0, 0].tolist() == [True] * 9 + [False] + [True, False, False]


def test_tiling_for_ranks_adds_tiles_only_when_there_are_too_few():
    assert tiling_for_ranks(Tiling(6, 6, overlap=2), (8, 8), 2) == Tiling(6, 6, overlap=2)  # 4 tiles already
    grid = tiling_for_ranks(Tiling(), (68, 120), 8)  # 544x960, one tile -> at least 8 tiles
    rows, cols = tile_spans(68, grid.tile_height, 4), tile_spans(120, grid.tile_width, 4)
    assert len(rows) * len(cols) >= 8 and min(grid.tile_height or 68, grid.tile_width or 120) >= 8
    assert tiling_for_ranks(Tiling(), (4, 4), 2) == Tiling()  # too small to split: one rank decodes it


if __name__ == "__main__":  # the torchrun worker
    worker(Path(sys.argv[1]))
