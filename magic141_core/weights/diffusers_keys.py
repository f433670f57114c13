"""Key map between the official HunyuanVideo / Magic141 DiT names and diffusers' `HunyuanVideoTransformer3DModel`.

diffusers renames every module, splits each fused qkv (and the single blocks' qkv + MLP-in linear) into separate
linears, and stores the final layer's adaLN halves as (scale, shift) where the checkpoint has (shift, scale).
Each rule below names one official tensor and the diffusers tensors it becomes, in concatenation order.
Magic141's `text_guidance_in` has no diffusers counterpart; it passes through under its own name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .files import shape_of

_TOP = [
    ("img_in.proj", ["x_embedder.proj"]),
    ("time_in.mlp.0", ["time_text_embed.timestep_embedder.linear_1"]),
    ("time_in.mlp.2", ["time_text_embed.timestep_embedder.linear_2"]),
    ("guidance_in.mlp.0", ["time_text_embed.guidance_embedder.linear_1"]),
    ("guidance_in.mlp.2", ["time_text_embed.guidance_embedder.linear_2"]),
    ("vector_in.in_layer", ["time_text_embed.text_embedder.linear_1"]),
    ("vector_in.out_layer", ["time_text_embed.text_embedder.linear_2"]),
    ("txt_in.input_embedder", ["context_embedder.proj_in"]),
    ("txt_in.t_embedder.mlp.0", ["context_embedder.time_text_embed.timestep_embedder.linear_1"]),
    ("txt_in.t_embedder.mlp.2", ["context_embedder.time_text_embed.timestep_embedder.linear_2"]),
    ("txt_in.c_embedder.linear_1", ["context_embedder.time_text_embed.text_embedder.linear_1"]),
    ("txt_in.c_embedder.linear_2", ["context_embedder.time_text_embed.text_embedder.linear_2"]),
    ("final_layer.linear", ["proj_out"]),
    ("final_layer.adaLN_modulation.1", ["norm_out.linear"]),  # halves swapped, see _SWAPPED
]
_QKV = ["attn.to_q", "attn.to_k", "attn.to_v"]
_BLOCKS = {  # official prefix -> (diffusers prefix, rules inside one block)
    "txt_in.individual_token_refiner.blocks": ("context_embedder.token_refiner.refiner_blocks", [
        ("norm1", ["norm1"]),
        ("self_attn_qkv", _QKV),
        ("self_attn_proj", ["attn.to_out.0"]),
        ("norm2", ["norm2"]),
        ("mlp.fc1", ["ff.net.0.proj"]),
        ("mlp.fc2", ["ff.net.2"]),
        ("adaLN_modulation.1", ["norm_out.linear"]),
    ]),
    "double_blocks": ("transformer_blocks", [
        ("img_mod.linear", ["norm1.linear"]),
        ("img_attn_qkv", _QKV),
        ("img_attn_q_norm", ["attn.norm_q"]),
        ("img_attn_k_norm", ["attn.norm_k"]),
        ("img_attn_proj", ["attn.to_out.0"]),
        ("img_mlp.fc1", ["ff.net.0.proj"]),
        ("img_mlp.fc2", ["ff.net.2"]),
        ("txt_mod.linear", ["norm1_context.linear"]),
        ("txt_attn_qkv", ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"]),
        ("txt_attn_q_norm", ["attn.norm_added_q"]),
        ("txt_attn_k_norm", ["attn.norm_added_k"]),
        ("txt_attn_proj", ["attn.to_add_out"]),
        ("txt_mlp.fc1", ["ff_context.net.0.proj"]),
        ("txt_mlp.fc2", ["ff_context.net.2"]),
    ]),
    "single_blocks": ("single_transformer_blocks", [
        ("linear1", _QKV + ["proj_mlp"]),  # q, k, v (hidden each), then the MLP input (the rest)
        ("linear2", ["proj_out"]),
        ("q_norm", ["attn.norm_q"]),
        ("k_norm", ["attn.norm_k"]),
        ("modulation.linear", ["norm.linear"]),
    ]),
}
_SWAPPED = "final_layer.adaLN_modulation.1"
_PARAM = re.compile(r"^(?P<module>.+)\.(?P<param>weight|bias)$")
_BLOCK = re.compile(r"^(?P<prefix>.+?)\.(?P<index>\d+)\.(?P<rest>.+)$")


def _official_rules(sd_keys) -> dict[str, list[str]]:
    """official module name -> diffusers module names, for every module present in `sd_keys` (official)."""
    top = dict(_TOP)
    rules = {}
    for key in sd_keys:
        module = _PARAM.match(key)["module"]
        if module in top:
            rules[module] = top[module]
        elif (m := _BLOCK.match(module)) and m["prefix"] in _BLOCKS:
            target_prefix, inner = _BLOCKS[m["prefix"]]
            targets = dict(inner).get(m["rest"])
            if targets is not None:
                rules[module] = [f"{target_prefix}.{m['index']}.{t}" for t in targets]
    return rules


def diffusers_targets(out_features: Mapping[str, int], hidden: int) -> dict[str, tuple[str, tuple | None, bool]]:
    """For adapters (LoRA) on diffusers module names: diffusers module -> (official module, (first row, rows) of the
    fused official linear it is a part of, or None for the whole, whether its halves are swapped). `out_features`:
    official linear name -> its output size; `hidden`: the model's hidden size (the split of fused q / k / v)."""
    out = {}
    for module, targets in _official_rules([f"{n}.weight" for n in out_features]).items():
        sizes = _split_sizes(out_features[module], len(targets), hidden) if len(targets) > 1 else None
        start = 0
        for i, target in enumerate(targets):
            out[target] = (module, None if sizes is None else (start, sizes[i]), module == _SWAPPED)
            start += sizes[i] if sizes else 0
    return out


def _split_sizes(total: int, parts: int, hidden: int) -> list[int]:
    if parts == 4:  # single block linear1: q, k, v, mlp
        return [hidden, hidden, hidden, total - 3 * hidden]
    return [total // parts] * parts


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official-named DiT state dict -> diffusers names (tensors split, final adaLN halves swapped)."""
    hidden = sd["img_in.proj.weight"].shape[0]
    rules = _official_rules(sd)
    out = {}
    for key, tensor in sd.items():
        m = _PARAM.match(key)
        module, param = m["module"], m["param"]
        targets = rules.get(module)
        if targets is None:  # e.g. text_guidance_in, which diffusers lacks
            out[key] = tensor
            continue
        if module == _SWAPPED:
            tensor = _swap_halves(tensor)
        pieces = tensor.split(_split_sizes(tensor.shape[0], len(targets), hidden)) if len(targets) > 1 else [tensor]
        for target, piece in zip(targets, pieces):
            out[f"{target}.{param}"] = piece.contiguous()
    return out


class OfficialView(Mapping):
    """Official-named view of a diffusers-named state dict; each tensor is assembled (concatenated, halves swapped)
    only when accessed, so a lazily read file stays lazy."""

    def __init__(self, sd: Mapping[str, torch.Tensor]):
        self._sd = sd
        official_keys = _candidate_official_keys(sd)
        rules = _official_rules(official_keys)
        self._sources: dict[str, list[str]] = {}
        for key in official_keys:
            m = _PARAM.match(key)
            sources = [f"{target}.{m['param']}" for target in rules[m["module"]]]
            if all(s in sd for s in sources):
                self._sources[key] = sources
        used = {s for sources in self._sources.values() for s in sources}
        for key in sd:  # text_guidance_in passes through under its own name
            if key not in used and key.startswith("text_guidance_in."):
                self._sources[key] = [key]
                used.add(key)
        unknown = sorted(k for k in sd if k not in used)
        if unknown:
            raise ValueError(f"unrecognised diffusers HunyuanVideo transformer keys, e.g. {unknown[:5]}")

    def __getitem__(self, key: str) -> torch.Tensor:
        sources = self._sources[key]
        tensor = torch.cat([self._sd[s] for s in sources], dim=0) if len(sources) > 1 else self._sd[sources[0]]
        return _swap_halves(tensor) if key.startswith(_SWAPPED + ".") else tensor

    def __iter__(self):
        return iter(self._sources)

    def shape(self, key: str) -> tuple[int, ...]:
        """The official tensor's shape from its sources' shapes (file header where available), without reading."""
        shapes = [shape_of(self._sd, s) for s in self._sources[key]]
        return (sum(s[0] for s in shapes), *shapes[0][1:]) if len(shapes) > 1 else shapes[0]

    def __len__(self) -> int:
        return len(self._sources)


def from_diffusers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers-named DiT state dict -> official names (split tensors concatenated back)."""
    return dict(OfficialView(sd))


def _candidate_official_keys(sd: dict[str, torch.Tensor]) -> list[str]:
    """Every official key that a diffusers state dict could hold, given the block indices it has."""
    indices: dict[str, set[str]] = {}
    for key in sd:
        for official, (target, _) in _BLOCKS.items():
            if key.startswith(target + "."):
                indices.setdefault(official, set()).add(key[len(target) + 1 :].split(".", 1)[0])
    keys = [f"{module}.{p}" for module, _ in _TOP for p in ("weight", "bias")]
    for official, (_, inner) in _BLOCKS.items():
        for i in sorted(indices.get(official, ()), key=int):
            keys += [f"{official}.{i}.{rule}.{p}" for rule, _ in inner for p in ("weight", "bias")]
    return keys


def is_diffusers_dit(sd: dict[str, torch.Tensor]) -> bool:
    return "x_embedder.proj.weight" in sd and any(k.startswith("transformer_blocks.") for k in sd)
