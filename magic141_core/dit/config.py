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
# How the start image enters the model (docs/design.md, "The three image-to-video families") -> input channels.
# concat_mask: [noisy ; reference zero-padded in time ; 1 on the reference frames] (Magic141, HunyuanVideo-I2V v1);
# concat: [noisy ; reference zero-padded in time] (SkyReels-V1); token_replace: the first latent frames ARE the clean
# reference, their tokens modulated at timestep 0 (HunyuanVideo-I2V v2); none: text-to-video (no start image).
IMAGE_CONDITIONS = {"concat_mask": I2V_IN_CHANNELS, "concat": 2 * LATENT_CHANNELS, "token_replace": LATENT_CHANNELS,
                    "none": LATENT_CHANNELS}
_BY_CHANNELS = {I2V_IN_CHANNELS: "concat_mask", 2 * LATENT_CHANNELS: "concat", LATENT_CHANNELS: "none"}


@dataclass(frozen=True)
class DiTConfig:
    hidden_size: int = 3072
    num_heads: int = 24  # head dim 128 = sum(rope_axes)
    double_blocks: int = 20
    single_blocks: int = 40
    refiner_blocks: int = 2  # token refiner (`txt_in`) depth
    mlp_ratio: float = 4.0
    in_channels: int = I2V_IN_CHANNELS  # 33 concat + mask, 32 concat, 16 token replace or text-to-video
    out_channels: int = LATENT_CHANNELS
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w)
    text_dim: int = 4096  # LLM hidden size
    pooled_dim: int = 768  # CLIP-L pooled size
    rope_axes: tuple[int, int, int] = (16, 56, 56)  # head-dim split over (t, h, w)
    rope_theta: float = 256.0
    guidance_embed: bool = False  # HunyuanVideo `guidance_in` (applied when present)
    text_guidance_embed: bool = False  # Magic141 `text_guidance_in` (loaded; applied only on request)
    image_condition: str = ""  # a key of IMAGE_CONDITIONS; "" = what the input channels imply (16: text-to-video)

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if sum(self.rope_axes) != self.head_dim or any(a % 2 for a in self.rope_axes):
            raise ValueError(
                f"rope_axes {self.rope_axes} must be even and sum to the head dim {self.head_dim}"
            )
        if self.in_channels not in _BY_CHANNELS:
            raise ValueError(
                f"in_channels must be {I2V_IN_CHANNELS} (image-to-video, concat + mask), {2 * LATENT_CHANNELS} "
                f"(concat, SkyReels-V1) or {LATENT_CHANNELS} (token replace or text-to-video), got {self.in_channels}"
            )
        if not self.image_condition:
            object.__setattr__(self, "image_condition", _BY_CHANNELS[self.in_channels])
        if self.image_condition not in IMAGE_CONDITIONS:
            raise ValueError(f"image_condition must be one of {', '.join(IMAGE_CONDITIONS)}, got "
                             f"{self.image_condition!r}")
        if IMAGE_CONDITIONS[self.image_condition] != self.in_channels:
            raise ValueError(f"image_condition {self.image_condition!r} needs {IMAGE_CONDITIONS[self.image_condition]} "
                             f"input channels, the model has {self.in_channels}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def is_i2v(self) -> bool:
        """Whether the model takes a start image (every image_condition but "none")."""
        return self.image_condition != "none"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, file: str = "config") -> "DiTConfig":
        """The config stored as JSON, every field checked (`weights.limits.read_json_config`)."""
        return read_json_config(cls, text, file, "magic141_dit_config", optional=("image_condition",))

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], file: str = "state dict") -> "DiTConfig":
        """Infer the config from checkpoint-named weights (official HunyuanVideo / Magic141 names).

        Every size comes from a tensor shape (read from the file header where possible) and every block count from
        `limits.block_count`, so nothing is larger than the tensors present. Raises CheckpointError naming the file
        and the tensor when one is missing, of the wrong rank, or inconsistent with the others."""
        hidden, in_channels, *patch = tensor_shape(sd, "img_in.proj.weight", file, ndim=5)
        (head_dim,) = tensor_shape(sd, "double_blocks.0.img_attn_q_norm.weight", file, ndim=1)
        out_features, final_in = tensor_shape(sd, "final_layer.linear.weight", file, ndim=2)
        patch_numel = patch[0] * patch[1] * patch[2]
        qkv = tensor_shape(sd, "double_blocks.0.img_attn_qkv.weight", file, ndim=2)
        if hidden % head_dim or final_in != hidden or qkv != (3 * hidden, hidden):
            raise CheckpointError(
                f"{file}: its tensor shapes disagree: 'img_in.proj.weight' gives hidden size {hidden}, but "
                f"'double_blocks.0.img_attn_q_norm.weight' a head dim of {head_dim}, "
                f"'double_blocks.0.img_attn_qkv.weight' is {list(qkv)} (expected {[3 * hidden, hidden]}) and "
                f"'final_layer.linear.weight' takes {final_in}. The tensors are transposed, mixed from different "
                "models or damaged; choose another file")
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
            f"cannot infer the RoPE split for head dim {head_dim}: HunyuanVideo gives 1/8 of it to time and half of "
            "the rest to each of height and width, all even, which this head dim does not allow. The file is not a "
            "HunyuanVideo transformer, or its tensors are damaged; a model with its own split stores it in its "
            "config (files written by save_dit)"
        )
    return (t, hw, hw)


def full_13b(**overrides) -> DiTConfig:
    """The Magic141 image-to-video DiT: HunyuanVideo-13B with 33 input channels (12.8 B parameters); the other
    families by `image_condition` and `in_channels` overrides."""
    return DiTConfig(**overrides)


def tiny(**overrides) -> DiTConfig:
    """A few-MB model with every part of the real architecture, for tests and the built-in demo."""
    base = dict(
        hidden_size=64, num_heads=2, double_blocks=1, single_blocks=1, refiner_blocks=1,
        text_dim=32, pooled_dim=16, rope_axes=(4, 14, 14),
    )
    return DiTConfig(**{**base, **overrides})

