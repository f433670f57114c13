"""Native MODEL interop (docs/design.md, "Native MODEL and CONDITIONING"): our DiT sits behind ComfyUI's own
HunyuanVideo model class of its family (HunyuanVideoI2V 33 channels, HunyuanVideoSkyreelsI2V 32, HunyuanVideo 16),
so native KSampler, LoRA loaders, ModelSamplingSD3 and ModelSave see a HunyuanVideo MODEL while every forward still
runs the one core DiT (with its int8 layers and block swap). A native HunyuanVideo MODEL (ComfyUI's own DiT, e.g.
from Load Diffusion Model) drives our sampler through `NativeHunyuanDiT`."""

from __future__ import annotations

import logging

import comfy.model_base
import comfy.patcher_extension
import comfy.supported_models
import torch

from ...magic141_core.dit.family import HUNYUAN_I2V_V1, HUNYUAN_I2V_V2, SKYREELS_V1
from ...magic141_core.dit.model import image_to_video_input
from ...magic141_core.runtime.finite import DIT_ADVICE, NonFiniteOutput, lora_advice
from ...magic141_core.sampling.sampler import image_condition_of
from .memory import load
from .patches import WithOptions, check_own_sampling, per_forward_options

log = logging.getLogger("magic141")
MAGIC141_SHIFT = 5.0  # the official sampler's shift: native "simple" sigmas at 4 steps = ours
NATIVE_MODES = {"concat": "v1 (concat)", "token_replace": "v2 (replace)"}  # HunyuanImageToVideo's guidance_type


class _CoreDiTModel:
    """What our DiT needs from ComfyUI's model class: the forward call with our argument names, inside ComfyUI's
    diffusion-model wrappers, with the MODEL's transformer options and ControlNet residuals handed to the DiT, which
    applies them where ComfyUI's own HunyuanVideo does (`magic141_core/dit/hooks.py`)."""

    def get_dtype(self):
        return self.diffusion_model.img_in.proj.weight.dtype

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        sigma = t
        xc = self.model_sampling.calculate_input(sigma, x)
        if c_concat is not None:
            xc = torch.cat([xc, c_concat.to(xc)], dim=1)
        timestep = self.model_sampling.timestep(t).float()
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones(c_crossattn.shape[:2], dtype=torch.long, device=c_crossattn.device)
        dit = self.diffusion_model  # TorchCompileModel's compiled module while its wrapper runs
        guidance = kwargs.get("guidance") if dit.guidance_embedder is not None else None
        if guidance is not None:
            guidance = guidance.float().reshape(-1).expand(x.shape[0]) if guidance.numel() == 1 else guidance
        reference = None
        if kwargs.get("guiding_frame_index") is not None:  # HunyuanImageToVideo v2: frame 0 is the start image
            check_family(dit, "token_replace", "KSampler")
            reference = xc[:, :, :1]  # the clean start latent ComfyUI's noise mask keeps in frame 0
        elif dit.config.image_condition == "token_replace":
            raise ValueError(
                f"KSampler: the model is {dit.family.describe()}; its conditioning must carry the start image as "
                "HunyuanImageToVideo 'v2 (replace)' sets it (and its latent into KSampler), or come from Magic141 "
                "Image To Video with the model connected to Magic141 Encode")
        options = transformer_options

        def forward(x, timestep, context, y, attention_mask, reference, guidance, control, transformer_options):
            return dit(x, timestep, context, attention_mask, y, reference=reference, guidance=guidance,
                       control=control, transformer_options=transformer_options)

        # as ComfyUI's HunyuanVideo.forward: DIFFUSION_MODEL wrappers (EasyCache, ...) around the forward; their
        # executor's class_obj is the core DiT, the last argument the transformer options
        wrappers = comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                            options)
        v = comfy.patcher_extension.WrapperExecutor.new_class_executor(forward, getattr(dit, "_orig_mod", dit),
                                                                       wrappers).execute(
            xc, timestep, c_crossattn, kwargs["y"], mask.to(xc.device), reference, guidance, control, options)
        return self.model_sampling.calculate_denoised(sigma, v.float(), x)


class Magic141I2VModel(_CoreDiTModel, comfy.model_base.HunyuanVideoI2V):
    """Our concat + mask DiT (Magic141, HunyuanVideo-I2V v1) as ComfyUI's HunyuanVideoI2V."""


class Magic141SkyreelsModel(_CoreDiTModel, comfy.model_base.HunyuanVideoSkyreelsI2V):
    """Our concat DiT (SkyReels-V1, 32 channels) as ComfyUI's HunyuanVideoSkyreelsI2V."""


class Magic141T2VModel(_CoreDiTModel, comfy.model_base.HunyuanVideo):
    """Our 16-channel DiT (HunyuanVideo-I2V v2 token replace, or text-to-video) as ComfyUI's HunyuanVideo, which
    passes HunyuanImageToVideo v2's `guiding_frame_index` through."""


_CLASSES = {  # image_condition -> (our model class, ComfyUI's supported-model config class)
    "concat_mask": (Magic141I2VModel, comfy.supported_models.HunyuanVideoI2V),
    "concat": (Magic141SkyreelsModel, comfy.supported_models.HunyuanVideoSkyreelsI2V),
    "token_replace": (Magic141T2VModel, comfy.supported_models.HunyuanVideo),
    "none": (Magic141T2VModel, comfy.supported_models.HunyuanVideo),
}


def native_model(dit, weight_dtype: torch.dtype | None = None,
                 compute_dtype: torch.dtype | None = None) -> comfy.model_base.BaseModel:
    """Put a core `Magic141DiT` behind ComfyUI's HunyuanVideo model class of its family (it becomes
    `diffusion_model`, so the state-dict keys LoRA loaders see are `diffusion_model.<official key>`). Sampling shift
    5 (Magic141's). `weight_dtype` / `compute_dtype`: the storage and compute dtypes, which ComfyUI's memory
    estimates and casting read (`manual_cast_dtype` when they differ)."""
    model_class, config_class = _CLASSES[dit.config.image_condition]
    unet_config = {"image_model": "hunyuan_video", "in_channels": dit.config.in_channels,
                   "disable_unet_model_creation": True}
    config = config_class(unet_config)
    config.sampling_settings["shift"] = MAGIC141_SHIFT
    if weight_dtype is not None:
        config.set_inference_dtype(weight_dtype, None if compute_dtype in (None, weight_dtype) else compute_dtype)
    model = model_class(config, device=dit.img_in.proj.weight.device)
    model.diffusion_model = dit
    return model


def core_dit(patcher):
    """The core DiT inside a MODEL from Magic141 Model Loader, or None for any other MODEL."""
    model = getattr(patcher, "model", None)
    return model.diffusion_model if isinstance(model, _CoreDiTModel) else None


def describe_model(patcher) -> str:
    """What a MODEL is, for messages: its ComfyUI class and input channels."""
    model = getattr(patcher, "model", None)
    if model is None:
        return f"a {type(patcher).__name__} (not a ComfyUI MODEL)"
    channels = getattr(getattr(model, "diffusion_model", None), "in_channels", None)
    return f"a {type(model).__name__} model" + (f" with {channels} input channels" if channels else "")


class NativeHunyuanDiT:
    """A native HunyuanVideo image-to-video MODEL (ComfyUI's own DiT: HunyuanVideoI2V, HunyuanVideoSkyreelsI2V, or
    HunyuanVideo driven as HunyuanVideo-I2V v2) as the core sampler's velocity model: the same call as `Magic141DiT`
    (x, t, text, mask, pooled, reference, guidance), its input built as `dit.model.image_to_video_input` builds it.

    ComfyUI's token refiner averages over every text token it is given, padding included, so each group of samples
    with the same number of valid tokens runs with its padding cropped (exact; one forward when lengths agree).
    Token replace runs ComfyUI's own `guiding_frame_index` code, which modulates the first latent frame only and
    differs from the official one (docs/design.md, "The three image-to-video families"); its velocity on the
    reference frames is discarded, as ours is."""

    def __init__(self, patcher, image_condition: str, family):
        self.base = patcher.model
        self.dit = self.base.diffusion_model
        self.image_condition, self.family = image_condition, family
        self.guidance_embedder = getattr(self.dit, "guidance_in", None) if self.dit.params.guidance_embed else None
        self.text_dim, self.pooled_dim = self.dit.params.context_in_dim, self.dit.params.vec_in_dim
        self.options = patcher.model_options.get("transformer_options", {})
        if image_condition == "token_replace":
            log.warning("Magic141: ComfyUI's own HunyuanVideo DiT computes HunyuanVideo-I2V v2's token replace unlike "
                        "the official code (it adds the embedded guidance to the start frame's modulation; 0.30.0 "
                        "also modulates text tokens in its single-stream blocks). For the reference result, load the "
                        "file with Magic141 Model Loader (family HunyuanVideo-I2V v2).")

    def parameters(self):
        return self.dit.parameters()

    def __call__(self, x, t, txt, txt_mask, pooled, reference=None, guidance=None):
        xc = image_to_video_input(x, reference, self.image_condition)
        replaced = reference.shape[2] if self.image_condition == "token_replace" else 0
        dtype = self.base.manual_cast_dtype or self.base.get_dtype()
        lengths = txt_mask.sum(dim=1)
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        for n in lengths.unique().tolist():
            rows = (lengths == n).nonzero().flatten()
            if not bool(txt_mask[rows, :n].all()):
                raise ValueError("the text mask must be right-padded (ones, then zeros)")
            g = None if guidance is None or self.guidance_embedder is None else guidance[rows].to(dtype)
            frame = torch.zeros(len(rows), device=x.device) if replaced else None
            options = {**self.options, "sigmas": t[rows].float() / 1000.0}
            v = self.dit(xc[rows].to(dtype), t[rows].float(), txt[rows, :n].to(dtype), y=pooled[rows].to(dtype),
                         guidance=g, attention_mask=None, guiding_frame_index=frame, transformer_options=options)
            out[rows] = v.float()
        out[:, :, :replaced] = 0  # the reference frames are held, not denoised
        return out


def native_family(model, image_condition: str | None):
    """(image_condition, family) of ComfyUI's own HunyuanVideo model `model` (its class says concat + mask or
    concat; a 16-channel HunyuanVideo is HunyuanVideo-I2V v2 when the conditioning is v2's), or None."""
    channels = getattr(getattr(model, "diffusion_model", None), "in_channels", None)
    if getattr(getattr(model, "latent_format", None), "latent_channels", None) != 16:
        return None
    if isinstance(model, comfy.model_base.HunyuanVideoI2V) and channels == 33:
        return "concat_mask", HUNYUAN_I2V_V1
    if isinstance(model, comfy.model_base.HunyuanVideoSkyreelsI2V) and channels == 32:
        return "concat", SKYREELS_V1
    if type(model) is comfy.model_base.HunyuanVideo and channels == 16 and image_condition == "token_replace":
        return "token_replace", HUNYUAN_I2V_V2
    return None


def family_of(patcher):
    """The family of any MODEL our nodes take (`dit.family.Family`), or None when it is none of them. ComfyUI's own
    16-channel HunyuanVideo is taken as HunyuanVideo-I2V v2: connected to an image-to-video node, that is what it
    must be."""
    dit = core_dit(patcher)
    if dit is not None:
        return dit.family
    found = native_family(getattr(patcher, "model", None), "token_replace")
    return None if found is None else found[1]


def check_family(model, image_condition: str | None, node: str) -> None:
    """Refuse conditioning prepared for another family than `model`'s (a core DiT or `NativeHunyuanDiT`), naming
    both and the fix. image_condition: what the conditioning's start image was made for (native "concat" = v1,
    "token_replace" = v2; None: Magic141's own, which serves every image-to-video family)."""
    family, condition = model.family, image_condition_of(model)
    if not family.is_i2v:
        raise ValueError(
            f"{node} got {family.describe()}: it has no image path. If the file is HunyuanVideo-I2V v2 (token "
            "replace), choose the family 'HunyuanVideo-I2V v2' in Magic141 Model Loader")
    if image_condition is None:
        return
    if (image_condition == "token_replace") != (condition == "token_replace"):
        wanted = "v2 (replace)" if condition == "token_replace" else "v1 (concat)"
        raise ValueError(
            f"{node}: the conditioning comes from HunyuanImageToVideo '{NATIVE_MODES[image_condition]}' but the model "
            f"is {family.describe()}; set HunyuanImageToVideo's guidance_type to '{wanted}' (or use Magic141 Image "
            "To Video, whose conditioning serves every family)")


def velocity_model(patcher, node: str, image_condition: str | None = None):
    """Load a MODEL for our sampler and return what `sample_latent` drives: our core DiT (Magic141 Model Loader) or
    a `NativeHunyuanDiT` (ComfyUI's own HunyuanVideo image-to-video model of any family), with the MODEL's
    per-forward transformer options (`patches.py`). image_condition: what the conditioning was prepared for (see
    `check_family`). A model of another family, or a text-to-video one, gets a ValueError naming what it is and what
    is needed; so does a MODEL carrying patches that only ComfyUI's own sampling runs."""
    check_own_sampling(patcher, node)
    dit = core_dit(patcher)
    model = getattr(patcher, "model", None)
    if dit is None:
        found = native_family(model, image_condition)
        if found is None:
            sixteen = isinstance(model, comfy.model_base.HunyuanVideo) and getattr(
                getattr(model, "diffusion_model", None), "in_channels", None) == 16
            kind = ("a HunyuanVideo model with 16 input channels (text-to-video, or HunyuanVideo-I2V v2, which "
                    "ComfyUI cannot tell apart)" if sixteen else describe_model(patcher))
            raise ValueError(
                f"{node} got {kind}; it needs an image-to-video transformer: Magic141 Model Loader (any family), or "
                "through Load Diffusion Model a HunyuanVideo-I2V v1 (concat, 33 channels) or SkyReels-V1 (32 "
                "channels) checkpoint, or HunyuanVideo-I2V v2 (16 channels) with HunyuanImageToVideo 'v2 (replace)' "
                "conditioning")
        dit = NativeHunyuanDiT(patcher, *found)
    elif per_forward_options(patcher):
        dit = WithOptions(dit, per_forward_options(patcher))
    check_family(dit, image_condition, node)
    load(patcher)
    return dit


def blame_patches(error: NonFiniteOutput, patcher) -> NonFiniteOutput:
    """Non-finite transformer output from a MODEL carrying weight patches (native LoRA loaders add them): the same
    finding, with the patches named as the likeliest cause (the dtype advice alone would mislead). Other errors,
    and unpatched models, come back unchanged."""
    patches = sorted(getattr(patcher, "patches", None) or {})
    if error.advice != DIT_ADVICE or not patches:
        return error
    count = f"{len(patches)} weight{'s' if len(patches) > 1 else ''}"
    return error.blamed_on(lora_advice(f"LoRA or other weight patches on {count} (e.g. {patches[0]}) from the LoRA "
                                       "loader(s) wired into its MODEL"))
