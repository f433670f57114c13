"""Build, load and save the VAE: any supported file -> a `HunyuanVideoVAE` built on the meta device, weights assigned.

Tensors are read one at a time (memory-mapped for safetensors), converted to the requested dtype as they come, and
handed to the model with `load_state_dict(strict=True, assign=True)`: no random initialisation, no second copy.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..weights import CheckpointError, fill_, read_metadata, read_state_dict, save_safetensors, wrong_model_message
from ..weights.random_init import randomize_
from .config import VAEConfig
from .keys import normalize_keys
from .model import HunyuanVideoVAE

CONFIG_METADATA_KEY = "magic141_vae_config"
EXPECTED = "a HunyuanVideo VAE (e.g. hunyuan_video_vae_bf16.safetensors from ComfyUI's models/vae)"
_REQUIRED = (
    "encoder.conv_in.conv.weight",
    "encoder.down_blocks.0.resnets.0.conv2.conv.weight",
    "decoder.conv_in.conv.weight",
    "decoder.conv_out.conv.weight",
    "quant_conv.weight",
    "post_quant_conv.weight",
)


def build_vae(config: VAEConfig, sd: dict[str, torch.Tensor], name: str = "state dict") -> HunyuanVideoVAE:
    """A model holding exactly the tensors of `sd` (official names), checked strictly (names and shapes before any
    assignment, NaN / inf per tensor, the host's interrupt between layers: `weights.fill_`)."""
    with torch.device("meta"):
        model = HunyuanVideoVAE(config)
    what = (f"the VAE (levels {config.block_out_channels}, {config.layers_per_block} resnets per level, "
            f"{config.latent_channels} latent channels)")
    return fill_(model, sd, None, name, what)


def official_state_dict(sd: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """Official-named VAE tensors from tensors in any supported layout (see `keys.py`), e.g. a file's, or the
    state dict of ComfyUI's loaded VAE (`first_stage_model`, its LDM layout). Raises CheckpointError naming `name`
    when they are not a HunyuanVideo VAE (what they look like instead, or a 2-D image VAE)."""
    sd = normalize_keys(sd)
    missing = [k for k in _REQUIRED if k not in sd]
    if missing:
        raise CheckpointError(wrong_model_message(name, sd, EXPECTED, missing))
    if sd["encoder.conv_in.conv.weight"].ndim != 5:
        raise CheckpointError(
            f"{name} is a 2-D image VAE (its convolutions have no time axis), not {EXPECTED}. "
            "Choose the HunyuanVideo VAE file."
        )
    return sd


def vae_state_dict_from_file(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Official-named VAE tensors of a file in any supported layout (see `keys.py`)."""
    path = Path(path)
    return official_state_dict(read_state_dict(path, dtype), path.name)


def vae_from_state_dict(sd: dict[str, torch.Tensor], name: str = "state dict",
                        stored_config: str | None = None) -> HunyuanVideoVAE:
    """A `HunyuanVideoVAE` holding the tensors of `sd` (any supported layout, e.g. ComfyUI's loaded VAE), on their
    device and in their dtype, sharing their storage (no copy). The config comes from `stored_config` (our JSON
    metadata) or the tensor shapes (32 GroupNorm groups, the released VAE's). Raises CheckpointError naming `name`."""
    sd = official_state_dict(sd, name)
    config = VAEConfig.from_state_dict(sd, file=name) if stored_config is None else VAEConfig.from_json(
        stored_config, name)
    config.check_tensors(sd, name)  # the decoder's levels too, before anything is built
    return build_vae(config, sd, name)


def load_vae(
    path: str | os.PathLike, dtype: torch.dtype | None = torch.bfloat16, device: str | torch.device = "cpu"
) -> HunyuanVideoVAE:
    """Load a VAE file (official, ComfyUI or diffusers names); `dtype` None keeps the file's dtype.

    Weights stay in `dtype`; on a CPU without fast half precision the model computes in fp32 (see `runtime/device.py`).
    """
    path = Path(path)
    sd = read_state_dict(path, dtype)
    return vae_from_state_dict(sd, path.name, read_metadata(path).get(CONFIG_METADATA_KEY)).to(device)


def save_vae(model: HunyuanVideoVAE, path: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
    """Save official-named weights plus the config (in the safetensors metadata), atomically."""
    sd = {k: v if dtype is None else v.to(dtype) for k, v in model.state_dict().items()}
    save_safetensors(sd, path, {CONFIG_METADATA_KEY: model.config.to_json()})


def random_vae(config: VAEConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> HunyuanVideoVAE:
    """A VAE of `config` with deterministic random weights (`weights.random_init.randomize_`): for tests and
    benchmarks only."""
    return randomize_(HunyuanVideoVAE(config), seed).to(dtype).eval().requires_grad_(False)
