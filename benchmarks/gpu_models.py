"""Models for the benchmarks, built where they run: our DiT and VAE with random weights made directly on the device
(meta init, then each tensor filled in place: no CPU copy, no 26 GB file), and the references that share those
very tensors (diffusers' HunyuanVideoTransformer3DModel(latent_concat) and AutoencoderKLHunyuanVideo, ComfyUI's
native HunyuanVideo), plus the FLOP count of one forward and the attention kernels a call runs.

Used by gpu_check.py and dit_forward.py; never by the pack itself.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from magic141_core.weights import to_diffusers  # noqa: E402
from magic141_core.dit.config import DiTConfig  # noqa: E402
from magic141_core.dit import Magic141DiT  # noqa: E402
from magic141_core.vae import HunyuanVideoVAE, VAEConfig  # noqa: E402


def fill_random_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter in place on its own device, tensor by tensor, with a seeded generator of that device:
    fan-in scaled normal weights, norm weights near 1, small biases (the recipe of `random_init.randomize_`, which
    draws on the CPU). Peak extra memory: one tensor's worth of fp32 noise."""
    with torch.no_grad():
        for i, (name, param) in enumerate(module.named_parameters()):
            generator = torch.Generator(param.device).manual_seed(seed * 100_003 + i)
            noise = torch.randn(param.shape, generator=generator, device=param.device, dtype=torch.float32)
            if param.ndim >= 2:
                noise /= math.sqrt(math.prod(param.shape[1:]))
            elif "norm" in name and name.endswith("weight"):
                noise = noise.mul_(0.1).add_(1)
            else:
                noise *= 0.02
            param.copy_(noise)
            del noise
    return module


def _materialise(module: torch.nn.Module, device, dtype, seed: int) -> torch.nn.Module:
    module = module.to(dtype).to_empty(device=device)  # the dtype first: on meta it costs nothing
    return fill_random_(module, seed).eval().requires_grad_(False)


def random_dit_on(config: DiTConfig, device, dtype: torch.dtype, seed: int = 0) -> Magic141DiT:
    """Our DiT of `config` with random weights created on `device` in `dtype` (the 13B one in seconds on a GPU)."""
    with torch.device("meta"):
        model = Magic141DiT(config)
    return _materialise(model, device, dtype, seed)


def random_vae_on(config: VAEConfig, device, dtype: torch.dtype, seed: int = 1) -> HunyuanVideoVAE:
    """Our VAE of `config` with random weights created on `device` in `dtype`."""
    with torch.device("meta"):
        model = HunyuanVideoVAE(config)
    return _materialise(model, device, dtype, seed)


def diffusers_dit(config: DiTConfig, sd: dict[str, torch.Tensor]):
    """diffusers' HunyuanVideoTransformer3DModel(image_condition_type="latent_concat") holding the tensors of `sd`
    (official names, e.g. our model's state_dict), mapped by `weights.to_diffusers`: split qkv become views of
    the fused tensors, so on the same device the two models share their weights (no second copy)."""
    from diffusers import HunyuanVideoTransformer3DModel

    with torch.device("meta"):
        model = HunyuanVideoTransformer3DModel(
            in_channels=config.in_channels, out_channels=config.out_channels, num_attention_heads=config.num_heads,
            attention_head_dim=config.head_dim, num_layers=config.double_blocks,
            num_single_layers=config.single_blocks, num_refiner_layers=config.refiner_blocks,
            mlp_ratio=config.mlp_ratio, patch_size=config.patch_size[1], patch_size_t=config.patch_size[0],
            text_embed_dim=config.text_dim, pooled_projection_dim=config.pooled_dim, rope_theta=config.rope_theta,
            rope_axes_dim=config.rope_axes, guidance_embeds=config.guidance_embed,
            image_condition_type="latent_concat",
        )
    model.load_state_dict(to_diffusers(dict(sd)), strict=True, assign=True)
    return model.eval().requires_grad_(False)


def diffusers_vae(vae: HunyuanVideoVAE):
    """diffusers' AutoencoderKLHunyuanVideo holding our VAE's tensors (the names are the same)."""
    from diffusers import AutoencoderKLHunyuanVideo

    c = vae.config
    levels = len(c.block_out_channels)
    with torch.device("meta"):
        model = AutoencoderKLHunyuanVideo(
            latent_channels=c.latent_channels, block_out_channels=c.block_out_channels,
            layers_per_block=c.layers_per_block, norm_num_groups=c.norm_groups,
            down_block_types=("HunyuanVideoDownBlock3D",) * levels, up_block_types=("HunyuanVideoUpBlock3D",) * levels,
        )
    model.load_state_dict(vae.state_dict(), strict=True, assign=True)
    return model.eval().requires_grad_(False)


def comfyui_root() -> Path | None:
    """The ComfyUI folder to import the native model from: $MAGIC141_COMFYUI, else .host/ComfyUI if present."""
    host = Path(os.environ.get("MAGIC141_HOST", REPO / ".host"))
    root = Path(os.environ.get("MAGIC141_COMFYUI", host / "ComfyUI"))
    return root if (root / "comfy" / "ldm" / "hunyuan_video" / "model.py").is_file() else None


def comfy_dit(config: DiTConfig, sd: dict[str, torch.Tensor], device: torch.device):
    """ComfyUI's native HunyuanVideo model holding the tensors of `sd`, renamed by ComfyUI's own
    `supported_models.HunyuanVideo.process_unet_state_dict` and loaded strictly. Raises ImportError when ComfyUI
    is not found; a mismatch raises RuntimeError naming the keys."""
    root = comfyui_root()
    if root is None:
        raise ImportError("ComfyUI not found (set MAGIC141_COMFYUI to a ComfyUI folder)")
    for path in (root, root.parent / "stubs"):  # the test host's torchvision/torchaudio stand-ins, where there are
        if path.is_dir() and str(path) not in sys.path:
            sys.path.insert(0, str(path))
    from comfy.cli_args import args

    if device.type == "cpu":
        args.cpu = True  # before comfy.model_management is imported, on a CPU-only torch
    import comfy.ops
    import comfy.supported_models
    from comfy.ldm.hunyuan_video.model import HunyuanVideo, HunyuanVideoParams

    params = dict(in_channels=config.in_channels, out_channels=config.out_channels, vec_in_dim=config.pooled_dim,
                  context_in_dim=config.text_dim, hidden_size=config.hidden_size, mlp_ratio=config.mlp_ratio,
                  num_heads=config.num_heads, depth=config.double_blocks, depth_single_blocks=config.single_blocks,
                  axes_dim=list(config.rope_axes), theta=int(config.rope_theta), patch_size=list(config.patch_size),
                  qkv_bias=True, guidance_embed=config.guidance_embed)
    for field in getattr(HunyuanVideoParams, "__dataclass_fields__", {}):  # newer fields (HunyuanVideo 1.5): off
        params.setdefault(field, None if field.endswith("_dim") else False)
    model = HunyuanVideo(image_model=None, dtype=next(iter(sd.values())).dtype, device="meta",
                         operations=comfy.ops.disable_weight_init, **params)
    renamed = comfy.supported_models.HunyuanVideo.process_unet_state_dict(None, dict(sd))
    model.load_state_dict(renamed, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def dit_flops(config: DiTConfig, video_tokens: int, text_tokens: int) -> float:
    """FLOP of one forward at batch 1 (a multiply-add counts 2), linears and attention, as torch's FlopCounterMode
    counts them (elementwise work is not counted). Attention: 4 L^2 D per block (QK^T and AV)."""
    d, mlp, lt = config.hidden_size, int(config.hidden_size * config.mlp_ratio), text_tokens
    L = video_tokens + text_tokens

    def linear(tokens, fan_in, fan_out):
        return 2 * tokens * fan_in * fan_out

    def embedder(fan_in):  # MLPEmbedder / TimestepEmbedder on one vector
        return linear(1, fan_in, d) + linear(1, d, d)

    f = linear(video_tokens, config.in_channels * math.prod(config.patch_size), d)  # patch embedding
    f += embedder(256) + embedder(config.pooled_dim)  # time_in, vector_in
    f += embedder(256) * (config.guidance_embed)
    # token refiner: input projection, its own time + pooled-text embedders, blocks of attention + MLP + adaLN
    f += linear(lt, config.text_dim, d) + embedder(256) + embedder(config.text_dim)
    f += config.refiner_blocks * (linear(lt, d, 4 * d) + linear(lt, d, 2 * mlp) + 4 * lt * lt * d
                                  + linear(1, d, 2 * d))
    per_stream = linear(1, d, 6 * d)  # adaLN of one stream
    double = 2 * per_stream + linear(L, d, 4 * d) + linear(L, d, 2 * mlp) + 4 * L * L * d
    single = linear(1, d, 3 * d) + linear(L, d, 3 * d + mlp) + linear(L, d + mlp, d) + 4 * L * L * d
    f += config.double_blocks * double + config.single_blocks * single
    f += linear(1, d, 2 * d) + linear(video_tokens, d, math.prod(config.patch_size) * config.out_channels)
    return float(f)


SDPA_KERNELS = {  # aten op (as the profiler names it) -> backend
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "aten::_scaled_dot_product_efficient_attention": "memory-efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cuDNN",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_fused_attention_overrideable": "fused (device-specific)",
}


def attention_backends(fn) -> tuple[list[str], object]:
    """Run fn() once under the profiler (CPU activity: the dispatcher's choice shows as an aten op) and return the
    attention backends it used and fn's result. No SDPA op but a softmax: "matmul + softmax (no fused kernel)"."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = fn()
    names = {e.key for e in prof.key_averages()}
    found = sorted({backend for op, backend in SDPA_KERNELS.items() if op in names})
    if not found:
        external = sorted(n for n in names if "flash" in n.lower() or "sage" in n.lower())
        found = external or (["matmul + softmax (no fused kernel)"] if any("softmax" in n for n in names) else [])
    return found, result
