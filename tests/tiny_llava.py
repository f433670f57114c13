"""Tiny random LLaVA (Llama + CLIP vision) and CLIP text models for the encoder tests, built here.

Nothing is downloaded: the tokenizers are trained in-process with `tokenizers` (byte-level BPE with the Llama-3
split rule and the Llama-3 special tokens), the models are random, and both are saved in Hugging Face layout and as
ComfyUI's single files (fp32, and scaled fp8 for the text encoder).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from magic141_core.weights.random_init import randomize_
from magic141_core.text import Magic141Encoders
from magic141_core.text.comfy_keys import tower_file_tensors
from magic141_core.text.prompts import LLM_TEMPLATE, NEGATIVE_PROMPT, VLM_TEMPLATE

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<image>", "<pad>"]
PROMPTS = ["A cat walks on the grass, realistic style.", "a red car",
           "Two dogs play in the snow at night under a bright full moon while a boy laughs, cinematic and warm"]
IMAGE_SIZE, PATCH = 84, 14  # 6 x 6 = 36 image features -> 9 kept
LAYERS = 4



@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine more threads make them 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



def train_tokenizer(specials, corpus, *, llama: bool, vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if llama:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    bos, eos = specials[0], specials[1]
    single = f"{bos} $A" if llama else f"{bos} $A {eos}"
    ids = [(bos, tok.token_to_id(bos))] + ([] if llama else [(eos, tok.token_to_id(eos))])
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=ids)
    pad = "<pad>" if llama else eos
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   padding_side="right")


def comfy_files(llava_full, clip_model, out: Path) -> dict[str, Path]:
    """ComfyUI's HunyuanVideo text-encoder files, with the key names ComfyUI's own modules use."""
    lm = llava_full.model.language_model.state_dict()
    llm = {f"model.{k}": v for k, v in lm.items()} | {"lm_head.weight": llava_full.lm_head.weight}
    vision = tower_file_tensors(llava_full.model.vision_tower, "vision_model.")
    vision |= {f"multi_modal_projector.{k}": v for k, v in llava_full.model.multi_modal_projector.state_dict().items()}
    vision["visual_projection.weight"] = torch.zeros(8, vision["vision_model.post_layernorm.weight"].shape[0])
    clip = tower_file_tensors(clip_model, "text_model.")
    clip |= {"text_projection.weight": torch.eye(64), "logit_scale": torch.tensor(4.6)}
    # scaled fp8, as ComfyUI's llava_llama3_fp8_scaled: fp8 linear weights with a per-tensor scale_weight
    fp8 = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for k, v in llm.items():
        if k.endswith("_proj.weight"):
            scale = v.abs().max().float() / 448
            fp8[k], fp8[k.replace(".weight", ".scale_weight")] = (v / scale).to(torch.float8_e4m3fn), scale
        else:
            fp8[k] = v.to(torch.bfloat16)
    paths = {name: out / f"{name}.safetensors" for name in ("llava_llama3_fp16", "llava_llama3_vision", "clip_l",
                                                            "llava_llama3_fp8_scaled")}
    for name, sd in zip(paths, (llm, vision, clip, fp8)):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(paths[name]))
    return paths


def build_tiny_encoders(root: Path) -> dict:
    """Tiny random LLaVA and CLIP-L with trained tokenizers, saved as Hugging Face folders and as ComfyUI files."""
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration)

    from magic141_core.text.images import llava_image_processor

    corpus = [LLM_TEMPLATE.replace("{}", p) for p in PROMPTS] + [VLM_TEMPLATE, NEGATIVE_PROMPT] * 3
    llama_tok = train_tokenizer(LLAMA_SPECIALS, corpus, llama=True, vocab_size=600)
    clip_tok = train_tokenizer(["<|startoftext|>", "<|endoftext|>"], corpus, llama=False, vocab_size=400)
    image_id = llama_tok.convert_tokens_to_ids("<image>")
    config = LlavaConfig(
        text_config=LlamaConfig(vocab_size=len(llama_tok) + 8, hidden_size=256, intermediate_size=96,
                                num_hidden_layers=LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=128,
                                max_position_embeddings=1024, rope_theta=500000.0, rms_norm_eps=1e-5),
        vision_config=CLIPVisionConfig(hidden_size=128, intermediate_size=96, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH,
                                       hidden_act="quick_gelu"),
        image_token_index=image_id, projector_hidden_act="gelu", vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    llava = randomize_(LlavaForConditionalGeneration(config), seed=1).eval()
    clip_config = CLIPTextConfig(vocab_size=len(clip_tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu",
                                 eos_token_id=clip_tok.eos_token_id, bos_token_id=clip_tok.bos_token_id,
                                 pad_token_id=clip_tok.pad_token_id)
    clip = randomize_(CLIPTextModel(clip_config), seed=2).eval()

    llava_dir, clip_dir = root / "llava-llama-3-8b-v1_1-transformers", root / "clip-vit-large-patch14"
    llava.save_pretrained(llava_dir, safe_serialization=True)
    llama_tok.save_pretrained(llava_dir)
    llava_image_processor(IMAGE_SIZE).save_pretrained(llava_dir)
    clip.save_pretrained(clip_dir, safe_serialization=True)
    clip_tok.save_pretrained(clip_dir)
    llama_tok_dir, clip_tok_dir = root / "llama_tokenizer", root / "sd1_tokenizer"
    llama_tok.save_pretrained(llama_tok_dir)
    clip_tok.save_pretrained(clip_tok_dir)
    files = comfy_files(llava, clip, root)
    enc = Magic141Encoders.from_folders(llava_dir, clip_dir, device="cpu", dtype=torch.float32).load()
    return dict(root=root, llava=llava, clip=clip, llava_dir=llava_dir, clip_dir=clip_dir, files=files,
                llama_tok_dir=llama_tok_dir, clip_tok_dir=clip_tok_dir, enc=enc)



def random_image(seed: int, h: int = 61, w: int = 97, channels: int = 3) -> torch.Tensor:
    """A ComfyUI IMAGE [1, H, W, C] float in 0..1 with 8-bit values, like a loaded file."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, h, w, channels), generator=g).float() / 255

