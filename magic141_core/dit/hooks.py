"""What a host may attach to one forward of the DiT (`transformer_options`, ComfyUI's dict protocol), applied where
ComfyUI's own HunyuanVideo model applies it (`comfy/ldm/hunyuan_video/model.py` `forward_orig` and the Flux blocks it
reuses); an empty dict changes nothing, so the core alone never notices.

- Per-block entries the DiT sets in its copy of the dict: `total_blocks`, `block_type` ("double" / "single"),
  `block_index`, and for the single blocks `img_slice` = [start, end) of the video tokens in the joint sequence.
  This DiT joins [video ; text] (the official order; ComfyUI's joins [text ; video]), so `img_slice` is
  [0, video tokens]: a patch that reads `img_slice` finds the video tokens, one that assumes text first would not.
- `patches_replace["dit"][("double_block" | "single_block", i)]`: a function (args, {"original_block": f}) that
  replaces block i; args hold "img", "txt" (double) or "img" = the joint sequence (single), "vec", "pe" (this DiT's
  RoPE table (cos, sin)), "attention_mask" (key mask) and "transformer_options"; it returns {"img"[, "txt"]}.
- `patches["attn1_output_patch"]`: functions (attention output [B, L, D], options with `img_slice`) -> output, after
  every joint attention of the double and single blocks.
- `control`: {"input": per double block, "output": per single block} tensors added to the video tokens.
Anything else a dict may carry for a transformer (another replace kind, `attn1_patch` which needs ComfyUI's own
RoPE tensor, a block index this model lacks) is refused by `check_options`, naming where it comes from: a patch
that cannot apply never runs silently unpatched.
"""

from __future__ import annotations

import torch

DIT_BLOCKS = ("double_block", "single_block")
OUTPUT_PATCH = "attn1_output_patch"


def describe(fn) -> str:
    """Where a patch function comes from, for messages: its name, the class (node) or function that made it, and its
    module, e.g. "skip from SkipLayerGuidanceDiT (comfy_extras.nodes_slg)"."""
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name, owner = qualname.split(".")[-1], qualname.split(".<locals>")[0].split(".")[0]
    return f"{name} ({module})" if owner == name else f"{name} from {owner} ({module})"


def check_options(options: dict, double_blocks: int, single_blocks: int) -> dict:
    """The block replacements {(kind, index): function} of `options`, after refusing what this DiT cannot apply.
    Raises ValueError naming the patch, where it comes from and why."""
    replace = options.get("patches_replace", {}) or {}
    for kind, entries in replace.items():
        if kind != "dit" and entries:
            fn = next(iter(entries.values()))
            raise ValueError(f"{describe(fn)} replaces '{kind}' modules {sorted(entries, key=str)[:3]}; this "
                             "transformer (HunyuanVideo architecture) has dual- and single-stream blocks and takes "
                             "only patches_replace['dit'] ('double_block' / 'single_block', index). Remove that node "
                             "from the MODEL's path")
    blocks = dict(replace.get("dit", {}) or {})
    counts = dict(zip(DIT_BLOCKS, (double_blocks, single_blocks)))
    for key, fn in blocks.items():
        kind, index = key if isinstance(key, tuple) and len(key) == 2 else (key, None)
        if kind not in counts or not isinstance(index, int) or not 0 <= index < counts[kind]:
            raise ValueError(f"{describe(fn)} replaces transformer block {key!r}, which this model does not have: it "
                             f"has {double_blocks} double blocks and {single_blocks} single blocks (indices from 0). "
                             "Choose blocks it has")
    for kind, fns in (options.get("patches", {}) or {}).items():
        if kind != OUTPUT_PATCH and fns:
            why = (" (it edits q, k and ComfyUI's own RoPE tensor before attention, in ComfyUI's [text ; video] "
                   "order; this transformer computes RoPE itself)") if kind == "attn1_patch" else ""
            raise ValueError(f"{describe(fns[0])} adds a '{kind}' patch, which this transformer cannot apply{why}. It "
                             f"applies '{OUTPUT_PATCH}' and patches_replace['dit']; remove that node from the MODEL's "
                             "path")
    return blocks


def output_patches(out: torch.Tensor, options: dict, img_slice: list[int]) -> torch.Tensor:
    """`attn1_output_patch` functions on a joint attention's output [B, L, D] ([video ; text]; `img_slice` = where
    the video tokens are), as the Flux blocks of ComfyUI's HunyuanVideo call them."""
    fns = (options.get("patches", {}) or {}).get(OUTPUT_PATCH)
    if not fns:
        return out
    extra = {**options, "img_slice": img_slice}
    for fn in fns:
        out = fn(out, extra)
    return out


def run_double(block, replace, img, txt, vec, rope, key_mask, first: int, options: dict):
    """Double block `options["block_index"]`, or its replacement: (img, txt)."""
    fn = replace.get(("double_block", options["block_index"]))
    if fn is None:
        return block(img, txt, vec, rope, key_mask, first, options)

    def original(args):
        img, txt = block(args["img"], args["txt"], args["vec"], args["pe"], args["attention_mask"], first,
                         args["transformer_options"])
        return {"img": img, "txt": txt}

    out = fn({"img": img, "txt": txt, "vec": vec, "pe": rope, "attention_mask": key_mask,
              "transformer_options": options}, {"original_block": original})
    return out["img"], out["txt"]


def run_single(block, replace, joint, vec, rope, key_mask, first: int, options: dict):
    """Single block `options["block_index"]` on the joint sequence [video ; text], or its replacement."""
    fn = replace.get(("single_block", options["block_index"]))
    if fn is None:
        return block(joint, vec, rope, key_mask, first, options)

    def original(args):
        return {"img": block(args["img"], args["vec"], args["pe"], args["attention_mask"], first,
                             args["transformer_options"])}

    return fn({"img": joint, "vec": vec, "pe": rope, "attention_mask": key_mask, "transformer_options": options},
              {"original_block": original})["img"]


def add_control(tokens: torch.Tensor, control: dict | None, kind: str, index: int) -> torch.Tensor:
    """Add a ControlNet's residual `control[kind][index]` ([B, Li, D]; kind "input" after double block `index`,
    "output" after single block `index`) to the leading video tokens of `tokens` in place, as ComfyUI adds it."""
    residuals = (control or {}).get(kind) or ()
    if index < len(residuals) and residuals[index] is not None:
        add = residuals[index]
        tokens[:, :add.shape[1]] += add.to(tokens)
    return tokens
