"""The CLI's subcommands: generate, long, quantize, index, retrieve, bench."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from .models import REPO, load_dit_and_vae, load_encoders, resolve_models

log = logging.getLogger("magic141")


def _load_image(path: Path) -> torch.Tensor:
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    with Image.open(path) as image:
        rgb = ImageOps.exif_transpose(image).convert("RGB")
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255)[None]  # [1, H, W, 3]


def _fit(image: torch.Tensor, resolution: str, fit: str = "crop") -> torch.Tensor:
    from ..image import fit_image, nearest_bucket

    if resolution in ("540p", "720p"):
        width, height = nearest_bucket(image.shape[2], image.shape[1], resolution)
    else:
        try:
            width, height = (int(v) for v in resolution.lower().split("x"))
        except ValueError:
            raise ValueError(f"--resolution must be 540p, 720p or WIDTHxHEIGHT, got {resolution!r}") from None
    return fit_image(image, width, height, fit)


def run_video(args, windows: int, prompts: str):
    """Render `windows` windows (1 = a single clip) to args.out; returns the path."""
    from ..long_video import CoreFrameVAE, LongVideoSettings, generate_long_video, window_prompts, window_seeds
    from ..pipeline import latent_frames
    from ..video_io import Mp4Writer

    latent_frames(args.frames)  # validates 4k+1 before anything loads
    settings = LongVideoSettings(steps=args.steps, shift=args.shift, guidance=args.guidance,
                                 color_match=not args.no_color_match, noise_augmentation=args.noise_augmentation)
    prior = _fit(_load_image(args.image), args.resolution, args.fit)
    sp = getattr(args, "parallel", None)  # torchrun: every rank runs this; rank 0 alone encodes, writes and reports
    rank_zero = sp is None or sp.is_main
    paths = resolve_models(args) if sp is None else sp.from_rank_zero(lambda: resolve_models(args))
    encoders = load_encoders(args, paths) if rank_zero else None
    dit, vae = load_dit_and_vae(args, paths)
    frame_vae = CoreFrameVAE(vae)
    if sp is not None:
        from ..parallel import ParallelFrameVAE, RankZeroEncoders

        sp.attach(dit)
        encoders, frame_vae = RankZeroEncoders(sp, encoders), ParallelFrameVAE(sp, frame_vae)
    metadata = {"magic141": {"prompts": prompts, "seed": args.seed, "steps": args.steps, "windows": windows,
                             "models": {k: str(v) for k, v in paths.items() if v is not None}}}
    bar = tqdm(total=windows * args.steps, unit="step", desc=f"{windows} window(s)", disable=not rank_zero)
    sink = (Mp4Writer(args.out, args.fps, args.crf, metadata, keep_partial=windows > 1) if rank_zero
            else nullcontext(_NoWriter()))
    with sink as writer:
        generate_long_video(dit, encoders, frame_vae, prior, window_prompts(prompts, windows),
                            window_seeds(args.seed, windows), args.frames, writer.write, settings,
                            on_step=lambda k, step: bar.update(1))
    bar.close()
    return Path(args.out) if rank_zero else None


class _NoWriter:
    """The video writer of ranks other than 0 under torchrun: they decode every frame too, but do not write it."""

    def write(self, frames):
        pass


def cmd_generate(args):
    out = run_video(args, 1, args.prompt)
    if out is not None:
        print(f"wrote {out}")


def cmd_long(args):
    from ..long_video import windows_for

    prompts = Path(args.prompts[1:]).read_text() if args.prompts.startswith("@") else args.prompts
    windows = args.windows or windows_for(args.seconds, args.fps, args.frames)
    out = run_video(args, windows, prompts)
    if out is None:  # not rank 0
        return
    print(f"wrote {out} ({windows} windows)")
    if args.report:
        from ..seams import measure_seams, seam_frames
        from ..video_io import iter_mp4

        frames, _ = iter_mp4(out)
        print(measure_seams(frames, seam_frames(args.frames, windows)).summary())


def cmd_quantize(args):
    from ..quant import weight_bytes

    if args.dit is not None:
        from ..dit.loading import load_dit, save_dit

        model, inputs = load_dit(args.dit, dtype=torch.bfloat16, int8=True), [args.dit]
        save_dit(model, args.out)
    else:
        from ..text import LlavaSource, load_llava
        from ..text.loading import save_llava

        if args.llava.is_dir():
            source, inputs = LlavaSource(folder=args.llava), list(args.llava.glob("*.safetensors"))
        else:
            if args.llava_vision is None:
                raise ValueError("a --llava file needs --llava-vision (llava_llama3_vision.safetensors)")
            tokenizer = args.comfyui / "comfy" / "text_encoders" / "llama_tokenizer"
            source, inputs = LlavaSource(text_encoder=args.llava, vision=args.llava_vision, tokenizer=tokenizer), \
                [args.llava, args.llava_vision]
        model = load_llava(source, torch.bfloat16, int8=True).model
        save_llava(model, args.out)
    print(f"wrote {args.out}: int8 weights, {weight_bytes(model) / 1e9:.2f} GB "
          f"({args.out.stat().st_size / sum(p.stat().st_size for p in inputs):.2f}x the input files)")


def _embedder(args):
    from ..priors import ClipEmbedder

    return ClipEmbedder(args.clip, device=args.device)


def _index(args, embedder):
    from ..priors import ImageIndex

    index = ImageIndex(args.folder, args.index)
    bar = tqdm(unit="image", desc="indexing")

    def progress(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()

    stats = index.update(embedder, batch_size=args.batch_size, progress=progress)
    bar.close()
    return index, stats


def cmd_index(args):
    index, stats = _index(args, _embedder(args))
    print(f"{index.index_path}: {len(index.keys)} images ({stats.embedded} embedded, {stats.kept} unchanged, "
          f"{stats.removed} removed, {stats.skipped} unreadable)")


def cmd_retrieve(args):
    embedder = _embedder(args)
    index, _ = _index(args, embedder)
    for rank, match in enumerate(index.query(embedder.embed_text([args.prompt])[0], args.k)):
        print(f"{rank:3d}  {match.score:+.4f}  {match.path}")


def cmd_bench(args):
    from .bench import run_benchmarks

    run_benchmarks(REPO / "benchmarks", quick=args.quick, out=args.json)

