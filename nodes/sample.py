"""The sampler node: Magic141's few-step flow-matching sampler on a native LATENT."""

from __future__ import annotations

from ..magic141_core.runtime.finite import NonFiniteOutput
from ..magic141_core.sampling.sampler import sample_latent
from ..magic141_core.vae import unscale_latent
from . import inputs
from .common import CATEGORY, CFG_INPUTS, SAMPLING_INPUTS
from .host import memory, native_model, progress
from .host.schema import CONDITIONING, io
from .native import V2_LATENT, check_template, check_widths, magic141_conditioning, token_replace

NODE = "Magic141 Sampler"


class Magic141Sampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Magic141Sampler",
            display_name="Magic141 Sampler",
            category=CATEGORY,
            description="Denoises one clip in Euler steps, for every image-to-video family (Magic141, HunyuanVideo-"
                        "I2V v1 and v2, SkyReels-V1). Magic141 is distilled to 4 steps with guidance built in, so at "
                        "guidance 1.0 each step is one transformer forward; the HunyuanVideo-I2V families are not "
                        "step-distilled (Magic141 Model Loader shows what a file needs).",
            inputs=[
                io.Model.Input("model", tooltip="From Magic141 Model Loader (any family), or a native HunyuanVideo "
                                                "image-to-video model from Load Diffusion Model (LoRAs applied)."),
                io.MultiType.Input("conditioning", types=[CONDITIONING, io.Conditioning], tooltip=(
                    "From Magic141 Image To Video (prompt, image tokens and start-image latent), or a native "
                    "positive CONDITIONING with the start image (HunyuanImageToVideo v1 or v2).")),
                io.Latent.Input("latent", tooltip="The video latent from Magic141 Image To Video (sets the size), or "
                                                  "HunyuanImageToVideo's (v2 keeps the start image in it)."),
                *SAMPLING_INPUTS,
                io.Conditioning.Input("negative", optional=True, tooltip=(
                    "A native negative CONDITIONING; used only for classifier-free guidance (guidance > 1 without "
                    "a guidance embedder, or cfg > 1).")),
                *CFG_INPUTS,
            ],
            outputs=[io.Latent.Output(tooltip="The denoised video latent (native LATENT; decode it with VAE Decode "
                                              "(Tiled)).")],
        )

    @classmethod
    def execute(cls, model, conditioning, latent, steps, shift, guidance, seed, negative=None,
                cfg=1.0) -> io.NodeOutput:
        shape = tuple(inputs.video_latent(latent, NODE, "use Magic141 Image To Video's latent (or "
                                          "EmptyHunyuanLatentVideo)", noise_mask_ok=True).shape)
        conditioning = magic141_conditioning(conditioning, negative, latent)
        if latent.get("noise_mask") is not None and not token_replace(conditioning):
            inputs.refuse_noise_mask(NODE)  # only a v2 latent's mask (its clean start frames) is read
        dit = native_model.velocity_model(model, NODE, conditioning.image_condition)
        if conditioning.image_condition == "token_replace" and conditioning.reference is None:
            raise ValueError(f"{NODE}: the conditioning {V2_LATENT}")
        check_widths(dit, conditioning, NODE)
        check_template(dit, conditioning, NODE)
        try:
            out = sample_latent(dit, conditioning, shape, steps=steps, shift=shift, guidance=guidance, seed=seed,
                                callback=progress.step_callback(steps), cfg=cfg)
        except NonFiniteOutput as e:  # a LoRA loader wired into the MODEL is the likeliest cause: named first
            raise native_model.blame_patches(e, model) from None
        samples = unscale_latent(out).to(memory.intermediate_device())
        return io.NodeOutput({"samples": samples})


NODES = [Magic141Sampler]
