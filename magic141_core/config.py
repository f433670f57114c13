"""Model configurations: the 13B Magic141 / HunyuanVideo DiT, tiny test presets, and inference from weights.

The checkpoint never carries a JSON config, so, like ComfyUI's `model_detection.py`, the config is read off the
state dict's shapes. Our own saved files also carry it in the safetensors metadata (see `checkpoints.py`).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

import torch

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
    def from_json(cls, text: str) -> "DiTConfig":
        d = json.loads(text)
        for key in ("patch_size", "rope_axes"):
            d[key] = tuple(d[key])
        return cls(**d)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "DiTConfig":
        """Infer the config from checkpoint-named weights (official HunyuanVideo / Magic141 names)."""
        proj = sd["img_in.proj.weight"]  # [hidden, in_channels, pt, ph, pw]
        hidden, in_channels, *patch = proj.shape
        head_dim = sd["double_blocks.0.img_attn_q_norm.weight"].shape[0]
        out_features = sd["final_layer.linear.weight"].shape[0]
        patch_numel = patch[0] * patch[1] * patch[2]
        return cls(
            hidden_size=hidden,
            num_heads=hidden // head_dim,
            double_blocks=_count_blocks(sd, "double_blocks"),
            single_blocks=_count_blocks(sd, "single_blocks"),
            refiner_blocks=_count_blocks(sd, "txt_in.individual_token_refiner.blocks"),
            mlp_ratio=sd["double_blocks.0.img_mlp.fc1.weight"].shape[0] / hidden,
            in_channels=in_channels,
            out_channels=out_features // patch_numel,
            patch_size=tuple(patch),
            text_dim=sd["txt_in.input_embedder.weight"].shape[1],
            pooled_dim=sd["vector_in.in_layer.weight"].shape[1],
            rope_axes=default_rope_axes(head_dim),
            guidance_embed="guidance_in.mlp.0.weight" in sd,
            text_guidance_embed="text_guidance_in.mlp.0.weight" in sd,
        )


def default_rope_axes(head_dim: int) -> tuple[int, int, int]:
    """HunyuanVideo splits the head dim 1/8 to time and the rest equally to height and width: 128 -> (16, 56, 56)."""
    t = head_dim // 8
    hw = (head_dim - t) // 2
    if t % 2 or hw % 2 or t + 2 * hw != head_dim:
        raise ValueError(
            f"cannot infer the RoPE split for head dim {head_dim}; save the model with its config "
            "(magic141_core.checkpoints.save_dit) so the split is stored in the file"
        )
    return (t, hw, hw)


def _count_blocks(sd: dict, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    indices = {int(m.group(1)) for key in sd if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


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


PRESETS = {"13b": full_13b, "tiny": tiny}
