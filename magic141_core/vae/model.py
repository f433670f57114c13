"""The HunyuanVideo causal 3-D VAE: encoder, decoder, and the model users call (`encode`, `decode`, `decode_stream`).

Shapes (8x spatial, 4x temporal, 16 latent channels):
    frames [B, 3, 4k+1, H, W] in [-1, 1]  --encode-->  LatentDistribution over [B, 16, k+1, H/8, W/8] (unscaled)
    latent [B, 16, k+1, h, w] (unscaled)  --decode-->  frames [B, 3, 4k+1, 8h, 8w], float32 in [0, 1], RGB

`encode` / `decode` split the work into spatial tiles and temporal chunks (`tiling.py`) chosen from a memory budget
unless a `Tiling` is given; `Tiling.off()` is one pass over the whole clip, exactly the reference computation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.device import RANGE_SAFE, compute_dtype_for, safe_dtype
from ..runtime.finite import VAE_ADVICE, check_finite
from ..runtime.interrupt import check_interrupt
from .blocks import EPS, DownBlock, MidBlock, UpBlock
from .causal import CausalConv3d, CausalState, GroupNorm, pointwise
from .config import VAEConfig
from .latent import LatentDistribution
from .shapes import check_latent, check_video
from .streaming import decode_chunks, decode_into, encode_tiled
from .tiling import Tiling

Progress = Callable[[int, int], None]  # (chunks done, chunks in total); raising from it stops the decode


class Encoder(nn.Module):
    """frames [B, 3, 4k+1, H, W] -> moments [B, 2*latent, k+1, H/8, W/8] (before `quant_conv`)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths, groups = config.block_out_channels, config.norm_groups
        self.conv_in = CausalConv3d(config.in_channels, widths[0])
        self.down_blocks = nn.ModuleList()
        for i, factors in enumerate(config.resample_factors()):
            previous = widths[max(i - 1, 0)]
            self.down_blocks.append(DownBlock(previous, widths[i], config.layers_per_block, groups, factors))
        self.mid_block = MidBlock(widths[-1], groups, config.mid_attention)
        self.conv_norm_out = GroupNorm(groups, widths[-1], eps=EPS)
        self.conv_out = CausalConv3d(widths[-1], 2 * config.latent_channels)

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        x = self.conv_in(x, state)
        for block in self.down_blocks:
            x = block(x, state)
        x = self.mid_block(x, state)
        return self.conv_out(F.silu(self.conv_norm_out(x, state), inplace=True), state)


class Decoder(nn.Module):
    """latent [B, latent, T, h, w] (after `post_quant_conv`) -> pixels [B, 3, 4(T-1)+1, 8h, 8w], roughly [-1, 1]."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths, groups = config.block_out_channels[::-1], config.norm_groups
        self.conv_in = CausalConv3d(config.latent_channels, widths[0])
        self.mid_block = MidBlock(widths[0], groups, config.mid_attention)
        self.up_blocks = nn.ModuleList()
        for i, factors in enumerate(config.resample_factors()):
            previous = widths[max(i - 1, 0)]
            self.up_blocks.append(UpBlock(previous, widths[i], config.layers_per_block + 1, groups, factors))
        self.conv_norm_out = GroupNorm(groups, widths[-1], eps=EPS)
        self.conv_out = CausalConv3d(widths[-1], config.out_channels)

    def forward(self, z: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        x = self.conv_in(z, state)
        x = self.mid_block(x, state)
        for block in self.up_blocks:
            check_interrupt()  # one chunk of a 540p frame takes minutes on a CPU
            x = block(x, state)
        return self.conv_out(F.silu(self.conv_norm_out(x, state), inplace=True), state)


class HunyuanVideoVAE(nn.Module):
    """The causal 3-D VAE. Build with `load_vae` (weights from a file) or `build_vae` / `random_vae`."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv3d(2 * config.latent_channels, 2 * config.latent_channels, 1)
        self.post_quant_conv = nn.Conv3d(config.latent_channels, config.latent_channels, 1)
        self.compute_dtype: torch.dtype | None = None  # None: chosen per device (`runtime.device.compute_dtype_for`)

    @property
    def device(self) -> torch.device:
        return self.quant_conv.weight.device

    @property
    def activation_dtype(self) -> torch.dtype:
        """`compute_dtype` if set, else the weights' dtype, or fp32 on a CPU without fast half precision; never fp16,
        which the decoder's activations can overflow (bf16 where native, else fp32: `runtime.device.RANGE_SAFE`)."""
        if self.compute_dtype is not None:
            return safe_dtype(self.device, self.compute_dtype, RANGE_SAFE)
        return compute_dtype_for(self.device, self.quant_conv.weight.dtype, RANGE_SAFE)

    # -- one chunk of one tile: the reference computation when `state` is None ------------------------------------

    def encode_moments(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        """x [B, 3, F, H, W] in [-1, 1] (compute dtype, model device) -> moments [B, 32, T, H/8, W/8]."""
        return pointwise(self.quant_conv, self.encoder(x, state))

    def decode_pixels(self, z: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        """z [B, 16, T, h, w] unscaled (compute dtype, model device) -> pixels [B, 3, F, 8h, 8w], unclamped [-1, 1].
        Raises `NonFiniteOutput` when the decoder's output holds NaN or inf (before anything is written)."""
        return check_finite(self.decoder(pointwise(self.post_quant_conv, z), state), "the VAE decoder", z.dtype,
                            VAE_ADVICE)

    # -- whole clips -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(
        self, x: torch.Tensor, tiling: Tiling | None = None, memory_budget: int | None = None
    ) -> LatentDistribution:
        """Encode frames [B, 3, 4k+1, H, W] (or one image [B, 3, H, W]) in [-1, 1], RGB.

        Returns the posterior over the UNSCALED latent [B, 16, k+1, H/8, W/8] (float32, on the input's device); take
        `.sample(seed)` (what the official pipeline does) or `.mode()`, then `scale_latent` for the DiT.
        """
        x = check_video(x, self.config.in_channels)
        return LatentDistribution(encode_tiled(self, x, tiling, memory_budget))

    @torch.no_grad()
    def decode(
        self,
        z: torch.Tensor,
        tiling: Tiling | None = None,
        memory_budget: int | None = None,
        callback: Progress | None = None,
        output_device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Decode an UNSCALED latent [B, 16, T, h, w] to frames [B, 3, 4(T-1)+1, 8h, 8w], float32 in [0, 1].

        Channel order RGB, layout batch, channel, frame, height, width (ComfyUI's IMAGE is this with
        `.movedim(1, -1)` and frames folded into the batch). `tiling` None: planned from `memory_budget` bytes
        (None: from the free memory). Output on `output_device` (default: the latent's device).
        """
        return decode_into(self, z, tiling, memory_budget, callback, output_device)

    def decode_stream(
        self,
        z: torch.Tensor,
        tiling: Tiling | None = None,
        memory_budget: int | None = None,
        callback: Progress | None = None,
        output_device: torch.device | str | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield the frames of `decode` in order, one temporal chunk at a time ([B, 3, f, 8h, 8w] each).

        Peak memory depends on the frame size and the tiling, not on the clip's length. `callback(done, total)` runs
        after each chunk; an exception raised from it stops the decode before the next chunk.
        """
        z = check_latent(z, self.config.latent_channels)
        return decode_chunks(self, z, tiling, memory_budget, callback, output_device)
