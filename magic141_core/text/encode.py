"""The forward passes of the families' conditioning, on loaded transformers modules (no caching, no devices).

- `encode_llm`:  prompts -> LLM text tokens [B, 256, C] + mask [B, 256]
- `encode_clip`: prompts -> CLIP-L pooled [B, P]
- `encode_vlm`:  images  -> VLM image tokens [N, 146, C] (mask: all ones)
- `encode_i2v`:  prompts + images -> HunyuanVideo-I2V's [image tokens / interleave ; text tokens] + mask, one pass
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from .images import pixel_values
from .prompts import (
    CLIP_MAX_LENGTH,
    END_HEADER,
    I2V_ASSISTANT_TOKENS,
    I2V_TEMPLATE,
    IMAGE_TOKEN,
    LLM_MAX_PROMPT_TOKENS,
    LLM_SKIP_LAYERS,
    LLM_TEMPLATE,
    VLM_IMAGE_STRIDE,
    VLM_TEMPLATE,
    VLM_USER_HEADER,
    expand_image_tokens,
    image_feature_count,
    llm_crop_start,
    vlm_keep_positions,
)

logger = logging.getLogger(__name__)


def _param(module: torch.nn.Module) -> torch.Tensor:
    return next(module.parameters())


def tokenize_llm(tokenizer, prompts: Sequence[str], max_prompt_tokens: int = LLM_MAX_PROMPT_TOKENS,
                 template: str = LLM_TEMPLATE):
    """Template, tokenize to crop + 256 tokens (right padding, truncation).

    Returns input_ids [B, crop + 256], attention_mask [B, crop + 256] and crop (95 for llava-llama-3 and the text
    template, 103 for the I2V template).
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out; any id will do
    crop = llm_crop_start(tokenizer, template)
    max_length = crop + max_prompt_tokens
    texts = [template.format(p) for p in prompts]
    prefix = tokenizer(template.split("{}")[0])["input_ids"]
    for i, ids in enumerate(tokenizer(texts)["input_ids"]):
        if ids[:crop] != prefix:
            logger.warning(
                "prompt %d starts with characters that merge with the template's last token; the crop of the first "
                "%d template tokens (as in the reference) also cuts the prompt's first token",
                i, crop,
            )
        if len(ids) > max_length:
            logger.warning(
                "prompt %d is %d tokens long but Magic141's text encoder reads at most %d (its closing <|eot_id|> "
                "included): the prompt is truncated, its last %d tokens are dropped",
                i, len(ids) - crop - 1, max_prompt_tokens, len(ids) - max_length,
            )
    batch = tokenizer(texts, max_length=max_length, padding="max_length", truncation=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"], crop


@torch.no_grad()
def encode_llm(language_model, tokenizer, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """LLM text tokens: hidden_states[-3] (no final norm) with the template cropped -> [B, 256, C], mask [B, 256]."""
    ids, mask, crop = tokenize_llm(tokenizer, prompts)
    device = _param(language_model).device
    out = language_model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
    hidden = out.hidden_states[-(LLM_SKIP_LAYERS + 1)]  # [B, crop + 256, C]
    return hidden[:, crop:], mask[:, crop:].to(device)


@torch.no_grad()
def encode_clip(text_model, tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """CLIP-L pooled output of the bare prompts, 77 tokens -> [B, P]."""
    for i, ids in enumerate(tokenizer(list(prompts))["input_ids"]):
        if len(ids) > CLIP_MAX_LENGTH:
            logger.info("prompt %d is %d CLIP tokens; CLIP-L reads the first %d", i, len(ids), CLIP_MAX_LENGTH)
    batch = tokenizer(
        list(prompts), max_length=CLIP_MAX_LENGTH, padding="max_length", truncation=True, return_tensors="pt"
    )
    device = _param(text_model).device
    out = text_model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
    return out.pooler_output


def vlm_input_ids(tokenizer, image_token_id: int, n_features: int) -> tuple[list[int], torch.Tensor]:
    """The fixed VLM sequence with the image expanded to its features, and the positions kept from it."""
    ids = tokenizer(VLM_TEMPLATE)["input_ids"]
    if ids.count(image_token_id) != 1:
        raise ValueError(
            f"the tokenizer splits {IMAGE_TOKEN} into pieces (found {ids.count(image_token_id)} image tokens with id "
            f"{image_token_id}); use the llava-llama-3 tokenizer, which has {IMAGE_TOKEN} as one token"
        )
    expanded = expand_image_tokens(ids, image_token_id, n_features)
    header = tokenizer(VLM_USER_HEADER, add_special_tokens=False)["input_ids"]
    return expanded, vlm_keep_positions(expanded, header, image_token_id, n_features, VLM_IMAGE_STRIDE)


@torch.no_grad()
def encode_vlm(llava_model, tokenizer, image_processor, images) -> torch.Tensor:
    """VLM image tokens of RGB PIL images: last normed hidden layer at the kept positions -> [N, 146, C]."""
    config = llava_model.config
    n_features = image_feature_count(config.vision_config, config.vision_feature_select_strategy)
    ids, keep = vlm_input_ids(tokenizer, config.image_token_index, n_features)
    weight = _param(llava_model)
    pixels = pixel_values(image_processor, images).to(weight.device, weight.dtype)  # [N, 3, S, S]
    ids = torch.tensor([ids], device=weight.device).expand(len(images), -1)  # [N, T]
    out = llava_model(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids))
    return out.last_hidden_state[:, keep.to(weight.device)]  # [N, 146, C]


@torch.no_grad()
def encode_i2v(llava_model, tokenizer, image_processor, prompts: Sequence[str], images, interleave: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """HunyuanVideo-I2V's text conditioning: ONE LLaVA pass over I2V_TEMPLATE with image i in the system turn and
    prompt i in the user turn (len(prompts) == len(images) = B), `hidden_states[-3]`, then
    [every `interleave`-th image feature ; the prompt's tokens from the crop on, the assistant header's 4 tokens cut
    out] -> tokens [B, n_features / interleave + 256 - 4, C] and mask [B, same] (ones on the image part; the text
    right-padded). As diffusers' `HunyuanVideoImageToVideoPipeline._get_llama_prompt_embeds` and the official
    HunyuanVideo-I2V text encoder compute it (crop 103 and features 5..581 with the real tokenizer and LLaVA).
    A truncated prompt (no assistant header left) loses its last 4 tokens instead, as in diffusers."""
    if interleave < 1:
        raise ValueError(f"image interleave must be at least 1, got {interleave}")
    config = llava_model.config
    n_features = image_feature_count(config.vision_config, config.vision_feature_select_strategy)
    image_id, end_header = config.image_token_index, tokenizer.convert_tokens_to_ids(END_HEADER)
    ids, mask, crop = tokenize_llm(tokenizer, prompts, template=I2V_TEMPLATE)  # [B, crop + 256], unexpanded
    places = (ids == image_id).nonzero()
    if len(places) != len(prompts) or bool((places[:, 1] != places[0, 1]).any()):
        raise ValueError(f"the tokenizer does not keep {IMAGE_TOKEN} as one token in the I2V template; use the "
                         "llava-llama-3 tokenizer")
    at, shift = int(places[0, 1]), n_features - 1  # the image token's place; how far the expansion moves the rest
    expanded_ids = torch.cat([ids[:, :at], ids[:, at:at + 1].expand(-1, n_features), ids[:, at + 1:]], dim=1)
    expanded_mask = torch.cat([mask[:, :at], mask[:, at:at + 1].expand(-1, n_features), mask[:, at + 1:]], dim=1)
    weight = _param(llava_model)
    pixels = pixel_values(image_processor, images).to(weight.device, weight.dtype)  # [B, 3, S, S]
    out = llava_model(input_ids=expanded_ids.to(weight.device), attention_mask=expanded_mask.to(weight.device),
                      pixel_values=pixels, output_hidden_states=True)
    hidden = out.hidden_states[-(LLM_SKIP_LAYERS + 1)]  # [B, T + shift, C]
    image = hidden[:, at:at + n_features:interleave]  # [B, n_features / interleave, C]
    texts, masks = [], []
    for i in range(len(prompts)):
        headers = (ids[i] == end_header).nonzero().flatten()
        answer = int(headers[-1]) + 1 if len(headers) >= 3 else ids.shape[1]  # where the assistant's text starts
        cut = answer - I2V_ASSISTANT_TOKENS
        texts.append(torch.cat([hidden[i, crop + shift:cut + shift], hidden[i, answer + shift:]]))
        masks.append(torch.cat([mask[i, crop:cut], mask[i, answer:]]))
    text, text_mask = torch.stack(texts), torch.stack(masks).to(hidden.device)
    image_mask = torch.ones(image.shape[:2], dtype=text_mask.dtype, device=hidden.device)
    return torch.cat([image, text], dim=1), torch.cat([image_mask, text_mask], dim=1)
