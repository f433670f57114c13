"""The VAE configuration: the released HunyuanVideo causal 3-D VAE, tiny test presets, and inference from weights.

Like the DiT, the VAE checkpoint carries no JSON config: the shapes of its tensors give every field except the
GroupNorm group count (32 in every released file), which our own saved files store in their metadata.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch

from ..weights.limits import block_count, check_count, make_config, read_json_config, tensor_shape
from .shapes import SPATIAL_COMPRESSION, TEMPORAL_COMPRESSION


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3  # RGB
    out_channels: int = 3
    latent_channels: int = 16
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)  # encoder levels, highest resolution first
    layers_per_block: int = 2  # resnets per encoder level; each decoder level has one more
    norm_groups: int = 32  # GroupNorm groups; not visible in the weights
    mid_attention: bool = True  # the causal self-attention between the two mid-block resnets

    def __post_init__(self):
        if len(self.block_out_channels) < 3:
            raise ValueError(
                f"block_out_channels needs at least 3 levels for 8x spatial compression, got {self.block_out_channels}"
            )
        bad = [c for c in (*self.block_out_channels,) if c % self.norm_groups]
        if bad:
            raise ValueError(
                f"every block width must be divisible by norm_groups={self.norm_groups}; {bad} are not"
            )
        if self.layers_per_block < 1:
            raise ValueError(f"layers_per_block must be >= 1, got {self.layers_per_block}")

    def resample_factors(self) -> tuple[tuple[int, int], ...]:
        """(temporal, spatial) factor of the resampler closing each level, 1 = none.

        Encoder level i (highest resolution first) downsamples by it; decoder up-block i (lowest resolution first)
        upsamples by it. Spatial x2 on the first log2(8) levels; temporal x2 on the log2(4) levels before the last.
        """
        n = len(self.block_out_channels)
        spatial_levels = SPATIAL_COMPRESSION.bit_length() - 1
        temporal_levels = TEMPORAL_COMPRESSION.bit_length() - 1
        factors = []
        for i in range(n):
            t = 2 if n - 1 - temporal_levels <= i < n - 1 else 1
            s = 2 if i < spatial_levels else 1
            factors.append((t, s))
        return tuple(factors)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, file: str = "config") -> "VAEConfig":
        """The config stored as JSON, every field checked (`weights.limits.read_json_config`)."""
        return read_json_config(cls, text, file, "magic141_vae_config", any_length=("block_out_channels",))

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], norm_groups: int = 32,
                        file: str = "state dict") -> "VAEConfig":
        """Infer the config from official-named weights (`encoder.down_blocks.N...`, `decoder.up_blocks.N...`).

        Levels and resnets are counted with `limits.block_count` and sizes read from tensor shapes, so nothing is
        larger than the tensors present; a missing or malformed tensor raises CheckpointError naming it."""
        levels = block_count(sd, "encoder.down_blocks", file)
        widths = tuple(tensor_shape(sd, f"encoder.down_blocks.{i}.resnets.0.conv2.conv.weight", file, ndim=5)[0]
                       for i in range(levels))
        return make_config(cls, dict(
            in_channels=tensor_shape(sd, "encoder.conv_in.conv.weight", file, ndim=5)[1],
            out_channels=tensor_shape(sd, "decoder.conv_out.conv.weight", file, ndim=5)[0],
            latent_channels=tensor_shape(sd, "decoder.conv_in.conv.weight", file, ndim=5)[1],
            block_out_channels=widths,
            layers_per_block=block_count(sd, "encoder.down_blocks.0.resnets", file),
            norm_groups=norm_groups,
            mid_attention="encoder.mid_block.attentions.0.to_q.weight" in sd,
        ), file)

    def check_tensors(self, sd: Mapping[str, torch.Tensor], file: str) -> None:
        """Refuse a config (from metadata) whose level and resnet counts are not the blocks the file holds."""
        check_count(file, "block_out_channels", len(self.block_out_channels),
                    block_count(sd, "encoder.down_blocks", file), "encoder.down_blocks")
        check_count(file, "block_out_channels", len(self.block_out_channels),
                    block_count(sd, "decoder.up_blocks", file), "decoder.up_blocks")
        check_count(file, "layers_per_block", self.layers_per_block,
                    block_count(sd, "encoder.down_blocks.0.resnets", file), "encoder.down_blocks.0.resnets")


def hunyuan_video_vae(**overrides) -> VAEConfig:
    """The released HunyuanVideo VAE ("884-16c-hy"), the one Magic141 uses: 246 M parameters."""
    return VAEConfig(**overrides)


def tiny_vae(**overrides) -> VAEConfig:
    """A sub-MB VAE with every part of the real one (4 levels, both resamplers, mid attention), for tests."""
    base = dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_groups=4)
    return VAEConfig(**{**base, **overrides})
