"""The demo image model of the text-to-image templates: an untrained SD1.5-format checkpoint that ComfyUI's
native CheckpointLoaderSimple loads (its images are patterns, not pictures; it lets the prior branch run)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..weights.random_init import random_value, randomize_


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
    the fixed text model ComfyUI builds for SD1.5) from transformers, all with `random_init`'s deterministic values.
    Its images are noise-like patterns, not pictures: it only lets the prior branch of a workflow run."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..weights import save_safetensors

    generator = torch.Generator("cpu").manual_seed(seed)
    sd = {k: random_value(k, shape, generator).to(torch.float16) for k, shape in sd15_demo_shapes().items()}
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                        hidden_act="quick_gelu"))
    sd |= {f"cond_stage_model.transformer.{k}": v.to(torch.float16).contiguous()
           for k, v in randomize_(clip, seed + 1).state_dict().items()}
    save_safetensors(sd, Path(path))
    return Path(path)
