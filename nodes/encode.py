"""Conditioning nodes: prompt + prior image -> Magic141 conditioning; start image + VAE -> reference latent."""

from __future__ import annotations

import dataclasses

import torch

from ..magic141_core.sampling.sampler import latent_shape
from ..magic141_core.text import NEGATIVE_PROMPT
from ..magic141_core.vae import scale_latent
from ..magic141_core.video.start_image import rgb
from . import inputs
from .common import CATEGORY, FIT, VIDEO_SIZE, fit_start_image
from .host import memory, progress
from .native import to_native


class Magic141Encode:
    DESCRIPTION = (
        "Encodes the prompt (LLaVA's Llama-3 and CLIP-L) and the prior image (LLaVA's vision branch) into Magic141 "
        "conditioning: [image tokens ; text tokens]. The prompt never goes to the vision model. The negative prompt "
        "is only used when the sampler runs classifier-free guidance."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MAGIC141_CONDITIONING", "CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("conditioning", "positive", "negative")
    OUTPUT_TOOLTIPS = ("Text and image tokens; add the start image's latent with Magic141 Image To Video.",
                       "The prompt as native CONDITIONING (padding cropped, pooled_output), e.g. for "
                       "HunyuanImageToVideo v1 and KSampler.", "The negative prompt as native CONDITIONING.")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "encoders": ("MAGIC141_ENCODERS", {"tooltip": "From Magic141 Encoder Loader."}),
                "prompt": ("STRING", {"multiline": True, "dynamicPrompts": True,
                                      "tooltip": "What happens in the clip (motion, camera). Up to 256 tokens."}),
                "image": ("IMAGE", {"tooltip": "The prior image, as loaded (the vision model sees it uncropped)."}),
            },
            "optional": {
                "negative_prompt": ("STRING", {"multiline": True, "default": NEGATIVE_PROMPT, "advanced": True,
                                               "tooltip": "Used only for guidance > 1 without a guidance embedder."}),
            },
        }

    def encode(self, encoders, prompt, image, negative_prompt=NEGATIVE_PROMPT):
        if not prompt.strip():
            raise ValueError("the prompt is empty; describe the motion you want (e.g. 'the camera slowly pans left')")
        image = rgb(inputs.image_batch(image, "Magic141 Encode", "image"))
        conditioning = encoders.encode(prompt, image, negative=True, negative_prompt=negative_prompt)
        return (conditioning, to_native(conditioning.positive), to_native(conditioning.negative))


class Magic141ImageToVideo:
    DESCRIPTION = (
        "Prepares an image-to-video clip: fits the start image to the video size (auto: 540p on a GPU, draft on a "
        "CPU; draft: 1/6 size, at most 17 frames; an official 540p/720p bucket nearest its aspect ratio; or a custom "
        "size; centre crop, or pad with black bars; the size chosen is shown on the node), encodes it with the VAE "
        "as the reference latent of frame 0, and makes the empty video latent for the sampler. One start image: a "
        "batch of several is refused (pick one with Image From Batch)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MAGIC141_CONDITIONING", "LATENT", "IMAGE", "CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("conditioning", "latent", "start_image", "positive", "negative")
    OUTPUT_TOOLTIPS = ("The conditioning with the start image's latent.", "Empty video latent (sets size and length).",
                       "The start image as fitted to the video size.",
                       "Native positive CONDITIONING with the start image set as HunyuanImageToVideo v1 sets it "
                       "(concat_latent_image, concat_mask): for native KSampler on a Magic141 or HunyuanVideo-I2V "
                       "model.", "Native negative CONDITIONING (the negative prompt, with the start image).")
    FUNCTION = "prepare"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "conditioning": ("MAGIC141_CONDITIONING", {"tooltip": "From Magic141 Encode."}),
                "vae": ("VAE", {"tooltip": "The HunyuanVideo VAE (native Load VAE, models/vae)."}),
                "start_image": ("IMAGE", {"tooltip": "Frame 0 of the video."}),
                **VIDEO_SIZE,
                "length": ("INT", {"default": 81, "min": 1, "max": 1025, "step": 4,
                                   "tooltip": "Frames, 4k+1 (81 = the official 3.4 s at 24 fps; draft makes at most "
                                              "17)."}),
            },
            "optional": {**FIT},  # optional: workflows saved before it existed load unchanged (crop)
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def prepare(self, conditioning, vae, start_image, resolution, width, height, length, fit="crop", unique_id=None):
        # refuses a batch of several images; the size policy (auto / draft / buckets / custom) is the core's
        fitted, size = fit_start_image(start_image, resolution, width, height, length, fit)
        shape = latent_shape(size.frames, fitted.shape[1], fitted.shape[2])
        progress.show_text(unique_id, f"Magic141 Image To Video: {size.describe()}")
        reference = scale_latent(vae.encode(fitted)[:, :, :1].float())
        if tuple(reference.shape[1:]) != (16, 1, *shape[3:]):
            raise ValueError(f"the VAE gave a latent of shape {tuple(reference.shape)}; Magic141 needs the "
                             "HunyuanVideo VAE (16 channels, 8x spatial): choose hunyuan_video_vae in Load VAE")
        conditioning = dataclasses.replace(conditioning, reference=reference)
        latent = torch.zeros(shape, device=memory.intermediate_device())
        native = [to_native(text, reference, shape[2]) if text is not None else None
                  for text in (conditioning.positive, conditioning.negative)]
        return (conditioning, {"samples": latent}, fitted, *native)


NODE_CLASS_MAPPINGS = {"Magic141Encode": Magic141Encode, "Magic141ImageToVideo": Magic141ImageToVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"Magic141Encode": "Magic141 Encode", "Magic141ImageToVideo": "Magic141 Image To Video"}
