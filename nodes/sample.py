"""The sampler node: Magic141's few-step flow-matching sampler on a native LATENT."""

from __future__ import annotations

from ..magic141_core.runtime.finite import NonFiniteOutput
from ..magic141_core.sampling.sampler import sample_latent
from ..magic141_core.vae import unscale_latent
from . import inputs
from .common import CATEGORY, SAMPLING
from .host import memory, native_model, progress
from .native import check_widths, magic141_conditioning

NODE = "Magic141 Sampler"


class Magic141Sampler:
    DESCRIPTION = (
        "Denoises one clip in a few Euler steps. Magic141 is distilled to 4 steps with guidance built in, so at "
        "guidance 1.0 each step is one transformer forward."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised video latent (native LATENT; decode it with VAE Decode (Tiled)).",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "From Magic141 Model Loader, or a native HunyuanVideo-I2V v1 (concat, "
                                            "33-channel) model from Load Diffusion Model (LoRAs applied)."}),
                "conditioning": ("MAGIC141_CONDITIONING,CONDITIONING", {
                    "tooltip": "From Magic141 Image To Video (prompt, image tokens and start-image latent), or a "
                               "native positive CONDITIONING with the start image (HunyuanImageToVideo v1)."}),
                "latent": ("LATENT", {"tooltip": "The empty video latent from Magic141 Image To Video; sets the size."}),
                **SAMPLING,
            },
            "optional": {
                "negative": ("CONDITIONING", {"tooltip": "A native negative CONDITIONING; used only for classifier-"
                                                         "free guidance (guidance > 1 without a guidance embedder)."}),
            },
        }

    def sample(self, model, conditioning, latent, steps, shift, guidance, seed, negative=None):
        shape = tuple(inputs.video_latent(latent, NODE, "use Magic141 Image To Video's latent (or "
                                          "EmptyHunyuanLatentVideo)").shape)
        conditioning = magic141_conditioning(conditioning, negative)
        dit = native_model.velocity_model(model, NODE)
        check_widths(dit, conditioning, NODE)
        try:
            out = sample_latent(dit, conditioning, shape, steps=steps, shift=shift, guidance=guidance, seed=seed,
                                callback=progress.step_callback(steps))
        except NonFiniteOutput as e:  # a LoRA loader wired into the MODEL is the likeliest cause: named first
            raise native_model.blame_patches(e, model) from None
        samples = unscale_latent(out).to(memory.intermediate_device())
        return ({"samples": samples},)


NODE_CLASS_MAPPINGS = {"Magic141Sampler": Magic141Sampler}
NODE_DISPLAY_NAME_MAPPINGS = {"Magic141Sampler": "Magic141 Sampler"}
