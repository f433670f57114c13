"""Loader nodes: the Magic141 transformer and the text/image encoders."""

from __future__ import annotations

import torch

from ..magic141_core.dit.family import AUTO, CHOICES
from ..magic141_core.dit.loading import load_dit
from ..magic141_core.runtime.device import RANGE_SAFE, compute_dtype_for
from ..magic141_core.runtime.offload import install_block_swap
from ..magic141_core.weights import QUANT_METADATA_KEY, read_metadata
from .common import CATEGORY
from .host import comfy_ops, memory, native_model, paths, progress
from .host.schema import ENCODERS, advanced, choice, io

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
INT8_MODES = ["off", "quantize on load", "pre-quantized"]


def weight_dtype_tooltip() -> str:
    """The Model Loader's dtype tooltip, with the compute dtype each choice gets on this machine's device."""
    device = memory.compute_device()
    names = {dtype: name for name, dtype in DTYPES.items()}
    computes = ", ".join(f"{name} weights compute in {names[compute_dtype_for(device, dtype, RANGE_SAFE)]}"
                         for name, dtype in DTYPES.items())
    return ("Storage dtype of the weights (an fp8 file keeps its fp8 linears, cast per layer as they are used; its "
            "other tensors take this dtype). bf16 is the official one. The "
            "transformer never computes in fp16: its activations (~1e5) overflow fp16's 65504 and the video would be "
            "black, so fp16 weights compute in bf16 where the device has it natively (NVIDIA Ampere or newer), else "
            f"in fp32, each weight cast as it is used, as ComfyUI does. On this machine ({device}): {computes}.")


class Magic141ModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Magic141ModelLoader",
            display_name="Magic141 Model Loader",
            category=CATEGORY,
            description="Loads a HunyuanVideo-13B image-to-video transformer from models/diffusion_models: Magic141 "
                        "or HunyuanVideo-I2V v1 (concat, 33 input channels), HunyuanVideo-I2V v2 (token replace, "
                        "16), SkyReels-V1 (concat, 32). The family found, why, and the steps and guidance it needs "
                        "are shown on the node. Accepts .safetensors and weights-only .pth/.pt in official, ComfyUI "
                        "or diffusers layout, bf16/fp16/fp32 or fp8 (plain, ComfyUI scaled fp8, or the official fp8 "
                        ".pt with its _map.pt beside it).",
            inputs=[
                io.Combo.Input("model_name", options=paths.filenames("diffusion_models"),
                               tooltip="Transformer checkpoint in models/diffusion_models."),
                io.Combo.Input("weight_dtype", options=list(DTYPES), default="bf16", tooltip=weight_dtype_tooltip()),
                advanced(io.Boolean.Input("apply_text_guidance", default=False, optional=True, tooltip=(
                    "Feed the guidance scale through Magic141's text_guidance_in. The official code never does; "
                    "enable only for a checkpoint trained to use it."))),
                io.Combo.Input("int8", options=INT8_MODES, default="off", optional=True, tooltip=(
                    "int8 weights (optimum-quanto), about half the memory: quantize a float file while loading, or "
                    "load a file saved by Magic141 Save int8 Checkpoint (recognised by itself even with 'off'). "
                    "Native LoRA loaders cannot patch int8 weights (ComfyUI logs 'lora key not loaded'): use LoRAs "
                    "with int8 off, or the CLI's --lora, which adds them to int8 layers.")),
                advanced(io.Int.Input("block_swap", default=0, min=0, max=60, optional=True, tooltip=(
                    "Keep this many of the last transformer blocks in CPU memory and copy each to the GPU just "
                    "before it runs: less GPU memory, a bit slower. No effect on the CPU."))),
                io.Combo.Input("family", options=CHOICES, default=AUTO, optional=True, tooltip=(
                    "Which weights these are. auto reads the file: what it stores, 33 input channels = "
                    "HunyuanVideo-I2V v1 (or Magic141 when the file says so), 32 = SkyReels-V1, 16 = "
                    "HunyuanVideo-I2V v2 when the file name says image-to-video, else text-to-video (no image "
                    "path). Choose when auto is wrong; the node shows what it found and why.")),
            ],
            outputs=[io.Model.Output(tooltip="The transformer as a native MODEL (ComfyUI's HunyuanVideo-I2V class "
                                             "around Magic141's own transformer): Magic141 Sampler / Long Video, or "
                                             "native KSampler, LoRA loaders, ModelSamplingSD3 (shift 5 is already "
                                             "set).")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model_name, weight_dtype, apply_text_guidance=False, int8="off", block_swap=0,
                family=AUTO) -> io.NodeOutput:
        node = "Magic141 Model Loader"
        weight_dtype, int8 = choice(weight_dtype, DTYPES, "weight_dtype", node), choice(int8, INT8_MODES, "int8", node)
        family = choice(family, CHOICES, "family", node)
        path = paths.model_file("diffusion_models", model_name)
        if int8 == "pre-quantized" and QUANT_METADATA_KEY not in read_metadata(path):
            raise ValueError(f"{model_name} is not a pre-quantized int8 file; choose 'quantize on load' to quantize "
                             "it now, or save one with Magic141 Save int8 Checkpoint")
        patcher = load_native(path, weight_dtype, apply_text_guidance, int8, block_swap, family)
        model = native_model.core_dit(patcher)
        advice = model.family.recommendation()
        progress.show_text(cls.hidden.unique_id, f"{model.family.describe()}: {model.family_reason}. "
                                      f"{advice[0].upper()}{advice[1:]}.")
        return io.NodeOutput(patcher)


def load_native(path, weight_dtype: str, apply_text_guidance=False, int8="off", block_swap=0, family=AUTO,
                disable_dynamic=False):
    """The transformer file `path` as a native MODEL: built from ComfyUI's ops for these dtypes (scaled fp8 layers
    as ComfyUI's own), behind ComfyUI's model class of its family, in a patcher of the kind native loaders give.
    Registered as the patcher's `cached_patcher_init`, so ComfyUI can load a fresh copy (TorchCompileModel's
    non-dynamic clone, multi-GPU) as it does for its own loaders."""
    dtype, device = DTYPES[weight_dtype], memory.compute_device()
    compute = compute_dtype_for(device, dtype, RANGE_SAFE)
    model = load_dit(path, dtype=dtype, apply_text_guidance=apply_text_guidance, int8=int8 == "quantize on load",
                     family=family, operations=comfy_ops.operations(dtype, compute))
    comfy_ops.adopt_fp8_(model, compute)
    swap = install_block_swap(model, block_swap, device)
    patcher = memory.managed(native_model.native_model(model, dtype, compute),
                             swap.resident_bytes(model) if swap else None, whole=memory.streams_itself(model),
                             dynamic=not disable_dynamic)
    patcher.cached_patcher_init = (load_native, (path, weight_dtype, apply_text_guidance, int8, block_swap, family))
    return patcher




ENCODER_DTYPES = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
FOLDER_VISION = "(in the LLaVA folder or int8 file)"


class Magic141EncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        text_encoders = paths.filenames("text_encoders") + paths.model_folders("text_encoders")
        return io.Schema(
            node_id="Magic141EncoderLoader",
            display_name="Magic141 Encoder Loader",
            category=CATEGORY,
            description="Loads Magic141's encoders: the LLaVA-Llama-3 model (its Llama-3 encodes the prompt, its "
                        "vision branch the start image) and CLIP-L. Use the files HunyuanVideo workflows already "
                        "use, or Hugging Face folders. Models load on first use and are managed like native text "
                        "encoders (listed as loaded, offloaded when memory is needed or by Unload models); a "
                        "repeated prompt and image are answered from a cache.",
            inputs=[
                io.Combo.Input("llava", options=text_encoders, tooltip=(
                    "llava_llama3_fp16 / fp8_scaled .safetensors in models/text_encoders, or a "
                    "llava-llama-3-8b-v1_1-transformers folder there.")),
                io.Combo.Input("llava_vision", options=[FOLDER_VISION] + paths.filenames("clip_vision"), tooltip=(
                    "llava_llama3_vision.safetensors in models/clip_vision (not needed for a folder or an int8 "
                    "file).")),
                io.Combo.Input("clip_l", options=text_encoders, tooltip=(
                    "clip_l.safetensors in models/text_encoders, or a clip-vit-large-patch14 folder there.")),
                io.Combo.Input("dtype", options=list(ENCODER_DTYPES), default="auto", tooltip=(
                    "Weight dtype. auto: fp16 on a GPU (the official one), fp32 on a CPU (faster there).")),
                io.Combo.Input("int8", options=INT8_MODES, default="off", optional=True, tooltip=(
                    "off: float weights. quantize on load: the 8B Llama-3 gets int8 weights layer by layer while "
                    "it loads (optimum-quanto), about half its memory. pre-quantized: llava is an int8 file from "
                    "Magic141 Save int8 Checkpoint (it holds the vision tower too; such a file is always int8).")),
            ],
            outputs=[ENCODERS.Output(tooltip="The encoders, for Magic141 Encode.")],
        )

    @classmethod
    def execute(cls, llava, llava_vision, clip_l, dtype, int8="off") -> io.NodeOutput:
        node = "Magic141 Encoder Loader"
        dtype, int8 = choice(dtype, ENCODER_DTYPES, "dtype", node), choice(int8, INT8_MODES, "int8", node)
        from ..magic141_core.text import ClipSource, LlavaSource, Magic141Encoders

        llava_path, clip_path = paths.model_entry("text_encoders", llava), paths.model_entry("text_encoders", clip_l)
        if llava.endswith("/"):
            if int8 == "pre-quantized":
                raise ValueError("int8 'pre-quantized' needs an int8 LLaVA file written by Magic141 Save int8 "
                                 "Checkpoint, not a folder; choose 'quantize on load' for a folder")
            llava_source = LlavaSource(folder=str(llava_path))
        else:
            vision = None if llava_vision == FOLDER_VISION else str(paths.model_file("clip_vision", llava_vision))
            llava_source = LlavaSource(text_encoder=str(llava_path), vision=vision,
                                       tokenizer=str(paths.comfy_tokenizer("llama_tokenizer")))
            self_contained = llava_source.is_self_contained
            if int8 == "pre-quantized" and not self_contained:
                raise ValueError(f"{llava} is not a pre-quantized int8 LLaVA file; choose 'quantize on load', or "
                                 "write one with Magic141 Save int8 Checkpoint")
            if vision is None and not self_contained:
                raise ValueError("a single-file LLaVA text encoder needs its vision tower: choose "
                                 "llava_llama3_vision.safetensors (models/clip_vision) as llava_vision")
        if clip_l.endswith("/"):
            clip_source = ClipSource(folder=str(clip_path))
        else:
            clip_source = ClipSource(file=str(clip_path), tokenizer=str(paths.comfy_tokenizer("sd1_tokenizer")))
        device = memory.text_encoder_device()
        weight_dtype = ENCODER_DTYPES[dtype] or (torch.float32 if device.type == "cpu" else torch.float16)
        encoders = Magic141Encoders(llava_source, clip_source, device=device, dtype=weight_dtype,
                                    cache_dir=paths.temp_dir() / "magic141_embeddings",
                                    int8=int8 == "quantize on load", place=memory.ManagedPlacement())
        return io.NodeOutput(encoders)


NODES = [Magic141ModelLoader, Magic141EncoderLoader]
