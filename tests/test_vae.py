"""The causal 3-D VAE against diffusers' AutoencoderKLHunyuanVideo, and its tiling, streaming, loading and errors."""

from __future__ import annotations

import logging

import diffusers  # the reference: required, so a broken install fails these tests instead of skipping them
import pytest
import torch
import torch.nn.functional as F
from conftest import live_tensor_bytes
from safetensors.torch import save_file

from magic141_core.weights import CheckpointError, save_safetensors
from magic141_core.dit.config import tiny
from magic141_core.dit.loading import random_dit
from magic141_core.vae import (
    SCALING_FACTOR,
    HunyuanVideoVAE,
    Tiling,
    VAEConfig,
    estimate_bytes,
    load_vae,
    plan_tiling,
    random_vae,
    save_vae,
    scale_latent,
    tiny_vae,
    unscale_latent,
)
from magic141_core.vae import causal
from magic141_core.vae.loading import CONFIG_METADATA_KEY


PARITY_ATOL = 1e-4  # fp32 CPU; only the summation order of convolution kernels differs (~3e-6 seen)
# 8-16 channels per GroupNorm group, as in the released VAE (32 groups of 128-512 channels)
WIDER = dict(block_out_channels=(16, 16, 32, 32), norm_groups=2)


def diffusers_twin(config: VAEConfig, sd: dict) -> torch.nn.Module:
    """diffusers' model of the same config holding our weights under the same names (strict), tiling off."""
    levels = len(config.block_out_channels)
    model = diffusers.AutoencoderKLHunyuanVideo(
        in_channels=config.in_channels, out_channels=config.out_channels, latent_channels=config.latent_channels,
        block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_groups, mid_block_add_attention=config.mid_attention,
        down_block_types=("HunyuanVideoDownBlock3D",) * levels, up_block_types=("HunyuanVideoUpBlock3D",) * levels,
    )
    model.load_state_dict(sd, strict=True)
    model.use_framewise_encoding = model.use_framewise_decoding = False  # on by default in diffusers
    return model.eval()


def smooth_latent(shape, seed: int) -> torch.Tensor:
    """A latent that varies smoothly in time and space, like a video's (white noise is not)."""
    B, C, T, h, w = shape
    coarse = torch.randn(B, C, T // 2 + 2, h // 4 + 1, w // 4 + 1, generator=torch.Generator().manual_seed(seed))
    return 1.5 * F.interpolate(coarse, size=(T, h, w), mode="trilinear", align_corners=True)


@pytest.fixture(scope="module")
def vae():
    return random_vae(tiny_vae(), seed=3)


@pytest.fixture(scope="module")
def twin(vae):
    return diffusers_twin(vae.config, vae.state_dict())


# -- parity with diffusers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 9], ids=["image", "clip"])
def test_encode_matches_diffusers(vae, twin, frames):
    x = torch.rand(2, 3, frames, 32, 48, generator=torch.Generator().manual_seed(frames)) * 2 - 1
    got = vae.encode(x[:, :, 0] if frames == 1 else x, Tiling.off())  # an image may come as [B, 3, H, W]
    with torch.no_grad():
        want = twin.encode(x).latent_dist
    assert got.mean.shape == (2, 16, (frames - 1) // 4 + 1, 4, 6)
    assert (got.mean - want.mean).abs().max().item() <= PARITY_ATOL
    assert (got.logvar - want.logvar).abs().max().item() <= PARITY_ATOL
    a, b = got.sample(5), want.sample(torch.Generator().manual_seed(5))
    assert (a - b).abs().max().item() <= PARITY_ATOL  # the same seeded draw as the official pipeline's sample()
    assert not torch.equal(a, got.sample(6))
    planned = vae.encode(x[:, :, 0] if frames == 1 else x)  # split planned from the free memory: none needed here
    assert torch.equal(planned.mean, got.mean)


def test_decode_matches_diffusers(vae, twin):
    z = torch.randn(2, 16, 3, 4, 6, generator=torch.Generator().manual_seed(1))
    raw = vae.decode_pixels(z)
    frames = vae.decode(z, Tiling.off())
    with torch.no_grad():
        want = twin.decode(z).sample
    assert raw.shape == frames.shape == (2, 3, 9, 32, 48) and frames.dtype == torch.float32
    assert (raw - want).abs().max().item() <= PARITY_ATOL
    assert (frames - (want / 2 + 0.5).clamp(0, 1)).abs().max().item() <= PARITY_ATOL
    assert frames.min() >= 0 and frames.max() <= 1 and raw.abs().max() > 1  # clamping was exercised


def test_scaling_helpers_are_inverse_and_use_the_hunyuan_factor():
    import inspect

    z = torch.randn(1, 16, 2, 3, 3)
    # the released VAE's factor, as diffusers' model of it declares it
    assert SCALING_FACTOR == inspect.signature(diffusers.AutoencoderKLHunyuanVideo).parameters["scaling_factor"].default
    assert torch.allclose(scale_latent(z), z * 0.476986)
    assert torch.allclose(unscale_latent(scale_latent(z)), z)


# -- chunked and tiled decode --------------------------------------------------------------------------------------


def test_chunks_continue_the_one_pass_exactly_when_normalisation_is_frozen(monkeypatch):
    """GroupNorm statistics are the one thing chunks cannot share with one pass (see below). With them replaced by a
    fixed affine map, chunked decode and encode must equal one pass: the carried conv frames, the first-frame
    handling of the upsamplers and the attention's earlier keys/values are then exact."""

    def frozen(self, x, state=None):
        return x * (0.3 * self.weight)[:, None, None, None] + self.bias[:, None, None, None]

    monkeypatch.setattr(causal.GroupNorm, "forward", frozen)
    vae = random_vae(tiny_vae(), seed=4)
    z = torch.randn(1, 16, 6, 4, 5, generator=torch.Generator().manual_seed(2))
    one_pass = vae.decode(z, Tiling.off())
    for chunk in (1, 4):
        assert (vae.decode(z, Tiling(chunk_frames=chunk)) - one_pass).abs().max().item() < 1e-5
    x = torch.rand(1, 3, 13, 16, 24, generator=torch.Generator().manual_seed(3)) * 2 - 1
    moments = vae.encode(x, Tiling.off()).mean
    assert (vae.encode(x, Tiling(chunk_frames=2)).mean - moments).abs().max().item() < 1e-5
    # a too-short attention history is not exact: the check above can fail
    assert (vae.decode(z, Tiling(chunk_frames=1, attention_frames=1)) - one_pass).abs().max().item() > 1e-4


def test_running_group_norm_reaches_the_whole_clip_statistics():
    """With a state, GroupNorm normalises each chunk by the statistics of all frames so far: the first chunk by its
    own (exactly F.group_norm), the last by the whole clip's (exactly F.group_norm over the concatenation)."""
    norm = causal.GroupNorm(4, 16, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_(generator=torch.Generator().manual_seed(0)), norm.bias.normal_()
        x = 5 * torch.randn(2, 16, 9, 6, 7, generator=torch.Generator().manual_seed(1)) + 3
        state = causal.CausalState()
        first, _, last = (norm(chunk, state) for chunk in x.split([3, 4, 2], dim=2))
        whole = F.group_norm(x, 4, norm.weight, norm.bias, 1e-6)
        assert torch.equal(first, F.group_norm(x[:, :, :3], 4, norm.weight, norm.bias, 1e-6))
        assert (last - whole[:, :, 7:]).abs().max().item() < 1e-5


def test_tiled_and_chunked_decode_stays_close_to_one_pass():
    """Bound: clearly closer to one pass than the reference implementation's own tiling.

    No tiled decode can equal one pass: GroupNorm normalises each tile with its own statistics (and each chunk with
    those of the frames so far, where one pass uses the whole clip), and the mid-block attention sees one tile.
    diffusers' tiled decode, the scheme the official pipeline uses, shares these limits and in addition restarts
    every temporal tile from replicated padding and cross-fades the seam; ours continues the convolutions exactly
    (previous test). So at equal tile, overlap and chunk sizes its mean |difference| from one pass must be at most
    3/4 of theirs (measured 0.47-0.68 over 4 seeds), and with temporal chunks alone at most 1/2 (measured 0.22-0.29).
    Sanity caps on [0, 1] frames, loose because random weights amplify normalisation differences far more than the
    trained VAE: mean 0.1 tiled, 0.05 chunked (measured 0.073 and 0.026 here).
    """
    vae = random_vae(tiny_vae(**WIDER), seed=5)
    z = smooth_latent((1, 16, 7, 12, 16), seed=6)
    one_pass = vae.decode(z, Tiling.off())
    ours_tiled = vae.decode(z, Tiling(tile_height=8, tile_width=10, overlap=4, chunk_frames=3))
    ours_chunked = vae.decode(z, Tiling(chunk_frames=3))
    reference = diffusers_twin(vae.config, vae.state_dict())
    reference.enable_tiling(  # the same sizes in pixels: 64x80 tiles, 32 px overlap, 3 latent frames per tile
        tile_sample_min_height=64, tile_sample_min_width=80, tile_sample_stride_height=32,
        tile_sample_stride_width=48, tile_sample_min_num_frames=12, tile_sample_stride_num_frames=12,
    )
    reference.use_framewise_decoding = True
    with torch.no_grad():
        their_tiled = (reference.decode(z).sample / 2 + 0.5).clamp(0, 1)
        reference.use_tiling = False
        their_chunked = (reference.decode(z).sample / 2 + 0.5).clamp(0, 1)

    def error(frames):
        assert frames.shape == one_pass.shape == (1, 3, 25, 96, 128)
        return (frames - one_pass).abs().mean().item()

    assert error(ours_tiled) <= 0.75 * error(their_tiled) and error(ours_tiled) < 0.1
    assert error(ours_chunked) <= 0.5 * error(their_chunked) and error(ours_chunked) < 0.05


def test_stream_yields_the_frames_of_one_shot_decode_in_order(vae):
    """decode() runs tile by tile, decode_stream() chunk by chunk; the frames must be identical, in order."""
    z = torch.randn(1, 16, 6, 10, 12, generator=torch.Generator().manual_seed(7))  # k+1 = 6 -> 4k+1 = 21 frames
    tiling = Tiling(tile_height=7, tile_width=8, overlap=3, chunk_frames=2)
    progress = []
    chunks = list(vae.decode_stream(z, tiling, callback=lambda done, total: progress.append((done, total))))
    one_shot = vae.decode(z, tiling)
    assert [c.shape[2] for c in chunks] == [9, 8, 4]  # latent [0,3) -> 1+4+4 frames, [3,5) -> 8, [5,6) -> 4
    assert torch.equal(torch.cat(chunks, dim=2), one_shot) and one_shot.shape == (1, 3, 21, 80, 96)
    assert progress == [(1, 3), (2, 3), (3, 3)]
    whole = vae.decode(z, Tiling(chunk_frames=None))  # one chunk, one tile: no state at all
    assert len(list(vae.decode_stream(z, Tiling(chunk_frames=None)))) == 1 and whole.shape == one_shot.shape


def test_raising_from_the_callback_stops_between_chunks(vae):
    z = torch.randn(1, 16, 5, 4, 4)
    seen = []

    def interrupt(done, total):
        if done == 2:
            raise KeyboardInterrupt
    stream = vae.decode_stream(z, Tiling(chunk_frames=1), callback=interrupt)
    with pytest.raises(KeyboardInterrupt):
        for frames in stream:
            seen.append(frames.shape[2])
    assert seen == [5]  # the second chunk was decoded but never delivered, and nothing after it ran


def test_streaming_memory_plan_is_flat_in_clip_length():
    """Streaming keeps every tile's state and one chunk: the same bytes for 81 or 321 frames (once the clip is longer
    than the attention history); the one-shot decode holds the whole output."""
    config, tiling = VAEConfig(), Tiling(tile_height=36, tile_width=44)  # the released VAE, 544x960
    stream = {estimate_bytes(config, (1, 16, t, 68, 120), tiling, 2) for t in (21, 41, 81)}
    one_shot = [estimate_bytes(config, (1, 16, t, 68, 120), tiling, 2, stream=False) for t in (21, 41)]
    assert len(stream) == 1 and one_shot[1] > one_shot[0]


def test_streaming_decode_holds_no_earlier_chunk(vae):
    """decode_stream over a clip longer than its attention history: after each chunk is handed out, the tensors
    Python still holds (`live_tensor_bytes`: exact, no allocator noise) are what they were after the second chunk
    (the history is full from there). Measured: 0 bytes of growth. Bound: half of what one more latent frame of
    attention history holds (keys and values, 16 channels x 4 x 4 pixels in fp32: 2 kB), the smallest growth a
    leak could cause; a kept output chunk would add 49 kB per chunk."""
    z = torch.randn(1, 16, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    alive = [live_tensor_bytes() for _ in vae.decode_stream(z, Tiling(chunk_frames=1, attention_frames=2))]
    history_frame = 2 * vae.config.block_out_channels[-1] * 4 * 4 * 4
    growth = [a - alive[1] for a in alive[1:]]
    assert len(alive) == 7 and max(growth) < history_frame / 2, growth


def test_plan_fits_the_budget_and_never_fails(caplog):
    config, shape = VAEConfig(), (1, 16, 21, 68, 120)  # 81 frames at 544x960
    roomy = plan_tiling(config, shape, 1 << 50)
    assert roomy.tile_height is None and roomy.tile_width is None and roomy.chunk_frames == 4
    budget = 8 << 30
    tight = plan_tiling(config, shape, budget, element_size=2)
    assert tight.tile_width is not None and estimate_bytes(config, shape, tight, 2) <= budget
    assert estimate_bytes(config, shape, Tiling(tile_height=None, tile_width=None, chunk_frames=1), 2) > budget
    with caplog.at_level(logging.WARNING):
        hopeless = plan_tiling(config, shape, 1 << 20, element_size=2)
    assert hopeless.chunk_frames == 1 and "budget" in caplog.text  # the least memory, with a warning


# -- dtypes --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("native_bf16", [False, True], ids=["cpu-without-bf16-units", "cpu-with"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_weights_and_activations_in_every_dtype(vae, dtype, native_bf16, monkeypatch):
    """Half-precision weights compute in fp32 on a CPU without fast half matmuls (weights cast on the fly), or in
    their own dtype when asked (as on a GPU; fp16 never: it becomes bf16 where native, else fp32); both stay close
    to fp32. Both CPU kinds are forced, so the test means the same on every machine. Bounds: 2x the measured
    difference."""
    import magic141_core.runtime.device as device

    monkeypatch.setattr(device, "cpu_half_is_fast", lambda half: native_bf16 and half == torch.bfloat16)
    z = torch.randn(1, 16, 3, 2, 3, generator=torch.Generator().manual_seed(8))
    tiling = Tiling(chunk_frames=1)  # chunks [0, 2), [2, 3): the carried state in that dtype too
    want = vae.decode(z, tiling)
    stored = random_vae(vae.config, seed=3, dtype=dtype)  # the same weights, stored in `dtype`
    own = torch.bfloat16 if native_bf16 and dtype == torch.bfloat16 else torch.float32  # the device's choice
    asked = {torch.float16: torch.bfloat16 if native_bf16 else torch.float32}.get(dtype, dtype)  # fp16 never
    assert stored.quant_conv.weight.dtype == dtype and stored.activation_dtype == own
    by_device = stored.decode(z, tiling)
    stored.compute_dtype = dtype
    assert stored.activation_dtype == asked
    by_request = stored.decode(z, tiling)
    # max |difference| from fp32 on [0, 1] frames, by (weights, compute dtype): about 2x the measured (0, 0.010,
    # 0.029, 0.0018, 0.042)
    bound = {(torch.float32, torch.float32): 1e-6, (torch.bfloat16, torch.float32): 0.02,
             (torch.bfloat16, torch.bfloat16): 0.06, (torch.float16, torch.float32): 0.004,
             (torch.float16, torch.bfloat16): 0.09}
    assert by_device.dtype == by_request.dtype == torch.float32 and torch.isfinite(by_request).all()
    assert (by_device - want).abs().max().item() <= bound[dtype, own]
    assert (by_request - want).abs().max().item() <= bound[dtype, asked]


# -- files ---------------------------------------------------------------------------------------------------------


def _same_weights(model: HunyuanVideoVAE, sd: dict) -> bool:
    got = model.state_dict()
    return got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)


def test_safetensors_round_trip(tmp_path, vae):
    save_vae(vae, tmp_path / "vae.safetensors")
    loaded = load_vae(tmp_path / "vae.safetensors", dtype=None)
    assert loaded.config == vae.config and _same_weights(loaded, vae.state_dict())
    z = torch.randn(1, 16, 2, 3, 3)
    assert torch.equal(loaded.decode(z, Tiling.off()), vae.decode(z, Tiling.off()))
    assert load_vae(tmp_path / "vae.safetensors").quant_conv.weight.dtype == torch.bfloat16  # default dtype


@pytest.mark.parametrize("layout", ["official", "comfyui_saved", "official_pt_vae_prefix", "old_attention_names"])
def test_every_file_layout_loads_the_same_weights(tmp_path, layout, comfy_base):
    """Official = diffusers = the hunyuan_video_vae_bf16.safetensors ComfyUI users keep; also ComfyUI's own (LDM)
    names (made by ComfyUI's own conversion) under a checkpoint prefix, and the official training checkpoint's `vae.`
    prefix in a .pt. No metadata: the config is read off the shapes (with the released VAE's 32 GroupNorm groups)."""
    sd = random_vae(tiny_vae(block_out_channels=(32, 32, 32, 32), norm_groups=32), seed=9).state_dict()
    path = tmp_path / ("vae.pt" if layout == "official_pt_vae_prefix" else "vae.safetensors")
    if layout == "official":
        save_file(sd, path)
    elif layout == "comfyui_saved":
        from comfy.diffusers_convert import convert_vae_state_dict

        comfy = convert_vae_state_dict(dict(sd))  # what ComfyUI holds in memory, and what its ModelSave writes
        for name in ("decoder.up.1.upsample.conv.conv.weight", "encoder.down.0.downsample.conv.conv.weight",
                     "encoder.mid.block_1.norm1.weight", "decoder.norm_out.weight", "decoder.mid.attn_1.proj_out.bias"):
            assert name in comfy  # names as ComfyUI's diffusers_convert.convert_vae_state_dict produces them
        assert "decoder.up.0.upsample.conv.conv.weight" not in comfy  # up levels are numbered in reverse
        assert comfy["encoder.mid.attn_1.q.weight"].shape == (32, 32, 1, 1, 1)
        save_file({f"first_stage_model.{k}": v for k, v in comfy.items()}, path)
    elif layout == "old_attention_names":
        old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
        renamed = {k: v for k, v in sd.items()}
        for part in ("encoder", "decoder"):
            for new_name, old_name in old.items():
                for p in ("weight", "bias"):
                    key = f"{part}.mid_block.attentions.0.{new_name}.{p}"
                    renamed[key.replace(new_name, old_name)] = renamed.pop(key)
        save_file(renamed, path)
    else:
        torch.save({"state_dict": {f"vae.{k}": v for k, v in sd.items()}}, path)
    loaded = load_vae(path, dtype=None)
    assert loaded.config.block_out_channels == (32, 32, 32, 32) and loaded.config.layers_per_block == 1
    assert _same_weights(loaded, sd)


# -- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 3, 8, 16, 16), r"4k\+1 frames, got 8; use 5 or 9"),
        ((1, 3, 5, 30, 16), r"height must be a positive multiple of 8, got 30; resize or crop to 32"),
        ((1, 3, 5, 16, 20), r"width must be a positive multiple of 8, got 20"),
        ((1, 4, 5, 16, 16), r"encodes 3-channel frames, got 4"),
        ((1, 5, 16, 16, 3), r"got 5 channels; channels come second"),
        ((3, 16, 16), r"expected frames shaped \[B, 3, F, H, W\]"),
    ],
)
def test_bad_frames_raise_clear_errors(vae, shape, message):
    with pytest.raises(ValueError, match=message):
        vae.encode(torch.zeros(shape))


@pytest.mark.parametrize(
    "shape, message",
    [((1, 33, 2, 4, 4), r"16-channel latents, got 33 channels"), ((16, 2, 4, 4), r"\[B, 16, T, h, w\]")],
)
def test_bad_latents_raise_clear_errors(vae, shape, message):
    with pytest.raises(ValueError, match=message):
        vae.decode(torch.zeros(shape))
    with pytest.raises(ValueError, match=message):
        vae.decode_stream(torch.zeros(shape))  # raised at the call, before any frame


def test_bad_tiling_raises():
    with pytest.raises(ValueError, match="overlap 8 must be smaller than tile_height 8"):
        Tiling(tile_height=8, overlap=8)
    with pytest.raises(ValueError, match="chunk_frames"):
        Tiling(chunk_frames=0)


def test_wrong_files_get_a_clear_error(tmp_path):
    save_file(random_dit(tiny(), seed=1).state_dict(), tmp_path / "dit.safetensors")
    with pytest.raises(CheckpointError, match="dit.safetensors is not a HunyuanVideo VAE.*looks like a Magic141"):
        load_vae(tmp_path / "dit.safetensors")
    image_vae = {"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3), "decoder.conv_in.weight": torch.zeros(8, 4, 3, 3)}
    save_file(image_vae, tmp_path / "sdxl_vae.safetensors")
    with pytest.raises(CheckpointError, match="sdxl_vae.safetensors is not a HunyuanVideo VAE"):
        load_vae(tmp_path / "sdxl_vae.safetensors")
    sd = random_vae(tiny_vae(), seed=2).state_dict()
    sd["decoder.conv_out.conv.weight"] = sd["decoder.conv_out.conv.weight"][:, :4]  # a truncated/mismatched file
    save_safetensors(sd, tmp_path / "broken.safetensors", {CONFIG_METADATA_KEY: tiny_vae().to_json()})
    with pytest.raises(CheckpointError, match="broken.safetensors does not fit the VAE.*decoder.conv_out"):
        load_vae(tmp_path / "broken.safetensors")
