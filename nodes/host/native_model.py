"""Native MODEL interop (docs/design.md, "Native MODEL and CONDITIONING"): our DiT sits behind ComfyUI's own
HunyuanVideo model class, so native KSampler, LoRA loaders, ModelSamplingSD3 and ModelSave see a HunyuanVideo-I2V
MODEL while every forward still runs the one core DiT (with its int8 layers and block swap). A native
HunyuanVideo-I2V MODEL (ComfyUI's own DiT, e.g. from Load Diffusion Model) drives our sampler through
`NativeHunyuanDiT`."""

from __future__ import annotations

import comfy.model_base
import comfy.supported_models
import torch

from ...magic141_core.dit.model import image_to_video_input
from ...magic141_core.runtime.finite import DIT_ADVICE, NonFiniteOutput, lora_advice
from .memory import load

MAGIC141_SHIFT = 5.0  # the official sampler's shift: native "simple" sigmas at 4 steps = ours


class _CoreDiTModel:
    """What our DiT needs from ComfyUI's model class: the forward call with our argument names."""

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
        dit = self.diffusion_model
        guidance = kwargs.get("guidance") if dit.guidance_embedder is not None else None
        if guidance is not None:
            guidance = guidance.float().reshape(-1).expand(x.shape[0]) if guidance.numel() == 1 else guidance
        v = dit(xc, timestep, c_crossattn, mask.to(xc.device), kwargs["y"], guidance=guidance)
        return self.model_sampling.calculate_denoised(sigma, v.float(), x)


class Magic141I2VModel(_CoreDiTModel, comfy.model_base.HunyuanVideoI2V):
    """Our image-to-video DiT as ComfyUI's HunyuanVideoI2V (concat of [reference ; first-frame mask])."""


class Magic141T2VModel(_CoreDiTModel, comfy.model_base.HunyuanVideo):
    """Our DiT loaded from a 16-channel (text-to-video) HunyuanVideo checkpoint."""


def native_model(dit) -> comfy.model_base.BaseModel:
    """Put a core `Magic141DiT` behind ComfyUI's HunyuanVideo model class (it becomes `diffusion_model`, so the
    state-dict keys LoRA loaders see are `diffusion_model.<official key>`). Sampling shift 5 (Magic141's)."""
    i2v = dit.config.is_i2v
    config_class = comfy.supported_models.HunyuanVideoI2V if i2v else comfy.supported_models.HunyuanVideo
    unet_config = {"image_model": "hunyuan_video", "in_channels": dit.config.in_channels,
                   "disable_unet_model_creation": True}
    config = config_class(unet_config)
    config.sampling_settings["shift"] = MAGIC141_SHIFT
    model = (Magic141I2VModel if i2v else Magic141T2VModel)(config, device=dit.img_in.proj.weight.device)
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
    """A native HunyuanVideo-I2V "concat" MODEL (ComfyUI's own DiT) as the core sampler's velocity model: the same
    call as `Magic141DiT` (x, t, text, mask, pooled, reference, guidance).

    ComfyUI's token refiner averages over every text token it is given, padding included, so each group of samples
    with the same number of valid tokens runs with its padding cropped (exact; one forward when lengths agree)."""

    def __init__(self, patcher):
        self.base = patcher.model
        self.dit = self.base.diffusion_model
        self.guidance_embedder = getattr(self.dit, "guidance_in", None)
        self.text_dim, self.pooled_dim = self.dit.params.context_in_dim, self.dit.params.vec_in_dim
        self.options = patcher.model_options.get("transformer_options", {})

    def parameters(self):
        return self.dit.parameters()

    def __call__(self, x, t, txt, txt_mask, pooled, reference=None, guidance=None):
        xc = image_to_video_input(x, reference)
        dtype = self.base.manual_cast_dtype or self.base.get_dtype()
        lengths = txt_mask.sum(dim=1)
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        for n in lengths.unique().tolist():
            rows = (lengths == n).nonzero().flatten()
            if not bool(txt_mask[rows, :n].all()):
                raise ValueError("the text mask must be right-padded (ones, then zeros)")
            g = None if guidance is None or self.guidance_embedder is None else guidance[rows].to(dtype)
            v = self.dit(xc[rows].to(dtype), t[rows].float(), txt[rows, :n].to(dtype), y=pooled[rows].to(dtype),
                         guidance=g, attention_mask=None, transformer_options=self.options)
            out[rows] = v.float()
        return out


def velocity_model(patcher, node: str):
    """Load a MODEL for our sampler and return what `sample_latent` drives: our core DiT (Magic141 Model
    Loader) or a `NativeHunyuanDiT` (a native HunyuanVideo-I2V v1 concat model). Any other model family gets a
    ValueError naming what it is and what is needed."""
    dit = core_dit(patcher)
    model = getattr(patcher, "model", None)
    if dit is None:
        in_channels = getattr(getattr(model, "diffusion_model", None), "in_channels", None)
        native_i2v = (isinstance(model, comfy.model_base.HunyuanVideoI2V) and in_channels == 33
                      and model.latent_format.latent_channels == 16)
        if not native_i2v:
            kind = ("a HunyuanVideo text-to-video model (16 input channels)" if isinstance(
                model, comfy.model_base.HunyuanVideo) and in_channels == 16 else describe_model(patcher))
            raise ValueError(
                f"{node} got {kind}; it needs an image-to-video transformer with 33 input channels: Magic141 Model "
                "Loader, or a HunyuanVideo-I2V v1 (concat) checkpoint through Load Diffusion Model")
    load(patcher)
    return dit if dit is not None else NativeHunyuanDiT(patcher)


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
