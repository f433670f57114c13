"""Load and save the DiT: any supported file -> a `Magic141DiT` built on the meta device, weights assigned in place.

Tensors are read one at a time (memory-mapped for safetensors) and converted to the requested dtype as they come,
then handed to the model with `load_state_dict(assign=True)`: no randomly initialised copy and no second copy of
the weights is ever made.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..checkpoints import (
    CheckpointError,
    from_diffusers,
    is_diffusers_dit,
    read_metadata,
    read_state_dict,
    save_safetensors,
    wrong_model_message,
)
from ..config import DiTConfig
from .model import Magic141DiT

CONFIG_METADATA_KEY = "magic141_dit_config"
_REQUIRED = ("img_in.proj.weight", "double_blocks.0.img_attn_qkv.weight", "final_layer.linear.weight")


def build_dit(config: DiTConfig, sd: dict[str, torch.Tensor], name: str = "state dict") -> Magic141DiT:
    """A model holding exactly the tensors of `sd` (official names), checked strictly."""
    with torch.device("meta"):
        model = Magic141DiT(config)
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        detail = str(e).split("\n", 1)[-1].strip().splitlines()
        raise CheckpointError(
            f"{name} does not fit the transformer its shapes describe ({config.double_blocks} double / "
            f"{config.single_blocks} single blocks, hidden {config.hidden_size}): {' '.join(detail)[:600]}"
        ) from None
    return model.eval().requires_grad_(False)


def dit_state_dict_from_file(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Official-named tensors of a DiT file in any supported layout (official, ComfyUI, diffusers)."""
    path = Path(path)
    sd = read_state_dict(path, dtype)
    if is_diffusers_dit(sd):
        sd = from_diffusers(sd)
    missing = [k for k in _REQUIRED if k not in sd]
    if missing:
        raise CheckpointError(wrong_model_message(path.name, sd, "a Magic141 / HunyuanVideo transformer", missing))
    return sd


def load_dit(
    path: str | os.PathLike,
    dtype: torch.dtype | None = torch.bfloat16,
    device: str | torch.device = "cpu",
    apply_text_guidance: bool = False,
) -> Magic141DiT:
    """Load a DiT checkpoint. `dtype` None keeps the file's dtype; `apply_text_guidance` see `Magic141DiT`."""
    sd = dit_state_dict_from_file(path, dtype)
    stored = read_metadata(path).get(CONFIG_METADATA_KEY)
    config = DiTConfig.from_json(stored) if stored else DiTConfig.from_state_dict(sd)
    model = build_dit(config, sd, Path(path).name).to(device)
    model.apply_text_guidance = apply_text_guidance
    return model


def save_dit(model: Magic141DiT, path: str | os.PathLike, dtype: torch.dtype | None = None):
    """Save official-named weights plus the config (in the safetensors metadata), atomically."""
    sd = {k: v if dtype is None else v.to(dtype) for k, v in model.state_dict().items()}
    save_safetensors(sd, path, {CONFIG_METADATA_KEY: model.config.to_json()})
