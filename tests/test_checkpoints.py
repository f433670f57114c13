"""Loading DiT checkpoints in every container people have, safely, with clear errors for wrong files."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from magic141_core import load_dit, save_dit, tiny
from magic141_core.weights import CheckpointError, read_state_dict, to_diffusers
from magic141_core.dit.loading import random_dit


@pytest.fixture
def weights():
    return random_dit(tiny(double_blocks=2, text_guidance_embed=True), seed=21).state_dict()


def _same_weights(model, sd):
    got = model.state_dict()
    return got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)


def test_safetensors_round_trip_keeps_weights_and_config(tmp_path, weights):
    model = random_dit(tiny(double_blocks=2, text_guidance_embed=True), seed=21)
    save_dit(model, tmp_path / "m.safetensors")
    loaded = load_dit(tmp_path / "m.safetensors", dtype=None)
    assert loaded.config == model.config and _same_weights(loaded, weights)
    assert loaded.text_guidance_in is not None and loaded.apply_text_guidance is False


def test_bare_safetensors_without_our_metadata_infers_the_config(tmp_path, weights):
    save_file(weights, tmp_path / "plain.safetensors")
    loaded = load_dit(tmp_path / "plain.safetensors", dtype=None)
    assert loaded.config.double_blocks == 2 and _same_weights(loaded, weights)


def test_dtype_conversion_on_load(tmp_path, weights):
    save_file(weights, tmp_path / "plain.safetensors")
    assert load_dit(tmp_path / "plain.safetensors", dtype=torch.bfloat16).img_in.proj.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("wrapper", ["state_dict", "module"])
def test_pth_wrappers_are_unwrapped(tmp_path, weights, wrapper):
    torch.save({wrapper: weights, "epoch": 3}, tmp_path / "ckpt.pth")
    assert _same_weights(load_dit(tmp_path / "ckpt.pth", dtype=None), weights)


def test_comfyui_prefix_is_stripped_and_other_parts_skipped(tmp_path, weights):
    sd = {f"model.diffusion_model.{k}": v for k, v in weights.items()}
    sd["first_stage_model.decoder.conv_in.weight"] = torch.zeros(1)
    save_file(sd, tmp_path / "comfy.safetensors")
    assert _same_weights(load_dit(tmp_path / "comfy.safetensors", dtype=None), weights)


def test_diffusers_format_file_loads(tmp_path, weights):
    save_file(to_diffusers(weights), tmp_path / "diffusers.safetensors")
    assert _same_weights(load_dit(tmp_path / "diffusers.safetensors", dtype=None), weights)


class _Payload:
    """Unpickling this calls `touch` on a marker file: the code execution a weights_only load must refuse."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickle_with_a_code_payload_is_refused_and_never_runs(tmp_path, weights):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"state_dict": weights, "x": _Payload(str(marker))}, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="refused to load evil.pth"):
        load_dit(path)
    assert not marker.exists()


def test_truncated_safetensors_is_a_clear_error(tmp_path, weights):
    save_file(weights, tmp_path / "full.safetensors")
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt|corrupt"):
        load_dit(tmp_path / "cut.safetensors")


def test_truncated_pth_is_a_clear_error(tmp_path, weights):
    torch.save(weights, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_dit(tmp_path / "cut.pth")


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.safetensors").touch()
    with pytest.raises(CheckpointError, match="empty"):
        load_dit(tmp_path / "empty.safetensors")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_dit(tmp_path / "absent.safetensors")
    (tmp_path / "weights.gguf").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unsupported file type"):
        load_dit(tmp_path / "weights.gguf")


@pytest.mark.parametrize(
    "keys, kind",
    [
        (["encoder.conv_in.conv.weight", "decoder.conv_in.conv.weight", "decoder.up_blocks.0.x"], "VAE"),
        (["input_blocks.0.0.weight", "middle_block.0.weight", "label_emb.0.0.weight"], "SD / SDXL UNet"),
        (["img_in.weight", "double_blocks.0.img_attn.qkv.weight"], "Flux"),
        (["text_model.encoder.layers.0.mlp.fc1.weight"], "CLIP text encoder"),
    ],
)
def test_other_models_are_named_in_the_error(tmp_path, keys, kind):
    save_file({k: torch.zeros(2) for k in keys}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match=f"other.safetensors is not a Magic141 / HunyuanVideo transformer: "
                                              f"it looks like .*{kind}"):
        load_dit(tmp_path / "other.safetensors")


def test_damaged_dit_names_the_problem(tmp_path, weights):
    broken = dict(weights)
    del broken["double_blocks.1.img_mlp.fc2.bias"]
    broken["double_blocks.0.img_attn_proj.weight"] = torch.zeros(3, 3)
    save_file(broken, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError, match="img_mlp.fc2.bias|img_attn_proj"):
        load_dit(tmp_path / "broken.safetensors")


def test_non_tensor_pth_is_not_a_weight_file(tmp_path):
    torch.save({"epoch": 1, "lr": 0.1}, tmp_path / "opt.pth")
    with pytest.raises(CheckpointError, match="holds no tensors"):
        read_state_dict(tmp_path / "opt.pth")
