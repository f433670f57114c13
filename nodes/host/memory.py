"""ComfyUI's model management for what the pack loads: a patcher per model, so models load to the compute device on
use, offload on demand, and appear among ComfyUI's loaded models."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.model_patcher
import torch


def compute_device():
    return mm.get_torch_device()


def text_encoder_device():
    return mm.text_encoder_device()


def intermediate_device():
    return mm.intermediate_device()


class WholeModelPatcher(comfy.model_patcher.ModelPatcher):
    """A patcher that always loads its model whole, never partially: for a model ComfyUI cannot stream layer by
    layer (quanto int8 layers are not ComfyUI ops: a partial load would leave some on the CPU) or one that streams
    itself (block swap)."""

    def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
        return super().load(device_to, lowvram_model_memory, force_patch_weights, full_load=True)


def streams_itself(module) -> bool:
    """True for a DiT that ComfyUI must load whole: block swap installed, or quanto (int8) layers."""
    return getattr(module, "block_swap", None) is not None or any(
        getattr(m, "weight_qtype", None) is not None for m in module.modules())


def managed(module, size: int | None = None, text_encoder: bool = False, whole: bool = False,
            dynamic: bool = True) -> comfy.model_patcher.ModelPatcher:
    """Hand a model to ComfyUI's memory management: it loads to the compute device on use and offloads on demand.

    The patcher is the kind native loaders use: `CoreModelPatcher` where the host has it (ComfyUI swaps in its
    Dynamic VRAM patcher there on NVIDIA), else `ModelPatcher`; `whole`: a `WholeModelPatcher` (see there). Text
    encoders take ComfyUI's text-encoder devices (which --lowvram and friends may point at the CPU), everything else
    the diffusion model's. `size`: bytes on the device (default: ComfyUI's count of the state dict). `dynamic`
    False: never the Dynamic VRAM patcher (what ComfyUI asks of a loader's `cached_patcher_init`)."""
    size = size or mm.module_size(module)
    if text_encoder:
        load_device, offload_device = mm.text_encoder_device(), mm.text_encoder_offload_device()
    else:
        load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    patcher = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)  # read at call time
    if whole:
        patcher = WholeModelPatcher
    elif not dynamic:
        patcher = comfy.model_patcher.ModelPatcher
    return patcher(module, load_device=load_device, offload_device=offload_device, size=size)


def load(patcher: comfy.model_patcher.ModelPatcher):
    """Make room (offloading other models if needed) and move the whole model to the compute device."""
    mm.load_models_gpu([patcher], force_full_load=True)
    return patcher.model


class _Holder(torch.nn.Module):
    """A plain module around a transformers model: patchers set attributes (`device`, ...) that transformers' models
    keep read-only."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner


class ManagedPlacement:
    """The `place(models)` hook of models the core loads lazily (Magic141's encoders, the retrieval CLIP): each model
    gets one patcher, ComfyUI moves them to the compute device before use (offloading others to make room), they are
    then listed among ComfyUI's loaded models, and "Unload models" / `free_memory` offloads them like native ones."""

    def __init__(self, text_encoder: bool = True):
        self.text_encoder = text_encoder
        self.patchers: list[comfy.model_patcher.ModelPatcher] = []

    def __call__(self, models) -> None:
        if [p.model.inner for p in self.patchers] != list(models):  # first use, or the models were reloaded
            self.patchers = [managed(_Holder(m), text_encoder=self.text_encoder) for m in models]
        mm.load_models_gpu(self.patchers, force_full_load=True)
