"""The reference image for the VLM: accepted layouts, conversion to what LLaVA's processor sees, content hashing.

The official code opens the image file with PIL and hands it to the LLaVA processor (a CLIPImageProcessor): an
image that is not RGB is converted with `PIL.Image.convert("RGB")` (alpha is dropped, not composited), then the
shortest edge is resized to 336 (bicubic), the centre 336 x 336 is cropped, rescaled by 1/255 and normalised with
the CLIP mean and std. ComfyUI images are float tensors [B, H, W, C] in 0..1 made from the file's 8-bit values
(/255), so rounding them back to 8 bits recovers the file's pixels and the processor sees what the reference saw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..video.start_image import rgb

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def to_rgb_images(image) -> list[Image.Image]:
    """One RGB PIL image per input image.

    image: a PIL image, a float tensor [H, W, C] or [B, H, W, C] in 0..1 (ComfyUI IMAGE; C = 1, 3 or 4, alpha is
    dropped as `convert("RGB")` does), a uint8 numpy array [H, W, C], or a list of these.
    """
    if image is None:
        raise ValueError("Magic141 is image-to-video: a reference image is required (ComfyUI IMAGE or PIL image)")
    if isinstance(image, Image.Image):
        return [image if image.mode == "RGB" else image.convert("RGB")]
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError("no reference image given (empty list)")
        return [out for item in image for out in to_rgb_images(item)]
    if isinstance(image, np.ndarray):
        return [_from_uint8(a) for a in (image[None] if image.ndim == 3 else image)]
    if isinstance(image, torch.Tensor):
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4 or image.shape[-1] not in (1, 3, 4) or 0 in image.shape:
            raise ValueError(
                f"image tensor must be [H, W, C] or [B, H, W, C] with C = 1, 3 or 4 (ComfyUI IMAGE layout), "
                f"got shape {tuple(image.shape)}"
            )
        if not image.is_floating_point():
            raise ValueError(f"image tensor must be float in 0..1 (ComfyUI IMAGE), got {image.dtype}")
        pixels = (rgb(image).detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        return [Image.fromarray(np.ascontiguousarray(a), "RGB") for a in pixels]
    raise TypeError(f"unsupported image type {type(image).__name__}; pass a PIL image or a float tensor [B, H, W, C]")


def _from_uint8(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image array must be uint8 [H, W, C] with C = 1, 3 or 4, got {array.dtype} {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)  # grey -> RGB, as PIL's "L" -> "RGB"
    return Image.fromarray(np.ascontiguousarray(array[..., :3]), "RGB")


def image_hash(image: Image.Image) -> str:
    """Hash of the pixels (size and RGB bytes), not of any file name: two different pictures never share it."""
    h = hashlib.sha256(f"{image.width}x{image.height}:{image.mode}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def clip_image_processor_class():
    """transformers' PIL-based CLIP image processor: `CLIPImageProcessorPil` in transformers 5 (its
    `CLIPImageProcessor` wants torchvision and warns without it), `CLIPImageProcessor` in 4.x. Both compute the same
    pixels; the torchvision ("fast") one differs slightly and is not used."""
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def load_image_processor(folder):
    """The CLIP image processor a Hugging Face folder's preprocessor_config.json describes (local files only)."""
    return clip_image_processor_class().from_pretrained(str(folder), local_files_only=True)


def llava_image_processor(image_size: int = 336):
    """The LLaVA-1.5 / llava-llama-3 preprocessing for a folder or file that ships no preprocessor_config.json."""
    return clip_image_processor_class()(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        resample=Image.Resampling.BICUBIC,
        do_center_crop=True,
        do_convert_rgb=True,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )


def pixel_values(processor, images: Sequence[Image.Image]) -> torch.Tensor:
    """[N, 3, S, S] normalised pixels, exactly as the LLaVA processor makes them. The processor is told the images
    are channels-last (as RGB PIL images are): left to guess, it takes a 1-pixel-high image for channels-first."""
    return processor(images=list(images), return_tensors="pt", input_data_format="channels_last")["pixel_values"]
