"""Loader nodes: the Magic141 transformer (and, with the encoder issue, the text/image encoders)."""

from __future__ import annotations

import torch

from ..magic141_core.dit.loading import load_dit
from . import comfy_glue as glue

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class Magic141ModelLoader:
    DESCRIPTION = (
        "Loads the Magic141 image-to-video transformer (HunyuanVideo-13B architecture, 33 input channels) from "
        "models/diffusion_models. Accepts .safetensors and weights-only .pth in official, ComfyUI or diffusers layout."
    )
    CATEGORY = glue.CATEGORY
    RETURN_TYPES = ("MAGIC141_MODEL",)
    OUTPUT_TOOLTIPS = ("The transformer, managed by ComfyUI's memory management.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": (glue.filenames("diffusion_models"), {
                    "tooltip": "Transformer checkpoint in models/diffusion_models."}),
                "weight_dtype": (list(DTYPES), {
                    "default": "bf16", "tooltip": "Storage dtype of the weights. bf16 is the official one."}),
            },
            "optional": {
                "apply_text_guidance": ("BOOLEAN", {
                    "default": False, "advanced": True,
                    "tooltip": "Feed the guidance scale through Magic141's text_guidance_in. The official code never "
                               "does; enable only for a checkpoint trained to use it."}),
            },
        }

    def load(self, model_name, weight_dtype, apply_text_guidance=False):
        model = load_dit(glue.model_file("diffusion_models", model_name), dtype=DTYPES[weight_dtype],
                         apply_text_guidance=apply_text_guidance)
        return (glue.managed(model),)


NODE_CLASS_MAPPINGS = {"Magic141ModelLoader": Magic141ModelLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"Magic141ModelLoader": "Magic141 Model Loader"}
