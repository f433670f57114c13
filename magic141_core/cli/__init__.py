"""`python -m magic141_core`: generate, long, quantize, index, retrieve, bench. Errors are one line and exit 2;
output paths are checked before any work, and an existing file is never written over.

`generate` and `long` also run under `torchrun --nproc-per-node N -m magic141_core ...` (sequence parallel, see
docs/parallel.md): every rank samples, rank 0 alone writes files and shows progress, and an error on any rank ends
the launch (the failing rank exits 2; torchrun then stops the others).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .commands import cmd_bench, cmd_generate, cmd_index, cmd_quantize, cmd_retrieve
from .long import cmd_long
from .models import add_comfyui_arg, add_model_args

log = logging.getLogger("magic141")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (and where to look) instead of the usage block."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _seed(text: str) -> int:
    """--seed: a whole number in the nodes' range (a larger one would silently wrap around to another seed)."""
    from ..sampling.noise import check_seed

    try:
        return check_seed(int(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e) if text.lstrip("+-").isdigit() else f"not a whole number: {text!r}")


def _video_args(p: argparse.ArgumentParser, default_out: str, long_video: bool = False):
    p.add_argument("--image", type=Path, required=not long_video, help="the start image (the prior)" + (
        "; with --start-video, the identity anchor only (default: the clip's first frame)" if long_video else ""))
    p.add_argument("--out", type=Path, help=f"MP4 to write, a new file (default: {default_out}, or {default_out[:-4]}"
                   "_2.mp4 ... when taken)")
    p.set_defaults(default_out=default_out)
    p.add_argument("--frames", type=int, default=81, help="frames per clip / window, 4k+1 (default: %(default)s; "
                   "draft makes at most 17, or 9 per window)")
    p.add_argument("--resolution", default="auto", help="auto (the default: 540p on a GPU, draft on a CPU), draft "
                   "(the 540p bucket at 1/6 size, <=17 frames; long videos <=2 windows of <=9 frames: a minute or two "
                   "on a CPU), "
                   "540p, 720p (official buckets nearest the image's aspect ratio) or WIDTHxHEIGHT; the size chosen "
                   "is printed")
    p.add_argument("--fit", choices=["crop", "pad"], default="crop",
                   help="start image to the video's aspect ratio: crop the centre (default, official) or pad with "
                        "black bars (keeps the whole image; the bars stay in the video)")
    p.add_argument("--steps", type=int, default=4, help="default: %(default)s (the distilled count)")
    p.add_argument("--shift", type=float, default=5.0, help="default: %(default)s")
    p.add_argument("--guidance", type=float, default=1.0, help="default: %(default)s (distilled; >1 runs CFG, or is "
                   "embedded where the model has a guidance embedder: HunyuanVideo-I2V v2 uses 6)")
    p.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance on top of an embedded guidance, "
                   "with the negative prompt (default: %(default)s = none; SkyReels-V1 uses 6 with --guidance 1)")
    p.add_argument("--seed", type=_seed, default=39, help="0 to 2**64-1 (default: %(default)s)")
    p.add_argument("--fps", type=float, default=24.0, help="default: %(default)s")
    p.add_argument("--crf", type=int, default=19, help="x264 quality, lower is better (default: %(default)s)")
    if long_video:
        _long_args(p)
    add_model_args(p)


def _long_args(p: argparse.ArgumentParser):
    from ..video.long_video import COLOR_ANCHORS
    from ..video.windows import CONTEXT_FRAMES, DEFAULT_CONTEXT_FRAMES

    p.add_argument("--context-frames", type=int, choices=CONTEXT_FRAMES, default=DEFAULT_CONTEXT_FRAMES,
                   help="motion context: each window continues the last N frames of the video so far (1, 2, 3 or 4 "
                        "latent frames; default: %(default)s)")
    p.add_argument("--color-anchor", choices=COLOR_ANCHORS, default="start",
                   help="match each window's context colours to the frames the video started from (start, default: "
                        "no drift) or to the previous window (previous: follows colour changes, and drift)")
    p.add_argument("--no-color-match", action="store_true", help="no colour matching at seams")
    p.add_argument("--noise-augmentation", type=float, default=0.02, help="default %(default)s")
    p.add_argument("--start-video", type=Path, help="an MP4 to extend: the video continues from its last frames "
                   "(fitted to the video size like the start image)")
    p.add_argument("--include-start", action="store_true", help="with --start-video: write its frames first, so the "
                   "file is the whole extended clip")


def _index_args(p: argparse.ArgumentParser):
    p.add_argument("--folder", type=Path, required=True, help="the image folder")
    p.add_argument("--clip", type=Path, required=True, help="a Hugging Face CLIPModel folder (local)")
    p.add_argument("--index", type=Path, help="index file (default: FOLDER/.magic141_index.safetensors)")
    p.add_argument("--batch-size", type=int, default=32, help="images per CLIP batch (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="default: %(default)s")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m magic141_core", description="Magic141 (Magic 1-For-1) "
                                     "image-to-video from the command line. Nothing is downloaded.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("generate", help="image + prompt -> MP4 (one clip)", description="One clip from an image.")
    p.add_argument("--prompt", required=True, help="what happens in the clip")
    p.add_argument("--profile", action="store_true", help="afterwards, print the wall time of each stage (load, "
                   "encoders, VAE encode, each DiT step, decode, MP4 write), the peak memory and the DiT forwards")
    _video_args(p, "magic141.mp4")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("long", help="image + prompts -> a long MP4 (chained windows)", allow_abbrev=False,
                       description="A long video by chaining windows; one prompt per line directs them in order. "
                                   "Every window is remembered in a sidecar beside the MP4 (NAME.m141): --resume it "
                                   "to finish a stopped run, or re-roll from a window with --from.")
    p.add_argument("--prompts", help="prompts, one per line (or @FILE); a line starting with [cut] starts a new "
                   "shot from the image --prior-folder holds nearest its prompt")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, help="duration in seconds")
    length.add_argument("--windows", type=int, help="number of windows")
    p.add_argument("--report", action="store_true", help="print the seam and colour-drift report afterwards")
    p.add_argument("--prior-folder", type=Path, help="an image folder: each [cut] line starts from its image nearest "
                   "the line's prompt (indexed with --prior-clip, as `index` does)")
    p.add_argument("--prior-clip", type=Path, help="the Hugging Face CLIPModel folder that indexes --prior-folder")
    p.add_argument("--resume", type=Path, metavar="FILE", help="continue a recorded long video: its sidecar "
                   "(NAME.m141) or its MP4 (NAME.mp4, NAME_partial.mp4). Windows before --from are reused bit for "
                   "bit; the size, prior and settings are the recorded ones; a new MP4 and sidecar are written")
    p.add_argument("--from", dest="from_window", type=int, metavar="K", help="with --resume: re-roll from window K "
                   "(1-based; default: the first unfinished window) with --seed / --prompt / --prompts if given")
    p.add_argument("--prompt", help="with --resume: window K's new prompt (the later windows keep theirs)")
    _video_args(p, "magic141_long.mp4", long_video=True)
    p.set_defaults(func=cmd_long)

    p = sub.add_parser("quantize", help="write an int8 (optimum-quanto) transformer or LLaVA encoder checkpoint",
                       description="Quantize the transformer (--dit) or the LLaVA encoder (--llava + --llava-vision) "
                                   "to int8 weights, layer by layer while reading, and save it pre-quantized.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dit", type=Path, help="the float transformer checkpoint")
    source.add_argument("--llava", type=Path, help="ComfyUI's llava_llama3 text encoder file (or an HF LLaVA folder)")
    p.add_argument("--llava-vision", type=Path, help="llava_llama3_vision.safetensors (with a --llava file)")
    p.add_argument("--family", default="auto", help="which weights --dit holds (stored in the int8 file): auto, "
                   "magic141, v1, v2, skyreels (default: %(default)s)")
    add_comfyui_arg(p)
    p.add_argument("--out", type=Path, required=True, help="the int8 .safetensors to write (a new file)")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("index", help="index an image folder for the retrieval prior",
                       description="Embed an image folder with CLIP (only new or changed files).")
    _index_args(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("retrieve", help="the images nearest a prompt", description="Top-k images for a prompt.")
    _index_args(p)
    p.add_argument("--prompt", required=True, help="what the image should show")
    p.add_argument("--k", type=int, default=5, help="default: %(default)s")
    p.set_defaults(func=cmd_retrieve)

    p = sub.add_parser("bench", help="run the benchmarks and print one table of ratios",
                       description="Runs every script in benchmarks/ and prints their ratios.")
    p.add_argument("--quick", action="store_true", help="small configurations (minutes, not tens of minutes)")
    p.add_argument("--smoke", action="store_true", help="tiniest configurations: checks that every row runs "
                   "(seconds per script); the figures mean nothing")
    p.add_argument("--runs", type=int, default=1, help="interleaved rounds; each ratio is their median with its "
                   "spread (the README's figures: 5 or more, on a quiet machine) (default: %(default)s)")
    p.add_argument("--json", type=Path, help="also write the table as JSON")
    add_comfyui_arg(p)
    p.set_defaults(func=cmd_bench)
    return parser


PARALLEL_COMMANDS = ("generate", "long")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser().parse_args(argv)
    args.given = {a.split("=")[0] for a in argv if a.startswith("--")}  # flags given (`long --resume` checks them)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    level = logging.INFO if args.verbose else logging.WARNING if rank == 0 else logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s" if world == 1 else
                        f"%(levelname)s (rank {rank}): %(message)s")
    logging.captureWarnings(True)  # Python warnings are log records too: printed above a progress bar, not into it
    args.parallel, joined = None, False
    try:
        if world > 1:
            args.parallel, joined = _join_torchrun(args)
        args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- every error is one line (the traceback with -v)
        if args.verbose:
            raise
        message = " ".join(str(e).split())
        if not isinstance(e, (ValueError, OSError, RuntimeError)):  # not one of ours: say what it was
            message = f"{type(e).__name__}: {message} (unexpected; run with -v for details and please report it)"
        print(f"error{'' if world == 1 else f' (rank {rank})'}: {message}", file=sys.stderr)
        return 2
    if joined:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


def _join_torchrun(args):
    """The sequence-parallel group of this torchrun launch, and whether this call created it (then main ends it)."""
    import torch.distributed as dist

    from ..parallel import init_from_env

    if args.command not in PARALLEL_COMMANDS:
        raise ValueError(f"`{args.command}` runs on one process; run it without torchrun "
                         f"(torchrun runs {' and '.join(PARALLEL_COMMANDS)})")
    created = not dist.is_initialized()
    sp = init_from_env(args.device)
    args.device = str(sp.device)  # cuda -> cuda:LOCAL_RANK
    return sp, created
