"""Hostile and broken weight files, through the core and the CLI (the server cases are in test_server_cancel.py): a file
that claims more blocks or larger sizes than its tensors hold is refused at once, naming the key; malformed config
metadata names the file, the field and the fix, never a bare Python exception; NaN / inf weights are refused while
loading, naming the first bad tensor; loading stops between layers when the host interrupts; image links that point
out of an allowed folder are never indexed, read or returned."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from comfyui_env import COMFYUI
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_cli import cli

from magic141_core import load_dit, save_dit, tiny
from magic141_core.weights import CheckpointError, save_safetensors
from magic141_core.weights.limits import MAX_BLOCKS
from magic141_core.demo.models import DEMO_FILES
from magic141_core.dit.loading import random_dit
from magic141_core.dit.loading import CONFIG_METADATA_KEY
from magic141_core.runtime.interrupt import set_interrupt_check
from magic141_core.vae import load_vae
from magic141_core.vae.config import tiny_vae
from magic141_core.vae.loading import CONFIG_METADATA_KEY as VAE_KEY
from magic141_core.vae.loading import random_vae

HUGE = 100_000_000


def dit_tensors() -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in random_dit(tiny(), seed=0).state_dict().items()}


def with_block(sd: dict, prefix: str, index: int) -> dict:
    """`sd` plus a copy of block 0's first tensor under block `index` (the crafted file of issue 20)."""
    key = next(k for k in sorted(sd) if k.startswith(prefix + ".0."))
    return {**sd, key.replace(f"{prefix}.0.", f"{prefix}.{index}.", 1): sd[key].clone()}


def config_with(**changes) -> str:
    data = json.loads(tiny().to_json())
    data.update(changes)
    for key in [k for k, v in changes.items() if v is Ellipsis]:
        del data[key]
    return json.dumps(data)


def dit_file(tmp: Path, sd: dict, metadata: str | None = "config") -> Path:
    """A DiT file of tensors `sd`, with the matching config in its metadata ("config"), the text given, or none."""
    path = tmp / "hostile.safetensors"
    meta = None if metadata is None else {CONFIG_METADATA_KEY: tiny().to_json() if metadata == "config" else metadata}
    save_file(sd, str(path), metadata=meta)
    return path


def without(sd: dict, key: str) -> dict:
    return {k: v for k, v in sd.items() if k != key}


def replaced(sd: dict, key: str, tensor: torch.Tensor) -> dict:
    return {**sd, key: tensor}


# name -> (tensors, metadata ("config": the right one; None: none; else the text), text the message must contain)
DIT_CASES = {
    # 1. counts and sizes the tensors do not back
    "double block 100000000, inferred": (lambda: with_block(dit_tensors(), "double_blocks", HUGE), None,
                                         "double_blocks.100000000.img_attn_k_norm.weight' names double_blocks block "
                                         "100000000, but the file holds tensors for double_blocks blocks 0..0 only"),
    "double block 100000000, with config": (lambda: with_block(dit_tensors(), "double_blocks", HUGE), "config",
                                            "'double_blocks.100000000."),
    "single block 100000000": (lambda: with_block(dit_tensors(), "single_blocks", HUGE), None,
                               "'single_blocks.100000000."),
    "refiner block 100000000": (lambda: with_block(dit_tensors(), "txt_in.individual_token_refiner.blocks", HUGE),
                                None, "'txt_in.individual_token_refiner.blocks.100000000."),
    "a gap in the block indices": (lambda: with_block(dit_tensors(), "double_blocks", 2), None,
                                   "names double_blocks block 2, but .* blocks 0..0 only"),
    f"{MAX_BLOCKS + 1} blocks": (lambda: {**dit_tensors(), **{f"single_blocks.{i}.norm.x": torch.zeros(1)
                                                               for i in range(1, MAX_BLOCKS + 1)}},
                                 None, f"block {MAX_BLOCKS}, but .* 0..{MAX_BLOCKS - 1} only .*at most {MAX_BLOCKS}"),
    "config claims 100000000 blocks": (dit_tensors, config_with(double_blocks=HUGE), "'double_blocks' is 100000000"),
    "config claims 1000 blocks": (dit_tensors, config_with(double_blocks=1000),
                                  "'double_blocks' says 1000 blocks but the file holds tensors for 1"),
    "config claims a wider model": (dit_tensors, config_with(hidden_size=128, num_heads=4),
                                    "tensor 'img_in.proj.weight' has shape \\[64, 33, 1, 2, 2\\], the model needs "
                                    "\\[128, 33, 1, 2, 2\\]"),
    "config claims 2**40 channels": (dit_tensors, config_with(text_dim=2 ** 40), "'text_dim' is 1099511627776"),
    # 2. malformed config metadata
    "config missing a field": (dit_tensors, config_with(patch_size=...), "'patch_size' is missing"),
    "config with an unknown field": (dit_tensors, config_with(depth=3), "'depth' is unknown"),
    "config not JSON": (dit_tensors, "{hidden_size: 64", "'magic141_dit_config' is not valid JSON"),
    "config a JSON list": (dit_tensors, "[64, 2]", "is a list; expected a JSON object"),
    "config with a string size": (dit_tensors, config_with(hidden_size="64"), "'hidden_size' is '64'; expected a "
                                  "whole"),  # quoted: a string, not the number it spells
    "config with a bool size": (dit_tensors, config_with(num_heads=True), "'num_heads' is True"),
    "config with a short patch": (dit_tensors, config_with(patch_size=[2, 2]), "'patch_size' is \\[2, 2\\]; expected a "
                                  "list of 3"),
    "config with zero heads": (dit_tensors, config_with(num_heads=0), "inconsistent \\(.*modulo by zero"),
    "config with a NaN ratio": (dit_tensors, config_with(mlp_ratio=float("nan")), "'mlp_ratio' is nan"),
    "config with a wrong RoPE split": (dit_tensors, config_with(rope_axes=[2, 14, 14]), "rope_axes .* must be even "
                                       "and sum to the head dim 32"),
    "config with 3 input channels": (dit_tensors, config_with(in_channels=3), "in_channels must be 33"),
    # 2. tensor sets the config is inferred from, malformed
    "no q_norm to read the heads from": (lambda: without(dit_tensors(), "double_blocks.0.img_attn_q_norm.weight"),
                                         None, "tensor 'double_blocks.0.img_attn_q_norm.weight' is missing"),
    "a 1-D patch embedding": (lambda: replaced(dit_tensors(), "img_in.proj.weight", torch.zeros(64)), None,
                              "'img_in.proj.weight' has shape \\[64\\]; expected 5 dimensions"),
    "a zero-size final layer": (lambda: replaced(dit_tensors(), "final_layer.linear.weight", torch.zeros(0, 64)),
                                None, "'final_layer.linear.weight' has shape \\[0, 64\\]"),
    "a head dim that splits no RoPE": (lambda: {k: v.contiguous() for k, v in random_dit(
        tiny(hidden_size=24, rope_axes=(2, 4, 6))).state_dict().items()}, None,
        "cannot infer the RoPE split for head dim 12: HunyuanVideo gives 1/8 of it to time"),
    "a head dim the other tensors disagree with": (
        lambda: replaced(dit_tensors(), "double_blocks.0.img_attn_q_norm.weight", torch.ones(6)), None,
        "tensor shapes disagree: 'img_in.proj.weight' gives hidden size 64, but .* a head dim of 6"),
    "transposed weights": (lambda: {k: v.T.contiguous() if v.ndim == 2 else v for k, v in dit_tensors().items()},
                           None, "'double_blocks.0.img_attn_qkv.weight' is \\[64, 192\\] \\(expected \\[192, 64\\]\\)"
                           ".* The tensors are transposed"),
    "integer weights": (lambda: replaced(dit_tensors(), "final_layer.linear.weight",
                                         dit_tensors()["final_layer.linear.weight"].to(torch.int8)), "config",
                        "tensor 'final_layer.linear.weight' holds int8 values where the transformer has floating"),
    "an extra tensor": (lambda: {**dit_tensors(), "img_in.extra.weight": torch.zeros(2)}, "config",
                        "tensors the transformer does not use, e.g. \\['img_in.extra.weight'\\]"),
    # 4. non-finite weights
    "a NaN weight": (lambda: replaced(dit_tensors(), "single_blocks.0.linear2.weight",
                                      dit_tensors()["single_blocks.0.linear2.weight"].index_fill(1, torch.tensor([3]),
                                                                                                  float("nan"))),
                     "config", "tensor 'single_blocks.0.linear2.weight' holds NaN or infinite values"),
    "an inf bias": (lambda: replaced(dit_tensors(), "final_layer.linear.bias",
                                     torch.full_like(dit_tensors()["final_layer.linear.bias"], -float("inf"))),
                    None, "tensor 'final_layer.linear.bias' holds NaN or infinite"),
}


@pytest.mark.parametrize("name", list(DIT_CASES))
def test_a_hostile_or_broken_dit_file_is_refused_at_once_naming_what_is_wrong(name, tmp_path):
    tensors, metadata, message = DIT_CASES[name]
    path = dit_file(tmp_path, tensors(), metadata)
    start = time.process_time()  # CPU time: the work done, which a loaded machine does not stretch
    with pytest.raises(CheckpointError, match=message) as error:  # CheckpointError: never a bare Python exception
        load_dit(path, dtype=torch.float32)
    assert time.process_time() - start < 2.0  # refused before anything large is built
    assert str(error.value).startswith("hostile.safetensors")


def test_a_value_beyond_fp16_is_named_when_loading_in_fp16(tmp_path):
    sd = dit_tensors()
    sd["img_in.proj.bias"] = sd["img_in.proj.bias"].clone().index_fill(0, torch.tensor([5]), 1e6)
    path = dit_file(tmp_path, sd)
    with pytest.raises(CheckpointError, match="'img_in.proj.bias' holds values beyond the range of torch.float16"):
        load_dit(path, dtype=torch.float16)
    assert torch.isfinite(next(load_dit(path, dtype=torch.float32).parameters())).all()  # fine in fp32


def test_int8_files_are_checked_the_same_way(tmp_path):
    from magic141_core.weights.int8 import quantize_linears_

    save_dit(quantize_linears_(random_dit(tiny())), tmp_path / "int8.safetensors")
    sd, meta = _read(tmp_path / "int8.safetensors"), _metadata(tmp_path / "int8.safetensors")
    scale = "double_blocks.0.img_mlp.fc2.weight._scale"
    save_file({**sd, scale: torch.full_like(sd[scale], float("nan"))}, str(tmp_path / "nan.safetensors"), meta)
    with pytest.raises(CheckpointError, match=f"tensor '{scale}' holds NaN"):
        load_dit(tmp_path / "nan.safetensors")
    save_file(with_block(sd, "double_blocks", HUGE), str(tmp_path / "crafted.safetensors"), meta)
    with pytest.raises(CheckpointError, match="'double_blocks.100000000."):
        load_dit(tmp_path / "crafted.safetensors")


VAE_CASES = {
    "encoder level 100000000": (lambda sd: with_block(sd, "encoder.down_blocks", HUGE), "config",
                                "'encoder.down_blocks.100000000."),
    "decoder level 100000000": (lambda sd: with_block(sd, "decoder.up_blocks", HUGE), "config",
                                          "'decoder.up_blocks.100000000."),
    "config claims 9 levels": (lambda sd: sd, {"block_out_channels": [8] * 9}, "'block_out_channels' says 9 blocks"),
    "config claims 1000 resnets": (lambda sd: sd, {"layers_per_block": 1000}, "'layers_per_block' says 1000"),
    "config with zero groups": (lambda sd: sd, {"norm_groups": 0}, "inconsistent .*modulo by zero"),
    "config missing a field": (lambda sd: sd, {"mid_attention": ...}, "'mid_attention' is missing"),
    "a NaN weight": (lambda sd: {**sd, "decoder.conv_out.conv.weight": sd["decoder.conv_out.conv.weight"] * torch.nan},
                     "config", "tensor 'decoder.conv_out.conv.weight' holds NaN"),
}


@pytest.mark.parametrize("name", list(VAE_CASES))
def test_a_hostile_or_broken_vae_file_is_refused_naming_what_is_wrong(name, tmp_path):
    change, config, message = VAE_CASES[name]
    sd = change({k: v.contiguous() for k, v in random_vae(tiny_vae(), seed=1).state_dict().items()})
    meta = None
    if config is not None:
        data = json.loads(tiny_vae().to_json())
        for key, value in ({} if config == "config" else config).items():
            data.pop(key) if value is Ellipsis else data.__setitem__(key, value)
        meta = {VAE_KEY: json.dumps(data)}
    save_file(sd, str(tmp_path / "vae.safetensors"), metadata=meta)
    start = time.process_time()
    with pytest.raises(CheckpointError, match=message):
        load_vae(tmp_path / "vae.safetensors", dtype=torch.float32)
    assert time.process_time() - start < 2.0


def test_a_crafted_clip_l_file_is_refused_naming_the_key(demo_models, tmp_path):
    from magic141_core.text import ClipSource
    from magic141_core.text.loading import load_clip

    sd = _read(demo_models["clip_l"])
    save_file(with_block(sd, "text_model.encoder.layers", HUGE), str(tmp_path / "clip_l.safetensors"))
    source = ClipSource(file=tmp_path / "clip_l.safetensors", tokenizer=COMFYUI / "comfy" / "sd1_tokenizer")
    start = time.process_time()
    with pytest.raises(CheckpointError, match="'text_model.encoder.layers.100000000."):
        load_clip(source, torch.float32)
    assert time.process_time() - start < 2.0


def _read(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _metadata(path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_loading_stops_between_layers_when_the_host_interrupts(tmp_path):
    save_dit(random_dit(tiny()), tmp_path / "dit.safetensors")
    layers = []

    class Stop(Exception):
        pass

    def host_check():
        layers.append(1)
        if len(layers) == 5:
            raise Stop("the user pressed cancel")

    set_interrupt_check(host_check)
    try:
        with pytest.raises(Stop):
            load_dit(tmp_path / "dit.safetensors")
    finally:
        set_interrupt_check(None)
    assert len(layers) == 5  # it stopped at the fifth layer, not at the end
    assert load_dit(tmp_path / "dit.safetensors") is not None  # and a later load runs


def test_the_pack_wires_comfyuis_interrupt_into_loading(pack, demo_models):
    import comfy.model_management as mm
    from conftest import run_node

    loader = pack.NODE_CLASS_MAPPINGS["Magic141ModelLoader"]
    mm.interrupt_current_processing(True)  # what ComfyUI's /interrupt sets
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_node(loader, model_name=DEMO_FILES["dit"][1], weight_dtype="bf16")
    finally:
        mm.interrupt_current_processing(False)
    (patcher,) = run_node(loader, model_name=DEMO_FILES["dit"][1], weight_dtype="bf16")  # the next load runs
    assert patcher.model.diffusion_model.config.double_blocks == 2


def test_the_cli_refuses_nan_weights_with_one_line_and_writes_no_video(demo_models, tmp_path):
    sd = _read(demo_models["dit"])
    key = "double_blocks.1.img_attn_qkv.weight"
    sd[key] = sd[key].clone().index_fill(0, torch.tensor([0]), float("inf"))
    save_file(sd, str(tmp_path / "nan_dit.safetensors"), metadata=_metadata(demo_models["dit"]))
    image = tmp_path / "start.png"
    Image.fromarray(np.full((48, 64, 3), 128, dtype=np.uint8)).save(image)
    result = cli("generate", "--image", image, "--prompt", "a lake", "--frames", 5, "--resolution", "64x48",
                 "--out", tmp_path / "out.mp4", "--dit", tmp_path / "nan_dit.safetensors", "--vae", demo_models["vae"],
                 "--llava", demo_models["llava"], "--llava-vision", demo_models["vision"],
                 "--clip-l", demo_models["clip_l"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"nan_dit.safetensors: tensor '{key}' holds NaN or infinite values" in lines[0]
    assert not list(tmp_path.glob("*.mp4"))


# ------------------------------------------------------------------------------- 3. links out of an image folder
@pytest.fixture
def linked_folder(tmp_path):
    """input/priors holds one real image, one link to a private image outside input/, and one link to an image
    elsewhere inside input/ (allowed)."""
    from magic141_core.priors import INDEX_NAME

    root, private = tmp_path / "input", tmp_path / "private"
    (root / "priors").mkdir(parents=True)
    (root / "other").mkdir()
    private.mkdir()
    rng = np.random.default_rng(0)
    for path in (root / "priors" / "real.png", root / "other" / "shared.png", private / "secret.png"):
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(path)
    (root / "priors" / "leak.png").symlink_to(private / "secret.png")
    (root / "priors" / "inside.png").symlink_to(root / "other" / "shared.png")
    assert not (root / "priors" / INDEX_NAME).exists()
    return root, private


def test_a_file_link_pointing_outside_is_never_indexed_read_or_returned(linked_folder, caplog):
    from tiny_clip import save_tiny_clip

    from magic141_core.priors import ClipEmbedder, ImageIndex, file_inside

    root, private = linked_folder
    embedder = ClipEmbedder(save_tiny_clip(root.parent / "clip"))
    index = ImageIndex(root / "priors", roots=[root])
    with caplog.at_level(logging.WARNING):
        index.update(embedder)
    assert sorted(k[0] for k in index.keys) == ["inside.png", "real.png"]
    assert "skipping leak.png: a link to a file outside" in caplog.text
    with Image.open(private / "secret.png") as secret:  # the query that would find the private image first
        own = embedder.embed_images([secret.convert("RGB")])[0]
    assert all(m.path.name != "leak.png" for m in index.query(own, k=10))

    # an index written elsewhere (or before a link was swapped in) never yields the outside path either
    save_safetensors({"embeddings": torch.cat([index.embeddings, own[None], own[None]])}, index.index_path,
                     {"format": "magic141-clip-index-v1", "model": embedder.identity,
                      "files": json.dumps([*map(list, index.keys), ["leak.png", 1, 1],
                                           ["../../private/secret.png", 1, 1]])}, overwrite=True)
    reloaded = ImageIndex(root / "priors", roots=[root])
    assert sorted(k[0] for k in reloaded.keys) == ["inside.png", "real.png"]
    (root / "priors" / "real.png").unlink()  # swapped for a link after indexing: refused at read time
    (root / "priors" / "real.png").symlink_to(private / "secret.png")
    assert all(m.path.name != "real.png" for m in reloaded.query(own, k=10))
    with pytest.raises(ValueError, match="real.png is a link to a file outside the allowed folders"):
        file_inside(root / "priors" / "real.png", [root])
