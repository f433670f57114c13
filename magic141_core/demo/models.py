"""The built-in architecture demo: small models with the real architectures, written as model files.

None of these is a trained model. The demo's transformer and VAE have hand-set pass-through weights
(`passthrough.py`): its videos hold the start image still, which shows the wiring works end to end, and nothing
more. Real checkpoints replace it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..weights.random_init import randomize_

# ---------------------------------------------------------------------------------- the built-in demo model files
# Small models with the real architectures, written in the layouts ComfyUI users keep, so every loader, node and
# example workflow runs without a download. The transformer and VAE pass the start image through (a still video,
# whatever the prompt and seed); the encoders are random; the retrieval CLIP and the LoRA are hand-set too
# (`retrieval.py`, `passthrough.py`). An architecture demo, not a trained model.
DEMO_FILES = {  # role -> (ComfyUI model folder, file name)
    "dit": ("diffusion_models", "magic141_DEMO_passthrough_dit.safetensors"),
    "llava": ("text_encoders", "magic141_DEMO_untrained_llava_llama3.safetensors"),
    "vision": ("clip_vision", "magic141_DEMO_untrained_llava_vision.safetensors"),
    "clip_l": ("text_encoders", "magic141_DEMO_untrained_clip_l.safetensors"),
    "vae": ("vae", "magic141_DEMO_passthrough_hunyuan_video_vae.safetensors"),
    # a Hugging Face CLIPModel folder whose hand-set weights match a prompt's colour words to an image's colours
    "retrieval_clip": ("clip_vision", "magic141_DEMO_handset_colour_clip"),
    # a LoRA for the demo transformer (official layout) whose hand-set weights swap the clip's red and blue
    "lora": ("loras", "magic141_DEMO_handset_lora_red_blue_swap.safetensors"),
    # the text-to-image prior of the text_to_image / prior_switch templates: an untrained SD1.5-format checkpoint
    "image_model": ("checkpoints", "sd15_image_model.safetensors"),
}
DEMO_LLM_DIM, DEMO_CLIP_DIM = 256, 64


def demo_dit_config():
    from ..dit.config import tiny

    return tiny(hidden_size=256, num_heads=4, double_blocks=2, single_blocks=2, refiner_blocks=2,
                text_dim=DEMO_LLM_DIM, pooled_dim=DEMO_CLIP_DIM, rope_axes=(8, 28, 28))


def _demo_llava(llama_tokenizer: Path, seed: int):
    """A tiny LLaVA whose vocabulary, image token and 336 px / 14 px-patch vision geometry match the real one."""
    from transformers import AutoTokenizer, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(str(llama_tokenizer), local_files_only=True)
    config = LlavaConfig(
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=DEMO_LLM_DIM, intermediate_size=512,
                                num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1, head_dim=128,
                                max_position_embeddings=2048, rope_theta=500000.0, rms_norm_eps=1e-5),
        vision_config=CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=1, image_size=336, patch_size=14, hidden_act="quick_gelu"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), projector_hidden_act="gelu",
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    return randomize_(LlavaForConditionalGeneration(config), seed).eval()


def _demo_clip_text(clip_tokenizer: Path, seed: int):
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel

    tokenizer = AutoTokenizer.from_pretrained(str(clip_tokenizer), local_files_only=True)
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=DEMO_CLIP_DIM, intermediate_size=128,
                            num_hidden_layers=2, num_attention_heads=1, max_position_embeddings=77,
                            hidden_act="quick_gelu", eos_token_id=tokenizer.eos_token_id,
                            bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    return randomize_(CLIPTextModel(config), seed).eval()


def comfy_llava_files(llava) -> tuple[dict, dict]:
    """A transformers LLaVA as ComfyUI's two files: the Llama-3 text encoder and the vision tower + projector."""
    from ..text.comfy_keys import tower_file_tensors

    text = {f"model.{k}": v for k, v in llava.model.language_model.state_dict().items()}
    vision = tower_file_tensors(llava.model.vision_tower, "vision_model.")
    vision |= {f"multi_modal_projector.{k}": v for k, v in llava.model.multi_modal_projector.state_dict().items()}
    return text, vision


def write_demo_models(models_dir: str | Path, llama_tokenizer: str | Path, clip_tokenizer: str | Path,
                      include_vae: bool = True, seed: int = 0, include_image_model: bool = False) -> dict[str, Path]:
    """Write the demo files that are missing under `models_dir` (ComfyUI's models/ layout); return every path.

    Tokenizers: ComfyUI's own (comfy/text_encoders/llama_tokenizer, comfy/sd1_tokenizer), so the demo encoders
    read real prompts. The VAE is the full-size HunyuanVideo architecture (ComfyUI's native loader accepts only
    that) with pass-through weights, about 0.5 GB in bf16. `include_image_model`: also the untrained SD1.5-format
    checkpoint the text-to-image templates load (`write_demo_sd15`, ~0.45 GB; ./run.sh writes it, the CLI needs none).
    """
    from ..dit.loading import save_dit
    from ..text.comfy_keys import tower_file_tensors
    from ..weights import save_safetensors
    from .passthrough import passthrough_dit, passthrough_vae, red_blue_swap_lora
    from .retrieval import write_demo_retrieval_clip
    from .sd15 import write_demo_sd15

    paths = {role: Path(models_dir) / folder / name for role, (folder, name) in DEMO_FILES.items()}
    if not paths["dit"].is_file():
        save_dit(passthrough_dit(demo_dit_config()), paths["dit"], dtype=torch.bfloat16)
    if not (paths["llava"].is_file() and paths["vision"].is_file()):
        text, vision = comfy_llava_files(_demo_llava(Path(llama_tokenizer), seed + 1))
        for role, tensors in (("llava", text), ("vision", vision)):
            if not paths[role].is_file():  # never over an existing file
                save_safetensors({k: v.to(torch.bfloat16) for k, v in tensors.items()}, paths[role])
    if not paths["clip_l"].is_file():
        clip = _demo_clip_text(Path(clip_tokenizer), seed + 2)
        clip_tensors = tower_file_tensors(clip, "text_model.")
        save_safetensors({k: v.to(torch.bfloat16) for k, v in clip_tensors.items()}, paths["clip_l"])
    if not (paths["retrieval_clip"] / "config.json").is_file():
        write_demo_retrieval_clip(paths["retrieval_clip"], Path(clip_tokenizer))
    if not paths["lora"].is_file():
        save_safetensors(red_blue_swap_lora(demo_dit_config()), paths["lora"])
    if include_image_model and not paths["image_model"].is_file():
        write_demo_sd15(paths["image_model"], seed + 5)
    if include_vae and not paths["vae"].is_file():
        from ..vae import hunyuan_video_vae, save_vae

        save_vae(passthrough_vae(hunyuan_video_vae()), paths["vae"], dtype=torch.bfloat16)
    if not include_vae:
        paths.pop("vae")
    if not include_image_model:
        paths.pop("image_model")
    return paths
