"""The CLI's model arguments: real checkpoints from local files, or the built-in architecture demo."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger("magic141")

REPO = Path(__file__).resolve().parents[2]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DEMO_NOTICE = ("using the built-in ARCHITECTURE DEMO (untrained; hand-set weights hold the start image still, "
               "whatever the prompt and seed); pass --dit/--vae/--llava/--clip-l for real checkpoints")


def add_comfyui_arg(parser) -> None:
    parser.add_argument("--comfyui", type=Path,
                        default=Path(os.environ.get("MAGIC141_COMFYUI", REPO / ".host" / "ComfyUI")),
                        help="a ComfyUI folder: its tokenizers serve single-file encoders and the demo "
                             "(default: %(default)s)")


def add_model_args(parser: argparse.ArgumentParser, encoders: bool = True):
    g = parser.add_argument_group("models (all local files; omit them all for the built-in demo)")
    g.add_argument("--dit", type=Path, help="the transformer (.safetensors or weights-only .pth): Magic141, "
                   "HunyuanVideo-I2V v1 or v2, or SkyReels-V1 I2V")
    g.add_argument("--family", default="auto", help="which weights --dit holds: auto (read from the file; printed "
                   "with the reason), magic141, v1, v2, skyreels (default: %(default)s)")
    g.add_argument("--vae", type=Path, help="HunyuanVideo VAE (.safetensors)")
    if encoders:
        g.add_argument("--llava", type=Path, help="llava_llama3 text encoder file, or an HF LLaVA folder")
        g.add_argument("--llava-vision", type=Path, help="llava_llama3_vision.safetensors (with a single-file --llava)")
        g.add_argument("--clip-l", type=Path, help="clip_l.safetensors, or an HF CLIP-L folder")
    add_comfyui_arg(g)
    g.add_argument("--demo-dir", type=Path, default=REPO / ".host" / "base" / "models",
                   help="where the demo models are generated on first use (default: %(default)s)")
    g.add_argument("--dtype", choices=list(DTYPES), default="bf16", help="transformer/VAE weight dtype")
    g.add_argument("--int8", action="store_true", help="quantize the transformer and the Llama-3 encoder to int8 "
                   "on load (optimum-quanto)")
    g.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH]",
                   help="apply a HunyuanVideo LoRA to the transformer (official/ComfyUI, kohya/musubi or diffusers "
                        "keys); strength defaults to 1.0; repeat to stack several")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: %(default)s")


def _tokenizers(args) -> tuple[Path, Path]:
    llama, clip = args.comfyui / "comfy" / "text_encoders" / "llama_tokenizer", args.comfyui / "comfy" / "sd1_tokenizer"
    if not (llama.is_dir() and clip.is_dir()):
        raise FileNotFoundError(f"ComfyUI's tokenizers were not found under {args.comfyui}; run ./run.sh once (it "
                                "installs ComfyUI) or pass --comfyui PATH to a ComfyUI folder")
    return llama, clip


def resolve_models(args, encoders: bool = True) -> dict[str, Path | None]:
    """Paths of the models to use: the given ones, or the demo files (generated on first use) when none is given."""
    given = {k: getattr(args, k, None) for k in ("dit", "vae", "llava", "llava_vision", "clip_l")}
    if any(v is not None for v in given.values()):
        missing = [f"--{k.replace('_', '-')}" for k in ("dit", "vae", "llava", "clip_l")
                   if (encoders or k in ("dit", "vae")) and given[k] is None]
        if missing:
            raise ValueError(f"give all real models or none (for the demo); missing {', '.join(missing)}")
        return given
    from ..demo.models import write_demo_models

    log.warning(DEMO_NOTICE)
    paths = write_demo_models(args.demo_dir, *_tokenizers(args))
    return {"dit": paths["dit"], "vae": paths["vae"], "llava": paths["llava"], "llava_vision": paths["vision"],
            "clip_l": paths["clip_l"]}


def load_encoders(args, paths):
    from ..text import ClipSource, LlavaSource, Magic141Encoders

    llama_tok, clip_tok = (None, None)
    if paths["llava"].is_file() or paths["clip_l"].is_file():
        llama_tok, clip_tok = _tokenizers(args)
    llava = (LlavaSource(folder=str(paths["llava"])) if paths["llava"].is_dir() else
             LlavaSource(text_encoder=str(paths["llava"]), vision=str(paths["llava_vision"]), tokenizer=str(llama_tok)))
    clip = (ClipSource(folder=str(paths["clip_l"])) if paths["clip_l"].is_dir() else
            ClipSource(file=str(paths["clip_l"]), tokenizer=str(clip_tok)))
    dtype = torch.float32 if args.device == "cpu" else torch.float16
    return Magic141Encoders(llava, clip, device=args.device, dtype=dtype, int8=args.int8)


def load_dit_and_vae(args, paths):
    """The transformer (its family read from the file or --family, refused when it has no image path) and the
    VAE."""
    from ..dit.loading import load_dit
    from ..vae import load_vae

    dtype = DTYPES[args.dtype]
    dit = load_dit(paths["dit"], dtype=dtype, device=args.device, int8=args.int8,
                   family=getattr(args, "family", "auto"))
    if not dit.family.is_i2v:
        raise ValueError(f"--dit {paths['dit'].name} is {dit.family.describe()} ({dit.family_reason}): it has no "
                         "image path; for HunyuanVideo-I2V v2 weights pass --family v2")
    if getattr(args, "lora", None):
        from ..weights.lora import load_loras_, parse_lora_arg

        load_loras_(dit, [parse_lora_arg(text) for text in args.lora])
    return dit, load_vae(paths["vae"], dtype=dtype, device=args.device)
