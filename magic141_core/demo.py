"""Deterministic weights: the random models tests build, and the built-in architecture demo.

None of these is a trained model. The demo's transformer and VAE have hand-set pass-through weights
(`passthrough.py`): its videos hold the start image still, which shows the wiring works end to end, and nothing
more. Real checkpoints replace it.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter from a seeded CPU generator: fan-in scaled normal weights, small biases, and norm
    weights near 1 (so modulations, gates and norms are all non-trivial). Same seed, same weights, any machine."""
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.copy_(_random_value(name, param.shape, generator).to(param.dtype))
    return module


def _random_value(name: str, shape, generator: torch.Generator) -> torch.Tensor:
    """One parameter's deterministic value (fp32), by the rule `randomize_` documents."""
    if len(shape) >= 2:
        return torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[1:]))
    if "norm" in name and name.endswith("weight"):
        return 1 + 0.1 * torch.randn(shape, generator=generator)
    return 0.02 * torch.randn(shape, generator=generator)


def random_dit(config, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A `Magic141DiT` of `config` with deterministic random weights."""
    from .dit import Magic141DiT

    return randomize_(Magic141DiT(config), seed).to(dtype).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------- the built-in demo model files
# Small models with the real architectures, written in the layouts ComfyUI users keep, so every loader, node and
# example workflow runs without a download. The transformer and VAE pass the start image through (a still video,
# whatever the prompt and seed); the encoders are random. An architecture demo, not a trained model.
DEMO_FILES = {  # role -> (ComfyUI model folder, file name)
    "dit": ("diffusion_models", "magic141_DEMO_passthrough_dit.safetensors"),
    "llava": ("text_encoders", "magic141_DEMO_untrained_llava_llama3.safetensors"),
    "vision": ("clip_vision", "magic141_DEMO_untrained_llava_vision.safetensors"),
    "clip_l": ("text_encoders", "magic141_DEMO_untrained_clip_l.safetensors"),
    "vae": ("vae", "magic141_DEMO_passthrough_hunyuan_video_vae.safetensors"),
    "retrieval_clip": ("clip_vision", "magic141_DEMO_untrained_clip"),  # a Hugging Face CLIPModel folder
    # the text-to-image prior of the text_to_image / prior_switch templates: an untrained SD1.5-format checkpoint
    "image_model": ("checkpoints", "sd15_image_model.safetensors"),
}
DEMO_LLM_DIM, DEMO_CLIP_DIM = 256, 64


def demo_dit_config():
    from .config import tiny

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


def _write_demo_retrieval_clip(folder: Path, clip_tokenizer: Path, seed: int):
    """A small CLIPModel (text + vision + projections) in Hugging Face layout, with the real CLIP tokenizer."""
    import shutil

    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    from .text.images import clip_image_processor_class

    tokenizer = AutoTokenizer.from_pretrained(str(clip_tokenizer), local_files_only=True)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=1, max_position_embeddings=77, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                           image_size=224, patch_size=32),
        projection_dim=64,
    )
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    randomize_(CLIPModel(config), seed).save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    clip_image_processor_class()(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
                                 ).save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # the folder appears complete or not at all


def _sd15_resnet(prefix: str, cin: int, cout: int, emb: int = 1280) -> dict[str, tuple[int, ...]]:
    """An LDM UNet ResBlock's parameter shapes (in_layers, emb_layers, out_layers, 1x1 skip when widths differ)."""
    shapes = {"in_layers.0.weight": (cin,), "in_layers.0.bias": (cin,), "in_layers.2.weight": (cout, cin, 3, 3),
              "in_layers.2.bias": (cout,), "emb_layers.1.weight": (cout, emb), "emb_layers.1.bias": (cout,),
              "out_layers.0.weight": (cout,), "out_layers.0.bias": (cout,), "out_layers.3.weight": (cout, cout, 3, 3),
              "out_layers.3.bias": (cout,)}
    if cin != cout:
        shapes |= {"skip_connection.weight": (cout, cin, 1, 1), "skip_connection.bias": (cout,)}
    return {prefix + k: v for k, v in shapes.items()}


def _sd15_transformer(prefix: str, c: int = 320, context: int = 768) -> dict[str, tuple[int, ...]]:
    """An SD1.5 SpatialTransformer's parameter shapes: 1x1 conv in/out, one block (self-, cross-attention, GEGLU)."""
    block = {f"attn{i}.to_{x}.weight": (c, c if i == 1 or x == "q" else context) for i in (1, 2) for x in "qkv"}
    block |= {f"attn{i}.to_out.0.{w}": (c, c) if w == "weight" else (c,) for i in (1, 2) for w in ("weight", "bias")}
    block |= {"ff.net.0.proj.weight": (8 * c, c), "ff.net.0.proj.bias": (8 * c,), "ff.net.2.weight": (c, 4 * c),
              "ff.net.2.bias": (c,)}
    block |= {f"norm{i}.{w}": (c,) for i in (1, 2, 3) for w in ("weight", "bias")}
    shapes = {"norm.weight": (c,), "norm.bias": (c,), "proj_in.weight": (c, c, 1, 1), "proj_in.bias": (c,),
              "proj_out.weight": (c, c, 1, 1), "proj_out.bias": (c,)}
    shapes |= {f"transformer_blocks.0.{k}": v for k, v in block.items()}
    return {prefix + k: v for k, v in shapes.items()}


def _ldm_vae_shapes() -> dict[str, tuple[int, ...]]:
    """The SD1.x VAE (LDM AutoencoderKL: ch 128, mult 1,2,4,4, 2 resnets per level, mid attention, 4 latent
    channels): the fixed architecture ComfyUI's loader builds for any SD1.5 checkpoint."""
    shapes: dict[str, tuple[int, ...]] = {}

    def resnet(prefix, cin, cout):
        shapes.update({f"{prefix}.norm1.weight": (cin,), f"{prefix}.norm1.bias": (cin,),
                       f"{prefix}.conv1.weight": (cout, cin, 3, 3), f"{prefix}.conv1.bias": (cout,),
                       f"{prefix}.norm2.weight": (cout,), f"{prefix}.norm2.bias": (cout,),
                       f"{prefix}.conv2.weight": (cout, cout, 3, 3), f"{prefix}.conv2.bias": (cout,)})
        if cin != cout:
            shapes.update({f"{prefix}.nin_shortcut.weight": (cout, cin, 1, 1), f"{prefix}.nin_shortcut.bias": (cout,)})

    def conv(prefix, cin, cout, k=3):
        shapes.update({f"{prefix}.weight": (cout, cin, k, k), f"{prefix}.bias": (cout,)})

    def mid(prefix, c=512):
        resnet(f"{prefix}.mid.block_1", c, c)
        shapes.update({f"{prefix}.mid.attn_1.norm.weight": (c,), f"{prefix}.mid.attn_1.norm.bias": (c,)})
        for x in ("q", "k", "v", "proj_out"):
            conv(f"{prefix}.mid.attn_1.{x}", c, c, 1)
        resnet(f"{prefix}.mid.block_2", c, c)

    widths = [128 * m for m in (1, 2, 4, 4)]
    conv("encoder.conv_in", 3, 128)
    for i, w in enumerate(widths):
        for j in range(2):
            resnet(f"encoder.down.{i}.block.{j}", ([128] + widths)[i] if j == 0 else w, w)
        if i < 3:
            conv(f"encoder.down.{i}.downsample.conv", w, w)
    mid("encoder")
    shapes.update({"encoder.norm_out.weight": (512,), "encoder.norm_out.bias": (512,)})
    conv("encoder.conv_out", 512, 8)
    conv("decoder.conv_in", 4, 512)
    mid("decoder")
    cin = 512
    for i in reversed(range(4)):
        for j in range(3):
            resnet(f"decoder.up.{i}.block.{j}", cin, widths[i])
            cin = widths[i]
        if i > 0:
            conv(f"decoder.up.{i}.upsample.conv", cin, cin)
    shapes.update({"decoder.norm_out.weight": (128,), "decoder.norm_out.bias": (128,)})
    conv("decoder.conv_out", 128, 3)
    conv("quant_conv", 8, 8, 1)
    conv("post_quant_conv", 4, 4, 1)
    return shapes


def sd15_demo_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the demo image model, in the original SD1.5 checkpoint layout (what ComfyUI's
    CheckpointLoaderSimple detects as SD1.5): a one-level UNet at SD1.5's 320 channels (one ResBlock and one
    SpatialTransformer per stage, cross-attention to 768-d CLIP-L) under `model.diffusion_model.`, and the full
    SD1.x VAE under `first_stage_model.` (ComfyUI builds that fixed architecture). The CLIP-L text model is added
    by `write_demo_sd15` from transformers."""
    unet = {"time_embed.0.weight": (1280, 320), "time_embed.0.bias": (1280,), "time_embed.2.weight": (1280, 1280),
            "time_embed.2.bias": (1280,), "input_blocks.0.0.weight": (320, 4, 3, 3), "input_blocks.0.0.bias": (320,)}
    unet |= _sd15_resnet("input_blocks.1.0.", 320, 320) | _sd15_transformer("input_blocks.1.1.")
    unet |= _sd15_resnet("middle_block.0.", 320, 320) | _sd15_transformer("middle_block.1.")
    unet |= _sd15_resnet("middle_block.2.", 320, 320)
    for i in (0, 1):
        unet |= _sd15_resnet(f"output_blocks.{i}.0.", 640, 320) | _sd15_transformer(f"output_blocks.{i}.1.")
    unet |= {"out.0.weight": (320,), "out.0.bias": (320,), "out.2.weight": (4, 320, 3, 3), "out.2.bias": (4,)}
    shapes = {f"model.diffusion_model.{k}": v for k, v in unet.items()}
    return shapes | {f"first_stage_model.{k}": v for k, v in _ldm_vae_shapes().items()}


def write_demo_sd15(path: str | Path, seed: int = 0) -> Path:
    """Write the untrained SD1.5-format image model (fp16, about 0.45 GB) that the text-to-image templates load
    with the native CheckpointLoaderSimple: UNet and VAE from `sd15_demo_shapes`, CLIP-L (12 layers, 768 wide,
    the fixed text model ComfyUI builds for SD1.5) from transformers, all with `randomize_`'s deterministic values.
    Its images are noise-like patterns, not pictures: it only lets the prior branch of a workflow run."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from .checkpoints import save_safetensors

    generator = torch.Generator("cpu").manual_seed(seed)
    sd = {k: _random_value(k, shape, generator).to(torch.float16) for k, shape in sd15_demo_shapes().items()}
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                        hidden_act="quick_gelu"))
    sd |= {f"cond_stage_model.transformer.{k}": v.to(torch.float16).contiguous()
           for k, v in randomize_(clip, seed + 1).state_dict().items()}
    save_safetensors(sd, Path(path))
    return Path(path)


def comfy_llava_files(llava) -> tuple[dict, dict]:
    """A transformers LLaVA as ComfyUI's two files: the Llama-3 text encoder and the vision tower + projector."""
    from .text.comfy_keys import tower_file_tensors

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
    from .checkpoints import save_safetensors
    from .dit.loading import save_dit
    from .text.comfy_keys import tower_file_tensors
    from .passthrough import passthrough_dit, passthrough_vae

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
        _write_demo_retrieval_clip(paths["retrieval_clip"], Path(clip_tokenizer), seed + 4)
    if include_image_model and not paths["image_model"].is_file():
        write_demo_sd15(paths["image_model"], seed + 5)
    if include_vae and not paths["vae"].is_file():
        from .vae import hunyuan_video_vae, save_vae

        save_vae(passthrough_vae(hunyuan_video_vae()), paths["vae"], dtype=torch.bfloat16)
    if not include_vae:
        paths.pop("vae")
    if not include_image_model:
        paths.pop("image_model")
    return paths
