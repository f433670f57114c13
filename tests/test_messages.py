"""One line instead of a traceback (issue 22 §3-4, issue 20 §5): bad numbers are refused with their range by the
core, so the CLI, the nodes and library callers get the same message; the CLI checks --out before any work;
retrieval truncates long prompts and rebuilds a damaged index; out-of-memory from the CPU allocator gets the advice,
and work that cannot fit is refused up front; non-finite values never reach the schedule or the embedding cache."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import make_text, run_node
from test_cli import cli
from tiny_clip import save_tiny_clip

from magic141_core import Conditioning, flow_sigmas, sample_latent, tiny
from magic141_core.dit.loading import random_dit
from magic141_core.runtime.errors import OutOfMemory, oom_advice


# ------------------------------------------------------------------------------------------------ the CLI
@pytest.mark.parametrize("args, message", [
    (["long", "--windows", "0"], "the number of windows must be a whole number from 1 to 3600, got 0"),
    (["long", "--windows", "-1"], "the number of windows must be a whole number from 1 to 3600, got -1"),
    (["long", "--windows", "10000000000"], "from 1 to 3600, got 10000000000"),
    (["long", "--seconds", "inf"], "the duration must be a number of seconds in (0, 3600], got inf"),
    (["long", "--seconds", "5", "--frames", "1"], "window length must be 4k+1 frames, at least 5"),
    (["generate", "--seed", str(2**64)], "seed must be a whole number from 0 to 18446744073709551615"),
    (["generate", "--shift", "1e-8"], "shift must be a number from 0.01 to 100, got 1e-08"),
    (["generate", "--steps", "100000000"], "steps must be a whole number from 1 to 100, got 100000000"),
    (["generate", "--resolution", "0x0"], "height must be a positive multiple of 16, got 0"),
    (["generate", "--resolution", "20000x20000"], "height must be at most 4096, got 20000"),
    (["generate", "--out", "."], "--out . is a folder; give a file name in it, e.g. --out magic141.mp4"),
    (["generate", "--out", "taken.mp4"], "taken.mp4 already exists; the --out file is not written over it"),
    (["quantize", "--dit", "taken.mp4", "--out", "taken.mp4"], "taken.mp4 already exists"),
    (["bench", "--quick", "--json", "taken.mp4"], "taken.mp4 already exists"),  # before minutes of benchmarks
])
def test_bad_numbers_and_outputs_get_one_line_before_any_work(args, message, tmp_path):
    from comfyui_env import COMFYUI

    (tmp_path / "i.png").write_bytes((COMFYUI / "input" / "example.png").read_bytes())
    (tmp_path / "taken.mp4").write_bytes(b"the user's video")
    video = [] if args[0] in ("quantize", "bench") else ["--image", "i.png", "--demo-dir", "demo"]
    prompt = {"long": ["--prompts", "x"], "generate": ["--prompt", "x"]}.get(args[0], [])
    result = cli(*args, *prompt, *video, cwd=tmp_path, timeout=600)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("WARNING")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "demo").exists()  # refused before the models were even looked for
    assert (tmp_path / "taken.mp4").read_bytes() == b"the user's video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.png", "taken.mp4"]


def test_the_default_output_name_never_replaces_an_earlier_video(tmp_path, monkeypatch):
    from magic141_core.cli.commands import new_output

    monkeypatch.chdir(tmp_path)
    assert new_output(None, "magic141.mp4", ".mp4") == Path("magic141.mp4")
    (tmp_path / "magic141.mp4").write_bytes(b"first")
    assert new_output(None, "magic141.mp4", ".mp4") == Path("magic141_2.mp4")


# ------------------------------------------------------------------------------------------------ the core
def test_shift_and_seed_are_checked_where_every_caller_passes():
    with pytest.raises(ValueError, match="shift must be a number from 0.01 to 100, got 1e-08"):
        flow_sigmas(4, shift=1e-8)  # fp32 would make the first sigma 1/0 = inf, then a black video
    with pytest.raises(ValueError, match="shift must be"):
        flow_sigmas(4, shift=float("nan"))
    assert torch.isfinite(flow_sigmas(4, shift=0.01)).all() and torch.isfinite(flow_sigmas(4, shift=100)).all()
    from magic141_core.video.long_video import LongVideoSettings

    with pytest.raises(ValueError, match="shift must be"):
        LongVideoSettings(shift=0)  # refused before the first window, not at it
    with pytest.raises(ValueError, match="seed must be a whole number from 0 to"):
        LongVideoSettings(seed=2**64)
    with pytest.raises(ValueError, match="seed must be"):
        sample_latent(random_dit(tiny()), Conditioning(make_text()), (1, 16, 1, 4, 4), seed=-1)


def test_long_video_node_duration_nan_or_too_long_is_named(pack):
    node = pack.NODE_CLASS_MAPPINGS["Magic141LongVideo"]
    inputs = dict(model=None, encoders=None, vae=None, prior=None, prompts="x", window_length=81, resolution="540p",
                  width=960, height=544, steps=4, shift=5.0, guidance=1.0, seed=0, color_match=True,
                  noise_augmentation=0.02, anchor="prior", fps=24.0, quality=19, filename_prefix="never")
    with pytest.raises(ValueError, match="the number of windows must be a whole number from 1 to 3600, got nan"):
        run_node(node, duration=float("nan"), unit="windows", **inputs)
    with pytest.raises(ValueError, match="duration must be a number of seconds in \\(0, 3600\\], got inf"):
        run_node(node, duration=float("inf"), unit="seconds", **inputs)


def test_the_cpu_allocators_out_of_memory_gets_the_advice():
    with pytest.raises(OutOfMemory, match="out of memory while testing .*DefaultCPUAllocator.*Try: .*int8"):
        with oom_advice("testing"):
            torch.empty(2**62, dtype=torch.uint8)  # a real allocation failure, not a simulated one
    with pytest.raises(RuntimeError, match="other") as error:
        with oom_advice("testing"):
            raise RuntimeError("other")
    assert not isinstance(error.value, OutOfMemory)


def test_a_clip_that_cannot_fit_is_refused_before_sampling_starts():
    model = random_dit(tiny())
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    shape = (1, 16, 257, 2**14, 2**14)  # 4096x4096 latents: terabytes of activations, even for the tiny model
    with pytest.raises(OutOfMemory, match="out of memory while sampling .*it needs at least .*GiB on cpu"):
        sample_latent(model, Conditioning(make_text()), shape)
    assert calls == []


def test_the_embedding_cache_never_stores_non_finite_values(tmp_path):
    from magic141_core.text.cache import EmbeddingCache, NonFiniteEmbedding

    cache = EmbeddingCache(tmp_path)
    with pytest.raises(NonFiniteEmbedding, match="NaN or infinite values \\(tokens for text: a cat\\)"):
        cache.put("k", {"tokens": torch.tensor([1.0, float("nan")])}, description="text: a cat")
    assert cache.get("k") is None and list(tmp_path.iterdir()) == []
    from safetensors.torch import save_file

    save_file({"tokens": torch.tensor([float("inf")])}, str(tmp_path / "k2.safetensors"),
              {"magic141_cache_key": "k2"})  # an entry written by an older version (the pack's writer refuses inf)
    assert cache.get("k2") is None


# ------------------------------------------------------------------------------------------------ retrieval
@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    from magic141_core.priors import ClipEmbedder

    return ClipEmbedder(save_tiny_clip(tmp_path_factory.mktemp("clip")))


def test_a_prompt_longer_than_clips_positions_is_truncated(embedder):
    limit = embedder.model.config.text_config.max_position_embeddings
    long_prompt = " ".join(["cat"] * (3 * limit))
    ids = embedder.tokenizer([long_prompt], truncation=True, max_length=limit)["input_ids"][0]
    truncated = embedder.tokenizer.decode(ids, skip_special_tokens=True)
    assert torch.allclose(embedder.embed_text([long_prompt]), embedder.embed_text([truncated]), atol=1e-6)


@pytest.mark.parametrize("damage", ["no files entry", "rows do not match", "corrupt bytes", "not safetensors"])
def test_a_damaged_index_is_rebuilt_and_said_so(embedder, tmp_path, damage, caplog):
    import numpy as np
    from PIL import Image

    from magic141_core.weights import save_safetensors
    from magic141_core.priors import INDEX_NAME, ImageIndex

    for i in range(2):
        Image.fromarray(np.full((20, 20, 3), 90 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    ImageIndex(tmp_path).update(embedder)
    index = tmp_path / INDEX_NAME
    if damage == "no files entry":
        index.unlink()
        save_safetensors({"embeddings": torch.zeros(2, 16)}, index, {"format": "magic141-clip-index-v1", "model": "m"})
    elif damage == "rows do not match":
        index.unlink()
        save_safetensors({"embeddings": torch.zeros(5, 16)}, index, {"format": "magic141-clip-index-v1", "model": "m",
                                                                      "files": json.dumps([["0.png", 1, 1]])})
    elif damage == "corrupt bytes":
        index.write_bytes(index.read_bytes()[:100])
    else:
        index.write_bytes(b"\x00" * 64)
    with caplog.at_level(logging.WARNING):
        rebuilt = ImageIndex(tmp_path)
        stats = rebuilt.update(embedder)
    assert rebuilt.rebuilt and "is damaged" in caplog.text and "rebuilding it" in caplog.text
    assert stats.embedded == 2 and len(ImageIndex(tmp_path).keys) == 2 and not ImageIndex(tmp_path).rebuilt


def test_an_index_path_naming_another_file_is_never_written_over(embedder, tmp_path):
    from magic141_core.weights import save_safetensors
    from magic141_core.priors import ImageIndex

    model = tmp_path / "model.safetensors"
    save_safetensors({"w": torch.ones(2)}, model)
    with pytest.raises(FileExistsError, match="model.safetensors exists and is not a Magic141 retrieval index"):
        ImageIndex(tmp_path, model)
    with pytest.raises(ValueError, match="idx.bin must be a .safetensors file name"):
        ImageIndex(tmp_path, tmp_path / "idx.bin")  # else a later run could not recognise its own index
    assert model.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
