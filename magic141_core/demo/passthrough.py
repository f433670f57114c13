"""Hand-set weights that make the real architectures carry the start image through: the built-in demo's models.

Random weights turn any image into static, which shows nothing. These weights are just as untrained, but chosen so
that the wiring becomes visible: the VAE is a blurry colour autoencoder (latent channels 0-2 hold R, G, B at 1/8
size), so a demo video shows what the latent holds. A wrong channel order, flipped axis or misplaced frame anywhere
between the start image and the MP4 shows up in the demo's output.

Two tricks keep every layer linear in the colours although the architecture is not:
- SiLU pairs: a value `a` travels with `-a`, and silu(a) - silu(-a) = a exactly, so the conv after a SiLU reads `a`.
- Norm anchors: each GroupNorm group that carries colours also carries a large constant pair (+K, -K) set by a bias;
  the group's mean stays 0 and its variance is ~K^2-dominated, so the norm divides by a nearly fixed number.
Residual blocks pass through (second conv and attention output zeroed, shortcuts copy channels); resamplers blur.
"""

from __future__ import annotations

import math

import torch

ANCHOR = 32.0  # K: large against colour values (|a| <= ~2), so a group's variance varies by < 1 %
LATENT_GAIN = 2.0  # unscaled latent = 2 * colour in [-1, 1]: about the real VAE's latent range

_BLUR = torch.tensor([0.25, 0.5, 0.25])  # spatial taps of every resampler: a tent filter, no aliasing stripes
_HOLD = torch.tensor([0.0, 0.0, 1.0])  # temporal taps: the current frame only (causal: the last tap)
_MIX = torch.tensor([0.0, 0.5, 0.5])  # temporal taps of a 2x temporal downsampler: the two frames it merges


def _per_channel(conv: torch.nn.Conv3d, time_taps: torch.Tensor, space_taps: torch.Tensor) -> None:
    """Each output channel filters its own input channel with the separable kernel time x space x space."""
    kernel = torch.einsum("t,h,w->thw", time_taps, space_taps, space_taps)
    conv.weight.zero_()
    conv.bias.zero_()
    for c in range(conv.out_channels):
        conv.weight[c, c] = kernel


def _copy_channels(conv: torch.nn.Conv3d, pairs, gain: float = 1.0) -> None:
    """conv.weight[out, in] = gain at the current pixel and frame (last temporal tap, spatial centre), per pair."""
    conv.weight.zero_()
    conv.bias.zero_()
    kt, kh, kw = conv.weight.shape[2:]
    for out, inp, sign in pairs:
        conv.weight[out, inp, kt - 1, kh // 2, kw // 2] = sign * gain


def _anchor(conv: torch.nn.Conv3d, channels) -> None:
    """The constant pair (+K, -K) in `channels` (a zeroed residual conv's bias: the block adds it to its input)."""
    conv.bias[channels[0]], conv.bias[channels[1]] = ANCHOR, -ANCHOR


def _group_scale(group_size: int) -> float:
    """What GroupNorm divides by in a group holding one (+K, -K) pair (the colour pairs add < 1 % to it)."""
    return ANCHOR * math.sqrt(2 / group_size)


@torch.no_grad()
def passthrough_vae(config):
    """A `HunyuanVideoVAE` of `config` whose latent is the blurred, downsampled colour image (channels 0-2)."""
    from ..vae.model import HunyuanVideoVAE

    vae = HunyuanVideoVAE(config).eval().requires_grad_(False)
    for p in vae.parameters():
        p.zero_()
    for module in vae.modules():  # norms: weight 1; every level's resnets and attentions pass through
        if isinstance(module, torch.nn.GroupNorm):
            module.weight.fill_(1.0)
    for name, module in vae.named_modules():
        if name.endswith("conv_shortcut"):
            _copy_channels(module.conv, [(c, c, 1) for c in range(min(module.conv.in_channels, module.conv.out_channels))])
        elif name.endswith(("downsamplers.0.conv", "upsamplers.0.conv")):
            stride = module.conv.stride[0]
            _per_channel(module.conv, _MIX if stride == 2 else _HOLD, _BLUR)
    for conv in (vae.quant_conv, vae.post_quant_conv):
        conv.weight[:, :, 0, 0, 0] = torch.eye(conv.out_channels)

    # encoder: RGB -> channels [R, -R, G, -G, B, -B, K, -K] (one norm group at the end) -> latent 0-2 = GAIN * RGB
    enc, groups = vae.encoder, config.norm_groups
    _copy_channels(enc.conv_in.conv, [(2 * c + s, c, 1 - 2 * s) for c in range(3) for s in (0, 1)])
    _anchor(enc.mid_block.resnets[1].conv2.conv, (6, 7))
    gain = LATENT_GAIN * _group_scale(config.block_out_channels[-1] // groups)
    _copy_channels(enc.conv_out.conv, [(c, 2 * c + s, 1 - 2 * s) for c in range(3) for s in (0, 1)], gain)
    enc.conv_out.conv.bias[config.latent_channels:] = -20.0  # log-variance: a posterior this sharp is the mean

    # decoder: latent 0-2 -> groups [a, -a, K, -K] per colour (the last norm's groups are small) -> RGB = latent / GAIN
    dec, width = vae.decoder, config.block_out_channels[0]
    group = width // groups
    if group < 4:
        raise ValueError(f"the pass-through decoder needs >= 4 channels per norm group, got {group}")
    _copy_channels(dec.conv_in.conv, [(group * c + s, c, 1 - 2 * s) for c in range(3) for s in (0, 1)])
    for c in range(3):
        _anchor(dec.up_blocks[-1].resnets[-1].conv2.conv, (group * c + 2, group * c + 3))
    gain = _group_scale(group) / LATENT_GAIN
    _copy_channels(dec.conv_out.conv, [(c, group * c + s, 1 - 2 * s) for c in range(3) for s in (0, 1)], gain)
    return vae


# -- the DiT: every frame's velocity points at the start image's latent ------------------------------------------
# Video token layout (hidden size D >= 200; patch values in the checkpoint's (c, pt, ph, pw) order, 64 per token):
#   [0, 64) noisy latent x_t   [64, 128) reference   [128, 192) P: the reference brought to every frame
#   192 mask   193 zero   194, 195 the anchor (+K, -K)
# Single block 0 moves the reference: in head 0, each video token's query finds the frame-0 key at its own spatial
# position (RoPE scores peak at zero offset; the mask adds a bonus to frame-0 keys), reads its reference, writes it
# to P. The final layer outputs v = GAIN * (x_t - P): Euler steps move every frame toward P and the last one, at the
# default schedule's sigma 0.625, lands on it exactly. Every other block passes through (gates 0), and text tokens
# are zero, so their keys score 0 against the video's large ones. Time, guidance and prompt do not matter.
_X, _REF, _P, _MASK, _ZERO, _ANCHOR = 0, 64, 128, 192, 193, 194
DIT_ANCHOR = 128.0
FINAL_GAIN = 1 / 0.625  # 1 / the last sigma of 4 steps at shift 5
_Q_SPATIAL_PAIRS = 3  # the three highest RoPE frequencies of each spatial axis: sharp, no alias within 60 tokens


def _read(weight: torch.Tensor, row: int, column: int, value: float) -> None:
    """Row `row` reads hidden channel `column` x value, minus the zero channel x value: after a LayerNorm that is
    value x (channel / sigma), the mean LayerNorm subtracted cancelling out."""
    weight[row, column] = value
    weight[row, _ZERO] = -value


@torch.no_grad()
def passthrough_dit(config):
    """A `Magic141DiT` of `config` (image-to-video, patch (1, 2, 2), 16 latent channels) that renders the start image."""
    from ..dit import Magic141DiT

    d, (at, ay, _) = config.hidden_size, config.rope_axes
    if not config.is_i2v or tuple(config.patch_size) != (1, 2, 2) or d < 200:
        raise ValueError("the pass-through DiT needs an image-to-video config with patch (1, 2, 2) and hidden >= 200")
    dit = Magic141DiT(config).eval().requires_grad_(False)
    for p in dit.parameters():
        p.zero_()

    embed = dit.img_in.proj  # weight [D, 33, 1, 2, 2]
    w = embed.weight.view(d, -1)  # [D, 33 * 4]: input features in (c, pt, ph, pw) order
    w[_X:_X + 64, :64] = torch.eye(64)
    w[_REF:_REF + 64, 64:128] = torch.eye(64)
    w[_MASK, 128:132] = 0.25
    embed.bias[_ANCHOR], embed.bias[_ANCHOR + 1] = DIT_ANCHOR, -DIT_ANCHOR
    sigma = DIT_ANCHOR * math.sqrt(2 / d)  # what the LayerNorms divide by (the anchor dominates the variance)

    block = dit.single_blocks[0]
    block.modulation.linear.bias[2 * d:] = 1.0  # shift 0, scale 0, gate 1
    qkv = block.linear1.weight  # rows: q [0, D), k [D, 2D), v [2D, 3D), then the MLP; head 0 = the first Dh rows
    if d // config.num_heads < 64:
        raise ValueError("the pass-through DiT needs a head dim >= 64 (one head carries a 64-value patch)")
    spatial = [at + 2 * i for i in range(_Q_SPATIAL_PAIRS)] + [at + ay + 2 * i for i in range(_Q_SPATIAL_PAIRS)]
    bonus = at - 2  # the temporal pair with the lowest frequency: cos(t * theta) ~ 1 over a clip
    for row in spatial:  # query and key: the same constant on the real part of each sharp spatial pair
        _read(qkv, row, _ANCHOR, 1 / math.sqrt(d / 2))
        _read(qkv, d + row, _ANCHOR, 1 / math.sqrt(d / 2))
    _read(qkv, bonus, _ANCHOR, 4 / math.sqrt(d / 2))  # the query asks for the mask ...
    _read(qkv, d + bonus, _MASK, 2 * sigma)  # ... which only frame-0 keys carry
    for j in range(64):  # value: the reference patch (minus the zero channel: LayerNorm's mean cancels)
        _read(qkv, 2 * d + j, _REF + j, 1.0)
    block.linear2.weight[_P:_P + 64, :64] = sigma * torch.eye(64)
    block.q_norm.weight.fill_(8.0)
    block.k_norm.weight.fill_(8.0)

    final = dit.final_layer.linear  # v = GAIN * (x_t - P), undoing the LayerNorm's division
    final.weight[:, _X:_X + 64] = FINAL_GAIN * sigma * torch.eye(64)
    final.weight[:, _P:_P + 64] = -FINAL_GAIN * sigma * torch.eye(64)
    return dit


# -- the demo LoRA: a colour grade the passthrough DiT's final layer can carry -------------------------------------
# The final layer reads P (the start image's latent, channel c of each 2x2 patch at hidden _P + 4c + k) with weight
# -FINAL_GAIN * sigma, and the last Euler step lands every frame on exactly what it subtracts. Adding
# -FINAL_GAIN * sigma * (M - I) on those columns lands it on M P instead: with M swapping latent channels 0 and 2 (red
# and blue; the demo VAE's latent is 2 x colour in [-1, 1], so the swap is the same on the pixels), the clip's red
# and blue trade places. M - I = u v^T with u = (1, 0, -1), v = (-1, 0, 1): rank 1 per patch position, 4 in all.
SWAP_U, SWAP_V = (1.0, 0.0, -1.0), (-1.0, 0.0, 1.0)


@torch.no_grad()
def red_blue_swap_lora(config) -> dict[str, torch.Tensor]:
    """A LoRA for `passthrough_dit(config)` in the official (diffusion-pipe) layout, rank 4, alpha 4: at strength s
    every frame becomes (1 - s) x the start image + s x the start image with red and blue swapped (s = 1: swapped)."""
    d, patch = config.hidden_size, math.prod(config.patch_size)  # patch: latent values per channel in a token (4)
    sigma = DIT_ANCHOR * math.sqrt(2 / d)  # what the final LayerNorm divides by (see passthrough_dit)
    down = torch.zeros(patch, d)  # A [r, in]
    up = torch.zeros(patch * config.out_channels, patch)  # B [out, r]
    for k in range(patch):
        for c in range(3):
            down[k, _P + patch * c + k] = SWAP_V[c]
            up[patch * c + k, k] = -FINAL_GAIN * sigma * SWAP_U[c]
    prefix = "diffusion_model.final_layer.linear"
    alpha = torch.tensor(float(patch))  # = rank: the update is B A itself
    return {f"{prefix}.lora_A.weight": down, f"{prefix}.lora_B.weight": up, f"{prefix}.alpha": alpha}
