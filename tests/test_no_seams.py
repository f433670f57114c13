"""No seams in time: every decode a shipped workflow or node runs gives the frames of a one-pass decode, at 81 frames.

The native VAE Decode (Tiled) splits a clip in time when its temporal size is smaller than the clip, and the frames
after the split change (a visible jump). Here the real native VAE (HunyuanVideo layout, random weights: they mix
frames in time as trained ones do; the demo's pass-through weights hide the effect) decodes a smooth 81-frame latent
with each shipped workflow's VAE Decode (Tiled) settings and through Long Video's decode, against `vae.decode` in one
pass. The latent is 2 x 2 (16 px), smaller than a spatial tile, so only the temporal split is under test; spatial
tiling (256 px tiles, 64 px overlap, cross-faded) is a separate, documented approximation (docs/vae.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from magic141_core.vae import hunyuan_video_vae, random_vae

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "example_workflows").glob("*.json"))
TOLERANCE = 1e-4  # fp32 summation-order noise; a temporal split at 64 frames differs by about 0.1 on average


@pytest.fixture(scope="module")
def native_vae(comfy_base):
    import comfy.sd

    return comfy.sd.VAE(sd=random_vae(hunyuan_video_vae(), seed=0).state_dict())


@pytest.fixture(scope="module")
def latent():
    """A smooth 81-frame latent [1, 16, 21, 2, 2]: a ramp in time plus a fixed pattern."""
    ramp = torch.linspace(-1, 1, 21).view(1, 1, 21, 1, 1)
    return ramp + 0.5 * torch.randn(1, 16, 1, 2, 2, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def one_pass(native_vae, latent):
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        frames = native_vae.decode(latent)
    return frames.reshape(-1, *frames.shape[-3:])


@pytest.fixture(scope="module")
def tiled_decode(native_vae, latent):
    """Native VAE Decode (Tiled) with given widget values, each distinct setting decoded once."""
    import nodes

    cache = {}

    def decode(widgets):
        key = tuple(widgets)
        if key not in cache:
            with torch.inference_mode():  # as ComfyUI's executor runs every node
                cache[key] = nodes.VAEDecodeTiled().decode(native_vae, {"samples": latent}, *widgets)[0]
        return cache[key]

    return decode


def _decodes(path: Path) -> list[tuple[str, list]]:
    return [(node["type"], node["widgets_values"]) for node in json.loads(path.read_text())["nodes"]
            if node["type"] in ("VAEDecodeTiled", "VAEDecode", "Magic141LongVideo")]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_shipped_decode_equals_one_pass_at_81_frames(path, pack, native_vae, one_pass, tiled_decode, latent):
    decodes = _decodes(path)
    assert decodes, f"{path.name} decodes no video"
    for kind, widgets in decodes:
        if kind == "VAEDecodeTiled":
            frames = tiled_decode(widgets)
        elif kind == "VAEDecode":
            frames = one_pass
        else:  # Long Video decodes each window through the glue's NativeFrameVAE
            with torch.inference_mode():
                frames = torch.cat(list(pack.nodes.comfy_glue.NativeFrameVAE(native_vae).decode_frames(latent)))
        assert frames.shape == one_pass.shape == (81, 16, 16, 3)
        assert (frames - one_pass).abs().max() < TOLERANCE, (path.name, kind, widgets)


def test_a_temporal_split_would_be_caught(one_pass, tiled_decode):
    """The check above can fail: the old templates' temporal size 64 splits 81 frames and changes the later ones."""
    split = tiled_decode([256, 64, 64, 8])
    assert (split - one_pass)[60:].abs().mean() > 100 * TOLERANCE
