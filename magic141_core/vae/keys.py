"""VAE weight names in the files people have, mapped onto ours (official HunyuanVideo = diffusers names).

- Official `pytorch_model.pt` (Tencent), diffusers `AutoencoderKLHunyuanVideo`, and the single file ComfyUI users keep
  in `models/vae/` (Comfy-Org / Kijai `hunyuan_video_vae_bf16.safetensors`) all use the same names, e.g.
  `decoder.up_blocks.0.resnets.0.conv1.conv.weight`; ComfyUI renames them only in memory when it loads the file.
- Some containers prefix them: `vae.` (the official training checkpoint), `first_stage_model.` (a ComfyUI checkpoint).
- A VAE that ComfyUI itself saved (its in-memory LDM layout): `encoder.down.0.block.0...`, `decoder.up.3.block.0...`
  (up levels numbered in reverse), `mid.block_1`, `mid.attn_1.{norm,q,k,v,proj_out}` with 1x1x1-conv attention
  weights, `nin_shortcut`, `norm_out`. `from_comfy_layout` maps them back (tested against
  ComfyUI's own `diffusers_convert.convert_vae_state_dict`).
- Older diffusers attention names `query`/`key`/`value`/`proj_attn` are renamed too.
"""

from __future__ import annotations

import re

import torch

WRAPPER_PREFIXES = ("vae.", "first_stage_model.")
_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_COMFY_MARK = re.compile(r"^(encoder\.down\.\d+\.block\.|decoder\.up\.\d+\.block\.|(en|de)coder\.mid\.block_1\.)")


def normalize_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official-named VAE tensors from any of the layouts above (other tensors pass through unchanged)."""
    for prefix in WRAPPER_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd = {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}
            break
    if any(_COMFY_MARK.match(k) for k in sd):
        sd = from_comfy_layout(sd)
    legacy = re.compile(r"^((?:en|de)coder\.mid_block\.attentions\.0)\.(query|key|value|proj_attn)\.")
    return {legacy.sub(lambda m: f"{m[1]}.{_LEGACY_ATTENTION[m[2]]}.", k): v for k, v in sd.items()}


def _levels(sd, pattern: str) -> int:
    regex = re.compile(pattern)
    return max((int(m[1]) for k in sd if (m := regex.match(k))), default=-1) + 1


def from_comfy_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI's in-memory (LDM) names -> official names; attention conv weights [C, C, 1, 1, 1] -> linear [C, C]."""
    top = _levels(sd, r"^decoder\.up\.(\d+)\.") - 1
    rules = [
        (r"^encoder\.down\.(\d+)\.block\.(\d+)\.", lambda m: f"encoder.down_blocks.{m[1]}.resnets.{m[2]}."),
        (r"^encoder\.down\.(\d+)\.downsample\.", lambda m: f"encoder.down_blocks.{m[1]}.downsamplers.0."),
        (r"^decoder\.up\.(\d+)\.block\.(\d+)\.", lambda m: f"decoder.up_blocks.{top - int(m[1])}.resnets.{m[2]}."),
        (r"^decoder\.up\.(\d+)\.upsample\.", lambda m: f"decoder.up_blocks.{top - int(m[1])}.upsamplers.0."),
        (r"^(\w+)\.mid\.block_(\d)\.", lambda m: f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}."),
        (r"^(\w+)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.",
         lambda m: f"{m[1]}.mid_block.attentions.0.{_ATTENTION[m[2]]}."),
        (r"\.nin_shortcut\.", lambda m: ".conv_shortcut."),
        (r"^(\w+)\.norm_out\.", lambda m: f"{m[1]}.conv_norm_out."),
    ]
    out = {}
    for key, tensor in sd.items():
        for pattern, target in rules:
            key = re.sub(pattern, target, key)
        if ".attentions.0.to_" in key and key.endswith(".weight") and tensor.ndim > 2:
            tensor = tensor.reshape(tensor.shape[:2])
        out[key] = tensor
    return out

