"""Weights and their file formats: safe reading, atomic writing, identification of wrong files, key maps (official /
diffusers / ComfyUI), limits on stored configs, fp8, int8 (optimum-quanto), LoRA and deterministic random weights."""

from .diffusers_keys import OfficialView, from_diffusers, is_diffusers_dit, to_diffusers
from .files import (
    QUANT_METADATA_KEY,
    CheckpointError,
    LazyStateDict,
    converted,
    iter_state_dict,
    open_state_dict,
    read_metadata,
    read_state_dict,
    save_safetensors,
    unwrap,
)
from .fill import fill_
from .identify import describe, wrong_model_message

__all__ = [
    "QUANT_METADATA_KEY",
    "CheckpointError",
    "LazyStateDict",
    "OfficialView",
    "converted",
    "open_state_dict",
    "describe",
    "fill_",
    "from_diffusers",
    "is_diffusers_dit",
    "iter_state_dict",
    "read_metadata",
    "read_state_dict",
    "save_safetensors",
    "to_diffusers",
    "unwrap",
    "wrong_model_message",
]
