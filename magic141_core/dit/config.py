"""Model configurations: the 13B Magic141 / HunyuanVideo DiT, tiny test presets, and inference from weights.

The checkpoint never carries a JSON config, so, like ComfyUI's `model_detection.py`, the config is read off the
state dict's shapes. Our own saved files also carry it in the safetensors metadata (see `weights.py`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch

from ..weights.files import CheckpointError
from ..weights.limits import block_count, make_config, read_json_config, tensor_shape

LATENT_CHANNELS = 16  # HunyuanVideo VAE latent channels
I2V_IN_CHANNELS = 2 * LATENT_CHANNELS + 1  # noisy latent + reference latent + first-frame mask = 33


@dataclass(frozen=True)
class DiTConfig:
    hidden_size: int = 3072
    num_heads: int = 24  # head dim 128 = sum(rope_axes)
    double_blocks: int = 20
    single_blocks: int = 40
    refiner_blocks: int = 2  # token refiner (`txt_in`) depth
    mlp_ratio: float = 4.0
    in_channels: int = I2V_IN_CHANNELS  # 33 for image-to-video, 16 for HunyuanVideo text-to-video
    out_channels: int = LATENT_CHANNELS
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w)
    text_dim: int = 4096  # LLM hidden size
    pooled_dim: int = 768  # CLIP-L pooled size
    rope_axes: tuple[int, int, int] = (16, 56, 56)  # head-dim split over (t, h, w)
    rope_theta: float = 256.0
    guidance_embed: bool = False  # HunyuanVideo `guidance_in` (applied when present)
    text_guidance_embed: bool = False  # Magic141 `text_guidance_in` (loaded; applied only on request)

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if sum(self.rope_axes) != self.head_dim or any(a % 2 for a in self.rope_axes):
            raise ValueError(
                f"rope_axes {self.rope_axes} must be even and sum to the head dim {self.head_dim}"
            )
        if self.in_channels not in (LATENT_CHANNELS, I2V_IN_CHANNELS):
            raise ValueError(
                f"in_channels must be {I2V_IN_CHANNELS} (image-to-video) or {LATENT_CHANNELS} (text-to-video), "
                f"got {self.in_channels}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def is_i2v(self) -> bool:
        return self.in_channels == I2V_IN_CHANNELS

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, file: str = "config") -> "DiTConfig":
        """The config stored as JSON, every field checked (`weights.limits.read_json_config`)."""
        return read_json_config(cls, text, file, "magic141_dit_config")

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], file: str = "state dict") -> "DiTConfig":
        """Infer the config from checkpoint-named weights (official HunyuanVideo / Magic141 names).

        Every size comes from a tensor shape (read from the file header where possible) and every block count from
        `limits.block_count`, so nothing is larger than the tensors present. Raises CheckpointError naming the file
        and the tensor when one is missing, of the wrong rank, or inconsistent with the others."""
        hidden, in_channels, *patch = tensor_shape(sd, "img_in.proj.weight", file, ndim=5)
        (head_dim,) = tensor_shape(sd, "double_blocks.0.img_attn_q_norm.weight", file, ndim=1)
        out_features = tensor_shape(sd, "final_layer.linear.weight", file, ndim=2)[0]
        patch_numel = patch[0] * patch[1] * patch[2]
        try:
            rope_axes = default_rope_axes(head_dim)
        except ValueError as e:
            raise CheckpointError(f"{file}: {e}") from None
        return make_config(cls, dict(
            hidden_size=hidden,
            num_heads=max(hidden // head_dim, 1),
            **{field: block_count(sd, prefix, file) for field, prefix in BLOCK_PREFIXES.items()},
            mlp_ratio=tensor_shape(sd, "double_blocks.0.img_mlp.fc1.weight", file, ndim=2)[0] / hidden,
            in_channels=in_channels,
            out_channels=max(out_features // patch_numel, 1),
            patch_size=tuple(patch),
            text_dim=tensor_shape(sd, "txt_in.input_embedder.weight", file, ndim=2)[1],
            pooled_dim=tensor_shape(sd, "vector_in.in_layer.weight", file, ndim=2)[1],
            rope_axes=rope_axes,
            guidance_embed="guidance_in.mlp.0.weight" in sd,
            text_guidance_embed="text_guidance_in.mlp.0.weight" in sd,
        ), file)


BLOCK_PREFIXES = {  # config field -> the key prefix its blocks are stored under
    "double_blocks": "double_blocks",
    "single_blocks": "single_blocks",
    "refiner_blocks": "txt_in.individual_token_refiner.blocks",
}


def default_rope_axes(head_dim: int) -> tuple[int, int, int]:
    """HunyuanVideo splits the head dim 1/8 to time and the rest equally to height and width: 128 -> (16, 56, 56)."""
    t = head_dim // 8
    hw = (head_dim - t) // 2
    if t % 2 or hw % 2 or t + 2 * hw != head_dim or t == 0:
        raise ValueError(
            f"cannot infer the RoPE split for head dim {head_dim}; save the model with its config "
            "(magic141_core.weights.save_dit) so the split is stored in the file"
        )
    return (t, hw, hw)


def full_13b(**overrides) -> DiTConfig:
    """The Magic141 image-to-video DiT: HunyuanVideo-13B with 33 input channels (12.8 B parameters)."""
    return DiTConfig(**overrides)


def tiny(**overrides) -> DiTConfig:
    """A few-MB model with every part of the real architecture, for tests and the built-in demo."""
    base = dict(
        hidden_size=64, num_heads=2, double_blocks=1, single_blocks=1, refiner_blocks=1,
        text_dim=32, pooled_dim=16, rope_axes=(4, 14, 14),
    )
    return DiTConfig(**{**base, **overrides})

