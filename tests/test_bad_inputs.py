"""Bad input, one table: every case must raise an error that names the problem (and the fix) and leave nothing
written in its working folder. Plus simulated out-of-memory and failures in the middle of every kind of file write."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_text
from safetensors.torch import save_file

from magic141_core import Conditioning, latent_shape, load_dit, sample_latent, save_dit, tiny
from magic141_core.weights import CheckpointError, save_safetensors
from magic141_core.dit.loading import random_dit
from magic141_core.runtime.errors import OutOfMemory
from magic141_core.priors import resolve_inside
from magic141_core.vae import load_vae


class Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PAYLOAD_RAN",))


def weights(tmp: Path) -> Path:
    path = tmp / "good.safetensors"
    if not path.exists():
        save_dit(random_dit(tiny(), seed=0), path)
    return path


def write(tmp: Path, name: str, data: bytes) -> Path:
    (tmp / name).write_bytes(data)
    return tmp / name


def case_pickle_payload(tmp):
    path = tmp / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": torch.zeros(1)}, "x": Payload()}, f)
    load_dit(path)


def case_tiny_model_wrong_dtype(tmp):
    text = make_text(valid=[4])
    random_dit(tiny())(torch.zeros(1, 16, 1, 4, 4, dtype=torch.int64), torch.tensor([1.0]), text.tokens, text.mask,
                       text.pooled, reference=torch.zeros(1, 16, 1, 4, 4))


def case_cond_shapes(tmp):
    Conditioning(make_text().__class__(torch.zeros(1, 5, 32), torch.ones(2, 5), torch.zeros(1, 16)))


CASES = {  # name -> (action, exception type, text the message must contain)
    "empty checkpoint": (lambda t: load_dit(write(t, "empty.safetensors", b"")), CheckpointError, "empty"),
    "truncated checkpoint": (lambda t: load_dit(write(t, "cut.safetensors", weights(t).read_bytes()[:5000])),
                             CheckpointError, "truncated or corrupt"),
    "garbage checkpoint": (lambda t: load_dit(write(t, "junk.pth", b"\x80\x04junk" * 50)), CheckpointError,
                           "cannot be read|refused"),
    "pickle with a payload": (case_pickle_payload, CheckpointError, "refused to load evil.pth"),
    "VAE given as transformer": (lambda t: (save_file({"encoder.conv_in.conv.weight": torch.zeros(1),
                                                       "decoder.conv_in.conv.weight": torch.zeros(1)},
                                                      t / "vae.safetensors"), load_dit(t / "vae.safetensors")),
                                 CheckpointError, "looks like a VAE"),
    "transformer given as VAE": (lambda t: load_vae(weights(t)), CheckpointError, "not .*VAE|looks like"),
    "wrong tensor shape": (lambda t: (save_file({**{k: v for k, v in random_dit(tiny()).state_dict().items()},
                                                 "img_in.proj.bias": torch.zeros(3)}, t / "bad.safetensors"),
                                      load_dit(t / "bad.safetensors")), CheckpointError, "img_in"),
    "wrong latent dtype": (case_tiny_model_wrong_dtype, ValueError, "latents must be floating point, got torch.int64"),
    "conditioning shapes": (case_cond_shapes, ValueError, "tokens \\[B, L, C\\]"),
    "frames not 4k+1": (lambda t: latent_shape(80, 544, 960), ValueError, "use 77 or 81"),
    "size not a multiple of 16": (lambda t: latent_shape(81, 540, 960), ValueError, "multiple of 16, got 540"),
    "zero length": (lambda t: latent_shape(0, 544, 960), ValueError, "4k\\+1"),
    "negative size": (lambda t: latent_shape(81, -16, 960), ValueError, "height"),
    "zero steps": (lambda t: sample_latent(random_dit(tiny()), Conditioning(make_text()), (1, 16, 1, 4, 4), steps=0),
                   ValueError, "steps must be"),
    "NaN guidance": (lambda t: sample_latent(random_dit(tiny()), Conditioning(make_text()), (1, 16, 1, 4, 4),
                                             guidance=float("nan")), ValueError, "guidance must be a finite"),
    "folder with ..": (lambda t: resolve_inside(t, "../outside"), ValueError, "no '..'"),
    "absolute folder": (lambda t: resolve_inside(t, "/etc"), ValueError, "relative path"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_named_and_leaves_nothing_behind(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weights(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    action, error, message = CASES[name]
    with pytest.raises(error, match=message):
        action(tmp_path)
    after = sorted(p.name for p in tmp_path.iterdir())
    created = {"empty.safetensors", "cut.safetensors", "junk.pth", "evil.pth", "vae.safetensors", "bad.safetensors"}
    assert [p for p in after if p not in before and p not in created] == []  # no output, no temp files
    assert not (tmp_path / "PAYLOAD_RAN").exists()


def test_out_of_memory_suggests_remedies_and_frees(monkeypatch):
    model = random_dit(tiny())
    freed = []
    import magic141_core.runtime.errors as errors

    monkeypatch.setattr(errors, "free_memory", lambda: freed.append(True))

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    model.forward = oom
    with pytest.raises(OutOfMemory, match="out of memory while sampling .*int8.*block_swap.*fewer frames"):
        sample_latent(model, Conditioning(make_text(), reference=torch.zeros(1, 16, 1, 4, 4)), (1, 16, 1, 4, 4))
    assert freed == [True]


@pytest.mark.parametrize("writer", ["checkpoint", "int8 checkpoint", "index/cache (safetensors)"])
def test_a_failure_mid_write_keeps_the_previous_file(writer, tmp_path, monkeypatch):
    import magic141_core.weights.files as files

    target = tmp_path / "out.safetensors"
    save_safetensors({"old": torch.ones(3)}, target)
    before = target.read_bytes()

    def half_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial data")
        raise OSError("No space left on device")

    monkeypatch.setattr(files, "save_file", half_then_fail)
    with pytest.raises(OSError, match="No space left"):  # checkpoints go to new names; an index replaces its own
        if writer == "checkpoint":
            save_dit(random_dit(tiny()), tmp_path / "new.safetensors")
        elif writer == "int8 checkpoint":
            from magic141_core.weights.int8 import quantize_linears_

            save_dit(quantize_linears_(random_dit(tiny())), tmp_path / "new.safetensors")
        else:
            save_safetensors({"embeddings": torch.zeros(2, 4)}, target, {"format": "x"}, overwrite=True)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.safetensors"]


def test_odd_images_are_fitted_not_rejected():
    from magic141_core.video.start_image import fit_image, nearest_bucket, rgb

    one_pixel = torch.rand(1, 1, 1, 4)  # RGBA, 1x1
    fitted = fit_image(rgb(one_pixel), *nearest_bucket(1, 1))
    assert fitted.shape == (1, 720, 720, 3) and torch.isfinite(fitted).all()
    sixteen_bit = torch.from_numpy(np.full((1, 30, 50, 3), 0.5, dtype=np.float32))
    assert fit_image(sixteen_bit, 64, 48).shape == (1, 48, 64, 3)
