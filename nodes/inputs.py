"""Checks of the native values a node receives, one helper per type, for every entry point (and for inputs later
nodes add). ComfyUI checks only a link's type name, and LATENT and IMAGE each cover several shapes: an image
latent from Empty Latent Image is as much a LATENT as a video latent is. So each helper says which node needs
what, what arrived (and which node likely made it), and where a right one comes from, before any work. MODEL,
CONDITIONING and VAE have their own checks where they are converted (`host/native_model.velocity_model`,
`native.from_native`, `decode.core_vae`).
"""

from __future__ import annotations

import torch

from ..magic141_core.dit.config import LATENT_CHANNELS

# an image latent's channels -> the nodes that make such latents (image models' VAEs)
IMAGE_LATENT_SOURCES = {4: "Empty Latent Image, or VAE Encode with an SD1.5 / SDXL VAE",
                        16: "EmptySD3LatentImage, or VAE Encode with an SD3 / Flux VAE"}


def _what(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    return f"a {type(value).__name__}"


def _latent_kind(samples: torch.Tensor) -> str:
    shape = list(samples.shape)
    if samples.ndim == 4:
        source = IMAGE_LATENT_SOURCES.get(shape[1], "an image model's VAE Encode")
        return f"an image latent {shape} (from {source})"
    if samples.ndim == 5:
        return f"a video latent with {shape[1]} channels {shape} (another video model's)"
    return f"a tensor of shape {shape}"


def video_latent(latent, node: str, fix: str, noise_mask_ok: bool = False) -> torch.Tensor:
    """The HunyuanVideo latent [B, 16, T, h, w] (floating point) of a native LATENT dict; ValueError otherwise,
    naming `node`, what arrived and `fix` (where a right one comes from). A latent carrying a noise mask (Set
    Latent Noise Mask) is refused too, unless `noise_mask_ok` (the caller reads the mask itself: HunyuanImageToVideo
    v2's marks the start frames): these nodes denoise or decode the whole clip and would ignore it."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor):
        raise ValueError(f"{node} needs a LATENT holding 'samples'; got {_what(latent)}: {fix}")
    if samples.ndim != 5 or samples.shape[1] != LATENT_CHANNELS or not samples.is_floating_point() \
            or 0 in samples.shape:
        raise ValueError(f"{node} needs a HunyuanVideo video latent [B, {LATENT_CHANNELS}, T, H/8, W/8]; this is "
                         f"{_latent_kind(samples)}: {fix}")
    if latent.get("noise_mask") is not None and not noise_mask_ok:
        refuse_noise_mask(node)
    return samples


def refuse_noise_mask(node: str):
    """ValueError: a noise mask the node would ignore (it denoises or decodes the whole clip)."""
    raise ValueError(f"{node}: the latent carries a noise mask (Set Latent Noise Mask), which it would ignore: "
                     "Magic141 works on the whole clip. Remove the mask node")


def image_batch(images, node: str, name: str) -> torch.Tensor:
    """A native IMAGE [B, H, W, C] (C 1, 3 or 4; floating point; no empty side); ValueError otherwise, naming
    `node`, the input `name`, what arrived and where an IMAGE comes from."""
    ok = (isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[-1] in (1, 3, 4)
          and images.is_floating_point() and 0 not in images.shape)
    if not ok:
        hint = ""
        if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] in (1, 3, 4):
            hint = " (it looks channels-first, [B, C, H, W])"
        elif isinstance(images, torch.Tensor) and images.ndim == 3:
            hint = " (a MASK, or one image without its batch dimension)"
        raise ValueError(f"{node}: {name} must be an IMAGE [batch, height, width, 3] of floats in 0..1; got "
                         f"{_what(images)}{hint}. Connect Load Image, VAE Decode or another node that outputs IMAGE")
    return images
