"""Load the LLaVA-Llama-3 model and CLIP-L text model with their tokenizers, from local files only.

Hugging Face folders go through transformers' `from_pretrained(..., local_files_only=True)`. ComfyUI's single files
are read with the pack's safe reader, renamed by `comfy_keys`, and assigned into a model built without memory
(parameters on the meta device), so an 8B model is never initialised randomly first.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import CheckpointError, open_state_dict, wrong_model_message
from . import comfy_keys
from .images import llava_image_processor
from .prompts import IMAGE_TOKEN
from .sources import ClipSource, LlavaSource

logger = logging.getLogger(__name__)


@dataclass
class LlavaParts:
    model: nn.Module  # transformers LlavaModel: vision_tower, multi_modal_projector, language_model (no lm_head)
    tokenizer: object  # Llama-3 tokenizer, right padding
    image_processor: object  # CLIPImageProcessor with LLaVA's settings


@dataclass
class ClipParts:
    model: nn.Module  # transformers CLIPTextModel
    tokenizer: object


def _transformers_version() -> tuple[int, int]:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    if (major, minor) < (4, 52):
        raise ImportError(
            f"Magic141's encoders need transformers >= 4.52 (LlavaModel), found {transformers.__version__}; "
            "upgrade it with: pip install 'transformers>=4.52,<5'"
        )
    return major, minor


def _dtype_kwarg(dtype: torch.dtype) -> dict:
    return {"dtype" if _transformers_version() >= (4, 56) else "torch_dtype": dtype}


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"cannot load the tokenizer in {folder}: {e}") from None
    tokenizer.padding_side = "right"
    return tokenizer


@contextmanager
def _parameters_on_meta():
    """Modules built inside get their parameters on the meta device (no memory, no init); buffers stay real.

    Patches `nn.Module.register_parameter` for the duration (process-wide, as accelerate's init_empty_weights does).
    """
    register = nn.Module.register_parameter

    def register_on_meta(module, name, param):
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _assign(model: nn.Module, sd: dict[str, torch.Tensor], name: str, expected: str) -> nn.Module:
    """Strict load by assignment; a mismatch names the file's kind instead of a torch traceback."""
    wanted = set(model.state_dict())
    missing, unexpected = sorted(wanted - set(sd)), sorted(set(sd) - wanted)
    if missing or unexpected:
        if len(missing) > len(wanted) // 2:
            raise CheckpointError(wrong_model_message(name, sd.keys(), expected, missing))
        raise CheckpointError(
            f"{name} does not fit {expected}: missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def _mapped(path: Path, rename, dtype: torch.dtype, expected: str) -> dict[str, torch.Tensor]:
    """The file's tensors under transformers names, in `dtype` (fp8 dequantised), read one tensor at a time."""
    sd = {}
    with open_state_dict(path) as raw:
        for key in raw:  # check every name before reading any tensor
            try:
                rename(key)
            except KeyError:
                raise CheckpointError(wrong_model_message(path.name, list(raw), expected, [key])) from None
        for key, tensor in comfy_keys.dequantize(raw, dtype):
            new = rename(key)
            if new is not None:
                sd[new] = tensor
    return sd


def load_llava(source: LlavaSource, dtype: torch.dtype = torch.float16) -> LlavaParts:
    """The LLaVA model (without its LM head), its tokenizer and image processor."""
    source.check()
    _transformers_version()
    if source.is_folder:
        return _load_llava_folder(Path(source.folder), Path(source.tokenizer or source.folder), dtype)
    from transformers import LlavaModel

    tokenizer = load_tokenizer(Path(source.tokenizer))
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_token_id is None or image_token_id == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer in {source.tokenizer} has no {IMAGE_TOKEN} token; use the llava-llama-3 one")
    sd = _mapped(Path(source.text_encoder), comfy_keys.llava_key, dtype, "a llava-llama-3 text encoder")
    if not any(k.startswith("language_model.") for k in sd):
        name = Path(source.text_encoder).name
        raise CheckpointError(wrong_model_message(name, sd, "a llava-llama-3 text encoder", []))
    vision = _mapped(Path(source.vision), comfy_keys.llava_key, dtype, "the llava-llama-3 vision tower")
    if "multi_modal_projector.linear_1.weight" not in vision:
        raise CheckpointError(
            f"{Path(source.vision).name} has no multi_modal_projector: it is a plain CLIP vision model, not "
            "llava_llama3_vision.safetensors (LLaVA's vision tower with its projector)"
        )
    sd.update(vision)
    config = comfy_keys.llava_config(sd, image_token_id, tokenizer.pad_token_id)
    with _parameters_on_meta():
        model = LlavaModel(config)
    model = _assign(model, sd, f"{Path(source.text_encoder).name} + {Path(source.vision).name}", "LLaVA-Llama-3")
    return LlavaParts(model, tokenizer, llava_image_processor(config.vision_config.image_size))


def _load_llava_folder(folder: Path, tokenizer_folder: Path, dtype: torch.dtype) -> LlavaParts:
    from transformers import AutoConfig, CLIPImageProcessor, LlavaForConditionalGeneration

    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    if config.model_type != "llava":
        raise ValueError(
            f"{folder} holds a '{config.model_type}' model, not LLaVA: Magic141 needs the whole "
            "llava-llama-3-8b-v1_1-transformers folder (its Llama-3 and its vision tower)"
        )
    full = LlavaForConditionalGeneration.from_pretrained(
        str(folder), local_files_only=True, use_safetensors=True, **_dtype_kwarg(dtype)
    )
    model = full.model.eval().requires_grad_(False)  # hidden states only: the LM head is dropped
    del full
    tokenizer = load_tokenizer(tokenizer_folder)
    if (folder / "preprocessor_config.json").is_file():
        processor = CLIPImageProcessor.from_pretrained(str(folder), local_files_only=True)
    else:
        processor = llava_image_processor(config.vision_config.image_size)
    return LlavaParts(model, tokenizer, processor)


def load_clip(source: ClipSource, dtype: torch.dtype = torch.float16) -> ClipParts:
    """The CLIP-L text model and its tokenizer."""
    source.check()
    from transformers import CLIPTextModel

    tokenizer = load_tokenizer(Path(source.tokenizer or source.folder))
    if source.is_folder:
        model = CLIPTextModel.from_pretrained(
            str(source.folder), local_files_only=True, use_safetensors=True, **_dtype_kwarg(dtype)
        )
        return ClipParts(model.eval().requires_grad_(False), tokenizer)
    path = Path(source.file)
    sd = _mapped(path, comfy_keys.clip_key, dtype, "a CLIP-L text encoder")
    if "text_model.embeddings.token_embedding.weight" not in sd:
        raise CheckpointError(wrong_model_message(path.name, sd, "a CLIP-L text encoder", []))
    config = comfy_keys.clip_text_config(sd, tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id)
    with _parameters_on_meta():
        model = CLIPTextModel(config)
    return ClipParts(_assign(model, sd, path.name, "a CLIP-L text encoder"), tokenizer)
