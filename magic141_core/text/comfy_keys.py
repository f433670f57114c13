"""ComfyUI's single-file text encoders mapped onto the transformers modules, and their configs read from the weights.

Key names (from ComfyUI's `comfy/text_encoders/llama.py`, `comfy/clip_model.py`, `comfy/clip_vision.py`):
- llava_llama3_{fp16,fp8_scaled}.safetensors: ComfyUI's `Llama2` keeps the Llama under `model.` with transformers'
  own names (`model.embed_tokens`, `model.layers.N.self_attn.q_proj`, ..., `model.norm`); an `lm_head` may be
  present and is not needed. -> LlavaModel `language_model.*`.
- llava_llama3_vision.safetensors: `vision_model.*` (transformers CLIPVisionModel names, including its
  `pre_layrnorm` spelling) and `multi_modal_projector.linear_{1,2}` -> LlavaModel `vision_tower.vision_model.*` and
  `multi_modal_projector.*`; a `visual_projection` is not used by LLaVA.
- clip_l.safetensors: transformers CLIPTextModel names (`text_model.*`); `text_projection`, `logit_scale` and an old
  `position_ids` buffer are dropped.
- transformers 5 flattened `CLIPTextModel` / `CLIPVisionModel`: their tensors lost the `text_model.` / `vision_model.`
  level (`vision_tower.embeddings.*` where 4.x has `vision_tower.vision_model.embeddings.*`). The names here are the
  4.x ones, which ComfyUI's files also use; `in_model_layout` renames them to whatever the installed transformers
  built, so every file loads under both.
- fp8 (plain, or ComfyUI's scaled fp8 with its `scale_weight` / `weight_scale` tensors) is dequantized on read by
  `weights.fp8.Fp8View`, shared with the DiT loader, before these names are mapped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..weights.files import RenamedView
from ..weights.fill import layer_of
from ..weights.limits import block_count, tensor_shape

LLAMA_HEAD_DIM = 128  # Llama-3-8B: 32 heads x 128 (8 key/value heads)
CLIP_HEAD_DIM = 64  # CLIP ViT-L/14 text (12 x 64) and vision (16 x 64) towers
_DROP = re.compile(r"^(lm_head\.|visual_projection\.|text_projection\.|logit_scale$|"
                   r"text_model\.embeddings\.position_ids$|vision_model\.embeddings\.position_ids$)")


def llava_key(key: str) -> str | None:
    """The LlavaModel parameter for a key of ComfyUI's llava text-encoder or vision file (None: not used)."""
    if _DROP.search(key):
        return None
    if key.startswith("model."):
        return "language_model." + key.removeprefix("model.")
    if key.startswith("vision_model."):
        return "vision_tower." + key
    if key.startswith("multi_modal_projector."):
        return key
    raise KeyError(key)


def clip_key(key: str) -> str | None:
    """The CLIPTextModel parameter for a key of ComfyUI's clip_l file (None: not used)."""
    if _DROP.search(key):
        return None
    if key.startswith("text_model."):
        return key
    raise KeyError(key)


_NESTED_TOWER = re.compile(r"(?:^|(?<=\.))(?:text_model|vision_model)\.")


def flat_key(key: str) -> str:
    """A tensor name without the `text_model.` / `vision_model.` level transformers 5 removed (same in 4.x and 5)."""
    return _NESTED_TOWER.sub("", key, count=1)


def nested_key(key: str) -> str:
    """A LLaVA tensor name in the 4.x layout (the names ComfyUI's files and the config checks use): a file written
    under transformers 5 names the vision tower without its `vision_model.` level."""
    if key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model."):
        return "vision_tower.vision_model." + key.removeprefix("vision_tower.")
    return key


def in_model_layout(sd: Mapping[str, torch.Tensor], model: torch.nn.Module) -> RenamedView:
    """A state dict in 4.x names (ComfyUI files, files saved under either transformers) seen under the names of
    `model` as the installed transformers built it; names the model does not have pass through unchanged, so the
    loader's strict check still reports them."""
    own = {flat_key(name): name for name, _ in model.named_modules()}

    def renamed(key: str) -> str:
        layer = layer_of(key)
        return own.get(flat_key(layer), layer) + key[len(layer):]

    return RenamedView(sd, {renamed(k): k for k in sd})


def tower_file_tensors(tower: torch.nn.Module, level: str) -> dict[str, torch.Tensor]:
    """A CLIP tower's tensors under the names ComfyUI's files use (`level` = "vision_model." for LLaVA's vision
    tower, "text_model." for clip_l), whichever transformers built it."""
    return {level + flat_key(k): v for k, v in tower.state_dict().items()}


def llama_config(sd: Mapping[str, torch.Tensor], file: str = "state dict"):
    """LlamaConfig of a `language_model.*` state dict (Llama-3 conventions for what weights cannot show). Sizes
    come from tensor shapes (file headers where possible) and the layer count from `limits.block_count`."""
    from transformers import LlamaConfig

    vocab, hidden = tensor_shape(sd, "language_model.embed_tokens.weight", file, ndim=2)
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=tensor_shape(sd, "language_model.layers.0.mlp.gate_proj.weight", file, ndim=2)[0],
        num_hidden_layers=block_count(sd, "language_model.layers", file),
        num_attention_heads=tensor_shape(sd, "language_model.layers.0.self_attn.q_proj.weight", file, ndim=2)[0]
        // LLAMA_HEAD_DIM,
        num_key_value_heads=tensor_shape(sd, "language_model.layers.0.self_attn.k_proj.weight", file, ndim=2)[0]
        // LLAMA_HEAD_DIM,
        head_dim=LLAMA_HEAD_DIM,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=False,
    )


def clip_vision_config(sd: Mapping[str, torch.Tensor], prefix: str = "vision_tower.vision_model.",
                       file: str = "state dict"):
    """CLIPVisionConfig of LLaVA's vision tower (ViT-L/14-336 for llava-llama-3)."""
    from transformers import CLIPVisionConfig

    hidden, _, patch, _ = tensor_shape(sd, prefix + "embeddings.patch_embedding.weight", file, ndim=4)
    positions = tensor_shape(sd, prefix + "embeddings.position_embedding.weight", file, ndim=2)[0]
    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=tensor_shape(sd, prefix + "encoder.layers.0.mlp.fc1.weight", file, ndim=2)[0],
        num_hidden_layers=block_count(sd, prefix + "encoder.layers", file),
        num_attention_heads=hidden // CLIP_HEAD_DIM,
        image_size=round((positions - 1) ** 0.5) * patch,
        patch_size=patch,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


def llava_config(sd: Mapping[str, torch.Tensor], image_token_id: int, pad_token_id: int | None = None,
                 file: str = "state dict"):
    """LlavaConfig of a mapped LlavaModel state dict, as xtuner/llava-llama-3-8b-v1_1-transformers sets it."""
    from transformers import LlavaConfig

    return LlavaConfig(
        text_config=llama_config(sd, file),
        vision_config=clip_vision_config(sd, file=file),
        image_token_index=image_token_id,
        pad_token_id=pad_token_id,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def clip_text_config(sd: Mapping[str, torch.Tensor], eos_token_id: int, bos_token_id: int, pad_token_id: int,
                     file: str = "state dict"):
    """CLIPTextConfig of a `text_model.*` state dict (openai CLIP-L: 12 layers x 768, 77 positions)."""
    from transformers import CLIPTextConfig

    vocab, hidden = tensor_shape(sd, "text_model.embeddings.token_embedding.weight", file, ndim=2)
    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=tensor_shape(sd, "text_model.encoder.layers.0.mlp.fc1.weight", file, ndim=2)[0],
        num_hidden_layers=block_count(sd, "text_model.encoder.layers", file),
        num_attention_heads=max(hidden // CLIP_HEAD_DIM, 1),
        max_position_embeddings=tensor_shape(sd, "text_model.embeddings.position_embedding.weight", file,
                                             ndim=2)[0],
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        # pooled = hidden state at the first end-of-text token (the reference's argmax over ids finds the same one)
        eos_token_id=eos_token_id,
        bos_token_id=bos_token_id,
        pad_token_id=pad_token_id,
    )
