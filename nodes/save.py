"""Save nodes: MP4 video into the output folder (atomically, workflow embedded), and int8 checkpoints."""

from __future__ import annotations

import re

import torch

from ..magic141_core.dit.loading import load_dit, save_dit
from ..magic141_core.runtime.finite import VAE_ADVICE, check_finite
from ..magic141_core.video.mp4 import write_mp4
from . import inputs
from .common import CATEGORY
from .host import native_model, paths
from .host.schema import ENCODERS, io


class Magic141SaveMP4(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Magic141SaveMP4",
            display_name="Magic141 Save MP4",
            category=CATEGORY,
            description="Writes the frames as an H.264 MP4 (yuv420p, plays everywhere) to the output folder, shows "
                        "it in the UI and embeds the prompt and workflow so dropping the file onto ComfyUI restores "
                        "the graph. The file appears only when complete. Also passes the frames on as IMAGE, and the "
                        "file as native VIDEO (Save Video, Get Video Components, video nodes).",
            inputs=[
                io.Image.Input("images", tooltip="Video frames [frames, height, width, 3], e.g. from VAE Decode."),
                io.Float.Input("fps", default=24.0, min=1.0, max=120.0, step=1.0,
                               tooltip="Frames per second. Magic141 is trained at 24."),
                io.Int.Input("quality", default=19, min=0, max=51,
                             tooltip="x264 CRF: lower is better and larger; 17-23 is visually good."),
                io.String.Input("filename_prefix", default="Magic141/clip",
                                tooltip="Name (and subfolder) inside the output folder."),
            ],
            outputs=[io.Image.Output(tooltip="The same frames, for native image nodes."),
                     io.Video.Output(tooltip="The MP4 just written, as ComfyUI's VIDEO type (as Load Video gives "
                                             "it).")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, fps, quality, filename_prefix) -> io.NodeOutput:
        prompt, extra_pnginfo = cls.hidden.prompt, cls.hidden.extra_pnginfo
        inputs.image_batch(images, "Magic141 Save MP4", "images")
        metadata = {}
        if paths.metadata_enabled():
            metadata.update(extra_pnginfo or {})
            if prompt is not None:
                metadata["prompt"] = prompt
        check_finite(images, "the frames given to Save MP4 (from VAE Decode)", images.dtype, VAE_ADVICE)
        path, record = paths.output_file(filename_prefix, "mp4", images.shape[2], images.shape[1])
        write_mp4(path, images, fps=fps, crf=quality, metadata=metadata)
        return io.NodeOutput(images, *paths.video_output(path), ui={"images": [record], "animated": (True,)})


class Magic141SaveInt8(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Magic141SaveInt8",
            display_name="Magic141 Save int8 Checkpoint",
            category=CATEGORY,
            description="Saves int8 checkpoints (optimum-quanto, about half the size): the transformer into "
                        "models/diffusion_models, the LLaVA encoder (int8 Llama-3, vision tower included) into "
                        "models/text_encoders. Later runs load them directly as int8 without ever holding float "
                        "weights. A name that already exists in those folders is refused: no model is ever replaced.",
            inputs=[
                io.String.Input("filename", default="magic141_int8", tooltip="File name (no folders); .safetensors "
                                                                             "is added, and _llava for the encoder."),
                io.Model.Input("model", optional=True, tooltip="From Magic141 Model Loader (float or int8)."),
                ENCODERS.Input("encoders", optional=True, tooltip=(
                    "From Magic141 Encoder Loader: its LLaVA is saved (pick the file as llava with int8 "
                    "'pre-quantized').")),
            ],
            outputs=[io.String.Output(tooltip="The saved files' names, comma-separated.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, filename, model=None, encoders=None) -> io.NodeOutput:
        name = filename.strip().removesuffix(".safetensors")
        if not re.fullmatch(r"[\w][\w.\- ]*", name):
            raise ValueError(f"filename {filename!r} must be a plain file name (letters, digits, '_', '-', '.'; "
                             "no folders)")
        if model is None and encoders is None:
            raise ValueError("connect a model (Magic141 Model Loader) or encoders (Magic141 Encoder Loader) to save")
        if model is not None:  # both names checked before either file is written
            paths.new_model_file("diffusion_models", f"{name}.safetensors")
        if encoders is not None:
            paths.new_model_file("text_encoders", f"{name}_llava.safetensors")
        saved = []
        if model is not None:
            dit = native_model.core_dit(model)
            if dit is None:
                raise ValueError(f"Save int8 Checkpoint got {native_model.describe_model(model)}; connect Magic141 Model "
                                 "Loader's MODEL (it saves Magic141's own int8 format)")
            if getattr(model, "patches", None):
                raise ValueError("Save int8 Checkpoint re-reads the transformer file, so LoRAs or other weight "
                                 "patches on this MODEL would be lost: save it with native ModelSave first, load "
                                 "that file in Magic141 Model Loader, then save it as int8")
            saved.append(cls._save_dit(dit, name))
        if encoders is not None:
            saved.append(cls._save_llava(encoders, name + "_llava"))
        return io.NodeOutput(", ".join(saved), ui={"text": saved})

    @staticmethod
    def _save_dit(dit, name: str) -> str:
        from ..magic141_core.weights.int8 import quantization_map

        path = paths.new_model_file("diffusion_models", f"{name}.safetensors")  # refused before any work
        if not quantization_map(dit):  # a float model: re-read its file quantizing layer by layer (it stays float),
            # as the family it was loaded as (a choice on the loader included), which the int8 file then stores
            dit = load_dit(dit.source_path, dtype=torch.bfloat16, int8=True, family=dit.family.key)
        save_dit(dit, path)
        return path.name

    @staticmethod
    def _save_llava(encoders, name: str) -> str:
        from ..magic141_core.text import load_llava
        from ..magic141_core.text.loading import save_llava

        path = paths.new_model_file("text_encoders", f"{name}.safetensors")
        # quantized while re-read from its files, so the loaded encoders (float or int8) stay as they are
        parts = load_llava(encoders.llava_source, torch.bfloat16, int8=True)
        save_llava(parts.model, path)
        return path.name


NODES = [Magic141SaveMP4, Magic141SaveInt8]
