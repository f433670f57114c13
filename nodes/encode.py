"""Conditioning nodes: prompt + prior image -> conditioning (in the prompt template of the model's family); start
image + VAE -> reference latent, and the native outputs the family's native nodes would make."""

from __future__ import annotations

import dataclasses

from ..magic141_core.dit.family import FAMILIES
from ..magic141_core.sampling.sampler import latent_shape
from ..magic141_core.text import NEGATIVE_PROMPT
from ..magic141_core.text.prompts import DEFAULT_INTERLEAVE, TEMPLATES
from ..magic141_core.vae import scale_latent
from ..magic141_core.video.start_image import rgb
from . import inputs
from .common import CATEGORY, FIT_INPUTS, VIDEO_SIZE_INPUTS, fit_start_image
from .host import memory, native_model, progress
from .host.schema import CONDITIONING, ENCODERS, advanced, choice, io
from .native import native_latent, to_native

TEMPLATE_CHOICES = {"auto": None, "Magic141": "magic141", "HunyuanVideo-I2V": "hunyuan_i2v",
                    "HunyuanVideo text only": "hunyuan_text"}


def prompt_template(template: str, interleave: int, model, node: str = "Magic141 Encode"):
    """(template key, image interleave, family or None, what to show): `template` "auto" follows the connected
    `model`'s family (Magic141's without a model, as before families existed); interleave 0 is the family's (v1 2,
    v2 4; else 2, ComfyUI's default). ValueError for a model that is no image-to-video family."""
    family = None
    if model is not None:
        family = native_model.family_of(model)
        if family is None or not family.is_i2v:
            what = family.describe() if family else native_model.describe_model(model)
            raise ValueError(f"{node}: the model is {what}, which has no image-to-video path; connect an image-to-"
                             "video model (or none, and choose the template)")
    key = TEMPLATE_CHOICES[template] or (family.template if family else "magic141")
    interleave = interleave or (family.image_interleave if family and family.image_interleave else DEFAULT_INTERLEAVE)
    shown = TEMPLATES[key] + (f", image interleave {interleave}" if key == "hunyuan_i2v" else "")
    if template == "auto" and family is not None:
        shown += f" (for {family.title})"
    return key, interleave, family, shown


class Magic141Encode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Magic141Encode",
            display_name="Magic141 Encode",
            category=CATEGORY,
            description="Encodes the prompt (LLaVA's Llama-3 and CLIP-L) and the prior image (LLaVA's vision branch) "
                        "in the prompt template of the model's family: Magic141's [146 image tokens ; text], "
                        "HunyuanVideo-I2V's (one LLaVA pass, image tokens interleaved 2 for v1, 4 for v2), or text "
                        "only (SkyReels-V1). Connect the model and the template follows it; the node shows which it "
                        "used. The negative prompt is only used when the sampler runs classifier-free guidance.",
            inputs=[
                ENCODERS.Input("encoders", tooltip="From Magic141 Encoder Loader."),
                io.String.Input("prompt", multiline=True, dynamic_prompts=True,
                                tooltip="What happens in the clip (motion, camera). Up to 256 tokens."),
                io.Image.Input("image", tooltip="The prior image, as loaded (the vision model sees it uncropped)."),
                advanced(io.String.Input(
                    "negative_prompt", multiline=True, default=NEGATIVE_PROMPT, optional=True,
                    tooltip="Used only for classifier-free guidance (guidance > 1 without a guidance embedder, or "
                            "cfg > 1).")),
                io.Model.Input("model", optional=True, tooltip=(
                    "The model the conditioning is for (Magic141 Model Loader or a native HunyuanVideo image-to-"
                    "video model): the template follows its family, and Image To Video makes its native outputs "
                    "for it.")),
                io.Combo.Input("template", options=list(TEMPLATE_CHOICES), default="auto", optional=True, tooltip=(
                    "auto: the connected model's family's (without a model: Magic141's). HunyuanVideo-I2V: its own "
                    "template (v1 and v2). Text only: SkyReels-V1.")),
                advanced(io.Int.Input(
                    "image_interleave", default=0, min=0, max=64, optional=True,
                    tooltip="HunyuanVideo-I2V template: keep every n-th image token (more = less image, more "
                            "text). 0: the family's (v1 2, v2 4; without a model 2).")),
            ],
            outputs=[
                CONDITIONING.Output(display_name="conditioning", tooltip="Text and image tokens; add the start "
                                    "image's latent with Magic141 Image To Video."),
                io.Conditioning.Output(display_name="positive", tooltip="The prompt as native CONDITIONING (padding "
                                       "cropped, pooled_output), e.g. for HunyuanImageToVideo v1 and KSampler."),
                io.Conditioning.Output(display_name="negative", tooltip="The negative prompt as native CONDITIONING."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, encoders, prompt, image, negative_prompt=NEGATIVE_PROMPT, model=None, template="auto",
                image_interleave=0) -> io.NodeOutput:
        if not prompt.strip():
            raise ValueError("the prompt is empty; describe the motion you want (e.g. 'the camera slowly pans left')")
        image = rgb(inputs.image_batch(image, "Magic141 Encode", "image"))
        template = choice(template, TEMPLATE_CHOICES, "template", "Magic141 Encode")
        key, interleave, family, shown = prompt_template(template, image_interleave, model)
        progress.show_text(cls.hidden.unique_id, f"Magic141 Encode: {shown}")
        conditioning = encoders.encode(prompt, image, negative=True, negative_prompt=negative_prompt,
                                       template=key, image_interleave=interleave)
        conditioning = dataclasses.replace(conditioning, family=family.key if family else None)
        return io.NodeOutput(conditioning, to_native(conditioning.positive), to_native(conditioning.negative))


class Magic141ImageToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Magic141ImageToVideo",
            display_name="Magic141 Image To Video",
            category=CATEGORY,
            description="Prepares an image-to-video clip: fits the start image to the video size (auto: 540p on a "
                        "GPU, draft on a CPU; draft: 1/6 size, at most 17 frames; an official 540p/720p bucket "
                        "nearest its aspect ratio; or a custom size; centre crop, or pad with black bars; the size "
                        "chosen is shown on the node), encodes it with the VAE as the reference latent of frame 0, "
                        "and makes the empty video latent for the sampler. Its conditioning serves every family; its "
                        "native positive / negative / latent are what HunyuanImageToVideo makes for the family "
                        "Magic141 Encode was told (v1 concat by default, v2 replace for HunyuanVideo-I2V v2). One "
                        "start image: a batch of several is refused (pick one with Image From Batch).",
            inputs=[
                CONDITIONING.Input("conditioning", tooltip="From Magic141 Encode."),
                io.Vae.Input("vae", tooltip="The HunyuanVideo VAE (native Load VAE, models/vae)."),
                io.Image.Input("start_image", tooltip="Frame 0 of the video."),
                *VIDEO_SIZE_INPUTS,
                io.Int.Input("length", default=81, min=1, max=1025, step=4,
                             tooltip="Frames, 4k+1 (81 = the official 3.4 s at 24 fps; draft makes at most 17)."),
                *FIT_INPUTS,
            ],
            outputs=[
                CONDITIONING.Output(display_name="conditioning",
                                    tooltip="The conditioning with the start image's latent."),
                io.Latent.Output(display_name="latent", tooltip="Empty video latent (sets size and length)."),
                io.Image.Output(display_name="start_image", tooltip="The start image as fitted to the video size."),
                io.Conditioning.Output(display_name="positive", tooltip=(
                    "Native positive CONDITIONING with the start image set as HunyuanImageToVideo sets it for the "
                    "family (v1: concat_latent_image, concat_mask; v2: guiding_frame_index, the image in the "
                    "latent): for native KSampler.")),
                io.Conditioning.Output(display_name="negative", tooltip="Native negative CONDITIONING (the negative "
                                                                        "prompt, with the start image)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, conditioning, vae, start_image, resolution, width, height, length,
                fit="crop") -> io.NodeOutput:
        # refuses a batch of several images; the size policy (auto / draft / buckets / custom) is the core's
        fitted, size = fit_start_image(start_image, resolution, width, height, length, fit)
        shape = latent_shape(size.frames, fitted.shape[1], fitted.shape[2])
        progress.show_text(cls.hidden.unique_id, f"Magic141 Image To Video: {size.describe()}")
        reference = scale_latent(vae.encode(fitted)[:, :, :1].float())
        if tuple(reference.shape[1:]) != (16, 1, *shape[3:]):
            raise ValueError(f"the VAE gave a latent of shape {tuple(reference.shape)}; Magic141 needs the "
                             "HunyuanVideo VAE (16 channels, 8x spatial): choose hunyuan_video_vae in Load VAE")
        conditioning = dataclasses.replace(conditioning, reference=reference)
        family = FAMILIES.get(conditioning.family)
        image_condition = family.image_condition if family else "concat_mask"
        latent = native_latent(shape, reference, image_condition, memory.intermediate_device())
        native = [to_native(text, reference, shape[2], image_condition) if text is not None else None
                  for text in (conditioning.positive, conditioning.negative)]
        return io.NodeOutput(conditioning, latent, fitted, *native)


NODES = [Magic141Encode, Magic141ImageToVideo]
