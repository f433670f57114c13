"""Key map between the official HunyuanVideo / Magic141 DiT names and ComfyUI's internal HunyuanVideo names.

ComfyUI renames the official keys when it loads a HunyuanVideo transformer (its `supported_models.HunyuanVideo.
process_unet_state_dict`) and writes its internal names back out through ModelSave, under the `model.model.` prefix
(`weights.files.PREFIXES` strips it). Internal names, e.g. `double_blocks.0.img_attn.qkv`, `img_mod.lin`,
`img_mlp.0`, `time_in.in_layer`, `img_attn.norm.query_norm.scale`. Each rule below is (official, internal); the map
is applied per key, one rule set for block modules and one for the embedders, so no rule sees another's output.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

_IN_BLOCKS = [  # inside double / single / token-refiner blocks
    ("_mod.linear.", "_mod.lin."),
    (".modulation.linear.", ".modulation.lin."),
    ("_attn_qkv.", "_attn.qkv."),
    ("_attn_proj.", "_attn.proj."),
    ("_attn_q_norm.weight", "_attn.norm.query_norm.scale"),
    ("_attn_k_norm.weight", "_attn.norm.key_norm.scale"),
    (".q_norm.weight", ".norm.query_norm.scale"),
    (".k_norm.weight", ".norm.key_norm.scale"),
    ("mlp.fc1.", "mlp.0."),
    ("mlp.fc2.", "mlp.2."),
]
# ComfyUI 0.3.x names the q/k RMSNorm gains `.scale`; ComfyUI 0.30 names them `.weight` (both are read back)
_EMBEDDERS = [  # official MLP embedders named mlp.0 / mlp.2 or linear_1 / linear_2 become in_layer / out_layer
    (re.compile(r"^(time_in|guidance_in|text_guidance_in|txt_in\.t_embedder)\.mlp\.0\."), r"\1.in_layer."),
    (re.compile(r"^(time_in|guidance_in|text_guidance_in|txt_in\.t_embedder)\.mlp\.2\."), r"\1.out_layer."),
    (re.compile(r"^txt_in\.c_embedder\.linear_1\."), "txt_in.c_embedder.in_layer."),
    (re.compile(r"^txt_in\.c_embedder\.linear_2\."), "txt_in.c_embedder.out_layer."),
]
_EMBEDDERS_BACK = [
    (re.compile(r"^(time_in|guidance_in|text_guidance_in|txt_in\.t_embedder)\.in_layer\."), r"\1.mlp.0."),
    (re.compile(r"^(time_in|guidance_in|text_guidance_in|txt_in\.t_embedder)\.out_layer\."), r"\1.mlp.2."),
    (re.compile(r"^txt_in\.c_embedder\.in_layer\."), "txt_in.c_embedder.linear_1."),
    (re.compile(r"^txt_in\.c_embedder\.out_layer\."), "txt_in.c_embedder.linear_2."),
]


def _in_block(key: str) -> bool:
    return key.startswith(("double_blocks.", "single_blocks.", "txt_in.individual_token_refiner.blocks."))


def official_to_comfy(key: str, norm: str = "scale") -> str:
    """One official key -> ComfyUI's internal name for it (unknown keys unchanged). `norm`: the name of the q/k
    RMSNorm gain in the target ComfyUI ("scale" up to 0.3.x, "weight" in 0.30)."""
    if _in_block(key):
        for official, internal in _IN_BLOCKS:
            key = key.replace(official, internal)
        if norm == "weight":
            key = key.replace("_norm.scale", "_norm.weight")
        return key
    for pattern, internal in _EMBEDDERS:
        key = pattern.sub(internal, key)
    return key


def comfy_to_official(key: str) -> str:
    """One ComfyUI-internal key -> the official name (the inverse of `official_to_comfy`, either norm naming)."""
    if _in_block(key):
        key = key.replace("norm.query_norm.weight", "norm.query_norm.scale").replace(
            "norm.key_norm.weight", "norm.key_norm.scale")
        for official, internal in _IN_BLOCKS:
            key = key.replace(internal, official)
        return key
    for pattern, official in _EMBEDDERS_BACK:
        key = pattern.sub(official, key)
    return key


def is_comfy_dit(sd: Mapping[str, torch.Tensor]) -> bool:
    """A HunyuanVideo transformer under ComfyUI's internal names (e.g. re-saved by native ModelSave)."""
    return "img_in.proj.weight" in sd and any(".img_attn.qkv." in k or k.startswith("time_in.in_layer.") for k in sd)


class ComfyView(Mapping):
    """Official-named view of a ComfyUI-internal-named state dict (tensors read on access, unchanged)."""

    def __init__(self, sd: Mapping[str, torch.Tensor]):
        self._sd = sd
        self._sources = {comfy_to_official(k): k for k in sd}
        self.metadata = getattr(sd, "metadata", {})

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._sd[self._sources[key]]

    def fp8(self, key: str):
        """The stored fp8 tensor and its scale (`weights.fp8.Fp8View.fp8`) under its official name, or None."""
        fp8 = getattr(self._sd, "fp8", None)
        return None if fp8 is None else fp8(self._sources[key])

    def __iter__(self):
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)
