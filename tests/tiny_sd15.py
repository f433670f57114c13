"""A small random image checkpoint that ComfyUI's native loader detects as SD1.5 (CheckpointLoaderSimple), built with
ComfyUI's own modules: a one-level UNet at SD1.5's 320 channels, and the fixed-size CLIP-L text model and VAE that
ComfyUI's SD1.5 loader expects. About 0.45 GB in fp16. Needs ComfyUI importable (comfyui_env.import_comfy)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from magic141_core.demo import randomize_


def write_sd15_checkpoint(path: Path) -> Path:
    import comfy.ops
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[1],
                     channel_mult=(1,), num_heads=8, transformer_depth=[1], transformer_depth_output=[1, 1],
                     transformer_depth_middle=1, context_dim=768, use_spatial_transformer=True,
                     operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu")
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu"))
    vae = AutoencoderKL(ddconfig={"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
                                  "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [],
                                  "dropout": 0.0}, embed_dim=4)
    sd = {}
    for prefix, module, seed in (("model.diffusion_model.", unet, 1), ("cond_stage_model.transformer.", clip, 2),
                                 ("first_stage_model.", vae, 3)):
        sd |= {prefix + k: v.to(torch.float16).contiguous() for k, v in randomize_(module, seed).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path
