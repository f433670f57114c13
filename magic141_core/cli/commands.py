"""The CLI's subcommands: generate, long, quantize, index, retrieve, bench."""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..runtime.profile import StageProfile
from .models import REPO, load_dit_and_vae, load_encoders, resolve_models

log = logging.getLogger("magic141")


def start_image_size(path: Path | None, resolution: str, frames: int, device="cpu", long_video: bool = False,
                     dimensions: tuple[int, int] | None = None):
    """The clip's `start_image.VideoSize` for the start image file `path` (its aspect ratio picks the bucket): the one size
    policy the nodes use too. resolution: "auto" (540p on a GPU, draft on the CPU; the default), "draft" (1/6 size,
    <=17 frames; long videos <=2 windows of <=9 frames), "540p" / "720p" (the official bucket nearest the image's
    aspect ratio) or "WIDTHxHEIGHT"; frames: the length asked for (4k+1; a window's with long_video); device: where
    the clip is made; dimensions: (width, height) to use instead of the file's (a start video's). The file's header
    alone is read. Raises FileNotFoundError, ImageFileError (naming the file) or ValueError."""
    from ..sampling.sampler import latent_shape
    from ..video.image_files import image_size
    from ..video.start_image import CUSTOM, video_size

    custom = None
    if resolution.lower().split(" ")[0].split(":")[0] not in ("auto", "draft", "540p", "720p"):
        try:
            custom = tuple(int(v) for v in resolution.lower().split("x"))
            width, height = custom
        except ValueError:
            raise ValueError(f"--resolution must be auto, draft, 540p, 720p or WIDTHxHEIGHT, got {resolution!r}") \
                from None
        latent_shape(1, height, width)  # multiples of 16, at most MAX_SIDE: refused before anything is resized
        resolution = CUSTOM
    return video_size(resolution, *(dimensions or image_size(path)), frames, device, custom=custom,
                      long_video=long_video)


def load_start_image(path: Path, resolution: str, fit: str = "crop", size=None) -> torch.Tensor:
    """The start image file fitted to the video size (centre crop or pad, `fit`): float [1, H, W, 3] in 0..1.

    size: the clip's `VideoSize` (from `start_image_size`), else the size of `resolution` (see there) on the CPU.
    The file is read as ComfyUI's Load Image reads it (`video.image_files.open_rgb`), reduced while decoding so memory
    follows the video size, not the file's. Raises FileNotFoundError, ImageFileError (naming the file) or
    ValueError."""
    from ..video.image_files import load_image
    from ..video.start_image import fit_image

    size = size or start_image_size(path, resolution, 1)
    return fit_image(load_image(path, cover=(size.width, size.height)), size.width, size.height, fit)


def new_output(path: Path | None, default: str, suffix: str, flag: str = "--out") -> Path:
    """The file a command will write, checked before any work: `path` (which must not exist, be a `suffix` file and
    lie in a folder that exists or can be made, and that we may write in), or the first free `default` name."""
    from ..runtime.atomic import next_free, refuse_existing

    if path is None:
        return next_free(Path(default))
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name in it, e.g. {flag} {path / default}")
    refuse_existing(path, f"{flag} file")
    if path.suffix.lower() != suffix:
        raise ValueError(f"{flag} {path} must be a {suffix} file name (e.g. {path.with_suffix(suffix)})")
    folder = path.absolute().parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {path}: cannot write in {existing}; choose a folder you may write in")
    return path


def load_start_clip(path: Path, size, fit: str, keep: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The clip `path` (an MP4) to extend, each frame fitted to `size` (a `VideoSize`) like the start image (`fit`),
    as uint8 [S', H, W, 3]: every frame (`keep` None) or only the last `keep` (memory follows what is used). Returns
    (those frames, the first frame as float [1, H, W, 3] (the identity anchor when no image is given), the clip's
    frame count S). Raises FileNotFoundError or ValueError (naming the file) for a missing, unreadable or empty
    video."""
    from collections import deque

    from ..video.mp4 import iter_mp4, mp4_size
    from ..video.start_image import fit_clip

    mp4_size(path)  # a clear error for a file that is not a video
    frames, _ = iter_mp4(path)
    kept, first, count = deque(maxlen=keep), None, 0
    for frame in frames:  # one at a time: a long clip is never held at its own size
        kept.append(fit_clip(torch.from_numpy(frame.copy())[None], size.width, size.height, fit)[0])
        if first is None:
            first = kept[0].float()[None] / 255
        count += 1
    if not count:
        raise ValueError(f"--start-video {path} has no frames; give a video with at least one frame")
    return torch.stack(list(kept)), first, count


def run_video(args, count_windows, prompts: str, continued=None, asked: str | None = None):
    """Render the clip (or long video) to args.out.

    count_windows(frames, start_frames) -> the windows asked for at `frames` per window when extending a clip of
    `start_frames` frames (0: from the image); None: a single clip. The size policy (`start_image_size`: auto,
    draft, buckets, WIDTHxHEIGHT) sets the frame size, args.frames and the windows, and says what it chose on
    stdout (a long video: its length in seconds and, where a draft cut it, why; `asked`: the duration asked for, as
    said back, "60 s"). A long video is written with its sidecar (`video.resume.LongVideoFile`); `continued` (`cli.long
    .Continued`): a recorded long video to continue, whose size, prior and settings are used. Returns (path or None
    on ranks other than 0, the `WindowPlan` made)."""
    from ..sampling.sampler import latent_frames, latent_shape
    from ..text import TemplateEncoders
    from ..video.long_video import CoreFrameVAE, LongVideoSettings, generate_long_video
    from ..video.mp4 import Mp4Writer, mp4_size
    from ..video.windows import WindowPlan, storyboard

    sp = getattr(args, "parallel", None)  # torchrun: every rank runs this; rank 0 alone encodes, writes and reports
    rank_zero = sp is None or sp.is_main
    long_video = count_windows is not None
    if continued is not None:
        settings, prior, board, start_clip = continued.settings, continued.prior, continued.board, None
        args.out = new_output(args.out, args.default_out, ".mp4")
        args.frames, windows = continued.old.record.window_frames, len(board)
        plan = continued.old.record.plan(windows, frozenset(k for k, p in enumerate(board) if p.cut))
        if rank_zero:
            print(f"size: {prior.shape[2]}x{prior.shape[1]}, {windows} windows of {args.frames} frames (as recorded)",
                  flush=True)
    else:
        latent_frames(args.frames)  # validates 4k+1 before anything loads
        extra = dict(color_match=not args.no_color_match, noise_augmentation=args.noise_augmentation,
                     context_frames=args.context_frames, color_anchor=args.color_anchor,
                     include_start=args.include_start) if long_video else dict(context_frames=1)
        settings = LongVideoSettings(steps=args.steps, shift=args.shift, guidance=args.guidance, seed=args.seed,
                                     cfg=args.cfg, fps=args.fps, quality=args.crf,
                                     **extra)  # every value checked before loading
        start_video = getattr(args, "start_video", None)
        if settings.include_start and start_video is None:
            raise ValueError("--include-start writes the frames of --start-video first; give --start-video")
        args.out = new_output(args.out, args.default_out, ".mp4")  # checked before the models load
        clip_size = mp4_size(start_video) if start_video is not None else None
        size = start_image_size(args.image, args.resolution, args.frames, args.device, long_video=long_video,
                                dimensions=None if args.image is not None else clip_size)
        start_clip, start_frames = None, 0
        if start_video is not None:
            start_clip, first, start_frames = load_start_clip(
                start_video, size, args.fit, None if settings.include_start else settings.context_frames)
        if long_video:  # the windows asked, counted at the window length asked; a draft renders the first few
            size = size.with_windows(count_windows(args.frames, start_frames))
        args.frames, windows = size.frames, size.windows or 1
        board = storyboard(prompts, windows)
        try:
            plan = WindowPlan(windows, args.frames, settings.context_frames, start_frames, settings.include_start,
                              frozenset(k for k, p in enumerate(board) if p.cut))
        except ValueError as e:  # e.g. context frames the draft's shorter windows cannot hold: say which size
            raise ValueError(f"{e} ({size.describe()})") from None
        if rank_zero:  # stdout, like "wrote": stderr is for the bar and errors
            print(f"size: {size.describe(args.fps if long_video else None, asked, plan.total)}", flush=True)
            if clip_size is not None and clip_size != (size.width, size.height):
                print(f"start video: {clip_size[0]}x{clip_size[1]}, fitted ({args.fit}) to {size.width}x{size.height} "
                      "like the start image", flush=True)
        prior = load_start_image(args.image, args.resolution, args.fit, size) if args.image is not None else first
    shots, sources, first_window = {}, {}, 0 if continued is None else continued.first
    if plan.cuts:  # rank 0 retrieves the shots' priors, every rank renders from them
        from ..video.resume import known_shots
        from ..video.shots import shot_priors

        def find():
            known = () if continued is None else known_shots(continued.old, board)
            if not [k for k in plan.cuts if k >= first_window and k not in known]:
                return {}, {}  # every cut to render is recorded: no folder to index
            return shot_priors(board, prior.shape[2], prior.shape[1], folder=args.shot_folder(), first=first_window,
                               known=known)

        shots, sources = find() if sp is None else sp.from_rank_zero(find)
    profile = args.stage_profile = StageProfile(args.device, enabled=getattr(args, "profile", False) and rank_zero)
    with profile.stage("load"):
        paths = resolve_models(args) if sp is None else sp.from_rank_zero(lambda: resolve_models(args))
        encoders = load_encoders(args, paths) if rank_zero else None
        dit, vae = load_dit_and_vae(args, paths)
        if rank_zero:
            family = dit.family
            print(f"model: {family.describe()}: {dit.family_reason}; {family.recommendation()}", flush=True)
        if profile.enabled:
            encoders.load()  # loading, not the first encode, pays for reading the encoders' files
    frame_vae = CoreFrameVAE(vae)
    # each window's decode chunks, planned now so the bar's total is known before it starts (under torchrun the
    # decode is split by ranks and reports no chunks)
    chunks = frame_vae.plan_decode(latent_shape(args.frames, prior.shape[1], prior.shape[2])) if sp is None else 0
    bar = StageBar(windows, args.steps, chunks, disable=not rank_zero, first=first_window)
    frame_vae.progress = bar.decoded
    profile.instrument(dit=dit, encoders=encoders, vae=frame_vae)
    if encoders is not None:  # every window's prompt in the prompt template of the model's family
        encoders = TemplateEncoders(encoders, dit.family.template, dit.family.image_interleave)
    if sp is not None:
        from ..parallel import ParallelFrameVAE, RankZeroEncoders

        sp.attach(dit)
        encoders, frame_vae = RankZeroEncoders(sp, encoders), ParallelFrameVAE(sp, frame_vae)
    metadata = {"magic141": {"prompts": prompts, "seed": settings.seed, "steps": settings.steps, "windows": windows,
                             "models": {k: str(v) for k, v in paths.items() if v is not None}}}
    hooks = {}
    if not rank_zero:
        sink = nullcontext(_NoWriter())
    elif long_video:
        sink = long_file(args.out, settings, board, prior, args.frames, start_clip, shots, sources, dit, vae,
                         metadata, continued)
        shots = sink.shots
        hooks = dict(plan=sink.plan, resume=sink.handover, on_window=sink.window_done)
    else:
        sink = Mp4Writer(args.out, settings.fps, settings.quality, metadata)
    try:
        with profile.wrap_exit("MP4 write", sink) as writer:  # the write of each window, and the file's finishing
            generate_long_video(dit, encoders, frame_vae, prior, [p.text for p in board], args.frames,
                                profile.wrap("MP4 write", writer.write), settings, start_clip=start_clip,
                                shots=shots, on_step=bar.sampled, on_stage=bar.staged, **hooks)
    finally:
        bar.close()  # also on an error (a full disk while writing): its message then starts on a line of its own
    return (Path(args.out) if rank_zero else None), plan


def long_file(out, settings, board, prior, window_frames, start_clip, shots, sources, dit, vae, metadata, continued):
    """The long video's `LongVideoFile`: a new video with its sidecar, or the continuation of a recorded one (its
    models checked against the ones loaded)."""
    from ..video.resume import LongVideoFile, check_models
    from ..video.sidecar import fingerprint

    models = {"transformer": fingerprint(dit), "VAE": fingerprint(vae)}
    if continued is None:
        return LongVideoFile.create(out, settings, board, prior, window_frames, start_clip=start_clip, shots=shots,
                                    shot_sources=sources, models=models, metadata=metadata)
    check_models(continued.old, models)
    return LongVideoFile.resume(out, continued.old, continued.first, settings, board, shots=shots,
                                shot_sources=sources, models=models, metadata=metadata)


class StageBar:
    """One tqdm bar over every stage of every window, each a step: text encode, VAE encode, each sampler step, each
    VAE decode chunk (`decode_chunks` per window, planned before the bar starts, so its total never changes), the
    MP4 write. Its description names the window and the stage running now. While it shows, log records (ours,
    transformers' and Python warnings) print above it, never into it."""

    NEXT = {"text encode": "VAE encode", "VAE encode": "sampling", "write": "text encode"}

    def __init__(self, windows: int, steps: int, decode_chunks: int, disable: bool = False, first: int = 0):
        self.windows, self.steps, self.window = windows, steps, first
        route_library_logs()
        self._logs_above = logging_redirect_tqdm()  # the root logger's console handler writes through tqdm
        self._logs_above.__enter__()
        self.bar = tqdm(total=(windows - first) * (steps + 3 + decode_chunks), unit="step", disable=disable)
        self._describe(first, "text encode")

    def _describe(self, window: int, stage: str) -> None:
        self.window = window
        self.bar.set_description_str(f"window {window + 1}/{self.windows}: {stage}", refresh=False)

    def staged(self, window: int, name: str) -> None:
        if name == "write" and window + 1 == self.windows:
            self._describe(window, "done")
        else:
            self._describe(window + (name == "write"), self.NEXT[name])
        self.bar.update(1)

    def sampled(self, window: int, step) -> None:
        self._describe(window, "VAE decode" if step.index + 1 == step.total else "sampling")
        self.bar.update(1)

    def decoded(self, done: int, total: int) -> None:
        self._describe(self.window, "write" if done == total else "VAE decode")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        self._logs_above.__exit__(None, None, None)


def route_library_logs() -> None:
    """Send transformers' log records (it prints them with its own stderr handler) to the root logger, whose console
    handler the CLI controls (above the progress bar, in its format)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()


class _NoWriter:
    """The video writer of ranks other than 0 under torchrun: they decode every frame too, but do not write it."""

    def write(self, frames):
        pass


def cmd_generate(args):
    out, _ = run_video(args, None, args.prompt)
    if out is not None:
        print(f"wrote {out}")
        if args.profile:
            print(args.stage_profile.table())


def cmd_quantize(args):
    from ..weights.int8 import weight_bytes

    args.out = new_output(args.out, "model_int8.safetensors", ".safetensors")  # before minutes of quantizing, not after
    if args.dit is not None:
        from ..dit.loading import load_dit, save_dit

        model, inputs = load_dit(args.dit, dtype=torch.bfloat16, int8=True, family=args.family), [args.dit]
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

    if args.runs < 1:
        raise ValueError(f"--runs must be at least 1, got {args.runs}")
    if args.json is not None:  # a new file, checked before the minutes of benchmarks
        args.json = new_output(args.json, "bench.json", ".json", "--json")
    table = run_benchmarks(REPO / "benchmarks", quick=args.quick, out=args.json, runs=args.runs, comfyui=args.comfyui,
                           smoke=args.smoke)
    failed = sorted({key for key, row in table["ratios"].items() if row["value"] is None})
    if failed:
        raise RuntimeError(f"{len(failed)} benchmark row(s) FAILED (see the table above): {', '.join(failed)}")

