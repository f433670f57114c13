"""A tiny random CLIPModel in Hugging Face layout (config, safetensors, tokenizer, preprocessor), built offline."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = "a an the cat dog red blue green car tree house sky sea boat bird walking running on in of".split()


def word_tokenizer(words=WORDS, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>"):
    """A word-level fast tokenizer: enough for models whose tokens only need to be ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([pad, bos, eos, unk, *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A {eos}", special_tokens=[(bos, 1), (eos, 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk)


def save_tiny_clip(folder: Path, seed: int = 0, image_size: int = 32) -> Path:
    from transformers import CLIPConfig, CLIPModel

    from magic141_core.text.images import clip_image_processor_class

    torch.manual_seed(seed)
    tokenizer = word_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=32, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    clip_image_processor_class()(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
                       ).save_pretrained(folder)
    return folder
