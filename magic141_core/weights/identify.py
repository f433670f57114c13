"""Name what a state dict is, so a wrong file gets "this looks like a VAE", not a torch traceback."""

from __future__ import annotations

from collections.abc import Iterable

# (description, keys or key prefixes that mark it), most specific first
_SIGNATURES = [
    ("a HunyuanVideo / Magic141 transformer in diffusers format", ("x_embedder.proj.weight", "transformer_blocks.0.")),
    ("a Magic141 / HunyuanVideo transformer", ("img_in.proj.weight", "double_blocks.0.img_attn_qkv.")),
    ("a Flux transformer", ("img_in.weight", "double_blocks.0.img_attn.qkv.")),
    ("a Wan video transformer", ("patch_embedding.weight", "blocks.0.self_attn.")),
    ("an SD / SDXL UNet", ("input_blocks.0.0.weight", "middle_block.")),
    ("a diffusers UNet", ("conv_in.weight", "down_blocks.0.")),
    ("a VAE (HunyuanVideo / video or image autoencoder)", ("encoder.conv_in.", "decoder.conv_in.")),
    ("a VAE (HunyuanVideo / video or image autoencoder)", ("encoder.down", "decoder.up")),
    ("a CLIP text encoder", ("text_model.encoder.layers.0.",)),
    ("a CLIP vision encoder", ("vision_model.encoder.layers.0.",)),
    ("a LLaVA multimodal model", ("language_model.", "vision_tower.")),
    ("an LLM text encoder (Llama-style)", ("model.layers.0.self_attn.",)),
    ("an LLM text encoder (Llama-style)", ("layers.0.self_attn.",)),
    ("a T5 text encoder", ("encoder.block.0.",)),
]


def describe(keys: Iterable[str]) -> str | None:
    """A short phrase naming the kind of model these keys belong to, or None if unknown."""
    keys = list(keys)
    for description, marks in _SIGNATURES:
        if all(any(k == m or k.startswith(m) for k in keys) for m in marks):
            return description
    return None


def wrong_model_message(name: str, keys: Iterable[str], expected: str, missing: list[str]) -> str:
    keys = list(keys)
    kind = describe(keys)
    what = f"it looks like {kind}" if kind else f"its {len(keys)} tensors do not match; missing e.g. {missing[:3]}"
    return f"{name} is not {expected}: {what}. Choose the right file for this loader."
