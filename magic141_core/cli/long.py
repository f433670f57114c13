"""The CLI's `long`: a long video from an image (or a clip to extend), with shots retrieved from a prior folder; and
the continuation of a recorded one (`--resume`): resume after a stop, or re-roll from a window."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .commands import run_video

# flags that shape a recorded video: with --resume they come from its sidecar, and giving one is refused
RECORDED = ("--image", "--start-video", "--include-start", "--frames", "--resolution", "--fit", "--fps", "--crf",
            "--context-frames", "--color-anchor", "--no-color-match", "--noise-augmentation")


@dataclass
class Continued:
    """A recorded long video to continue: its sidecar, the first window to render, the storyboard, the settings
    (the recorded ones, with this run's seed, steps, shift, guidance and cfg) and its prior."""

    old: object  # video.sidecar.SidecarReader
    first: int
    board: list
    settings: object  # video.long_video.LongVideoSettings
    prior: torch.Tensor


def shot_folder(args):
    """The `priors.FolderPrior` of --prior-folder (indexed with --prior-clip), for the storyboard's [cut] lines."""
    from ..priors import ClipEmbedder, FolderPrior, ImageIndex

    if args.prior_folder is None:
        return None
    if args.prior_clip is None:
        raise ValueError("--prior-folder needs --prior-clip (a Hugging Face CLIPModel folder) to retrieve its images")
    embedder = ClipEmbedder(args.prior_clip, device=args.device)
    index = ImageIndex(args.prior_folder)
    index.update(embedder)
    return FolderPrior(index, embedder)


def continued(args, prompts: str | None) -> Continued:
    """The continuation --resume FILE [--from K] asks for, checked before any model loads: the sidecar read and
    checked, window K (1-based; default: the first unfinished) within it, the flags it allows."""
    from ..video.long_video import LongVideoSettings
    from ..video.resume import check_continues, continued_board, first_window
    from ..video.sidecar import SAMPLING, SidecarReader, locate_sidecar
    from ..video.windows import storyboard

    given = [flag for flag in RECORDED if flag in args.given]
    if given:
        raise ValueError(f"{', '.join(given)}: a resumed video keeps the size, prior and settings it was made with "
                         f"(they come from {args.resume}); leave {'them' if len(given) > 1 else 'it'} out, or start a "
                         "new video")
    if args.prompt is not None and prompts is not None:
        raise ValueError("give --prompt (window K's new prompt) or --prompts (the storyboard from K on), not both")
    old = SidecarReader.read(locate_sidecar(args.resume))
    first = first_window(old, None if args.from_window is None else args.from_window - 1)
    settings = dataclasses.replace(LongVideoSettings(**old.record.settings), **{  # this run's, where given
        name: getattr(args, name) for name in SAMPLING if f"--{name}" in args.given})
    windows = None if args.windows is None and args.seconds is None else _windows(args, old)
    board = storyboard(prompts, windows or len(old.record.board)) if prompts is not None else None
    board = continued_board(old, first, board, windows)
    if args.prompt is not None:
        board[first] = dataclasses.replace(board[first], text=storyboard(args.prompt, 1)[0].text)
    prior = old.priors()[0]
    check_continues(old, settings, prior.shape[2], prior.shape[1], old.record.window_frames, old.record.start_frames)
    return Continued(old, first, board, settings, prior)


def _windows(args, old) -> int:
    from ..video.windows import count_windows

    duration, unit = (args.windows, "windows") if args.windows is not None else (args.seconds, "seconds")
    settings = old.record.settings
    return count_windows(duration, unit, settings["fps"], old.record.window_frames, settings["context_frames"],
                         old.record.start_frames)


def cmd_long(args):
    from ..runtime.text_file import MAX_PROMPT_BYTES, read_text
    from ..video.windows import count_windows

    args.shot_folder = lambda: shot_folder(args)
    prompts = None if args.prompts is None else read_text(args.prompts[1:], MAX_PROMPT_BYTES, "the prompts file") \
        if args.prompts.startswith("@") else args.prompts
    if args.resume is not None:
        job = continued(args, prompts)
        out, plan = run_video(args, lambda *_: len(job.board), "\n".join(p.text for p in job.board), job)
    else:
        if args.from_window is not None or args.prompt is not None:
            raise ValueError("--from and --prompt re-roll a recorded video: give its sidecar with --resume")
        if args.image is None and args.start_video is None:
            raise ValueError("give --image (the start image) or --start-video (a clip to extend), or both")
        if prompts is None or (args.windows is None and args.seconds is None):
            raise ValueError("a new long video needs --prompts and --seconds or --windows")
        duration, unit = (args.windows, "windows") if args.windows is not None else (args.seconds, "seconds")
        count_windows(duration, unit, args.fps, args.frames, args.context_frames)  # refused before any file is read
        out, plan = run_video(args, lambda frames, start: count_windows(duration, unit, args.fps, frames,
                                                                        args.context_frames, start), prompts,
                              asked=f"{duration:g} s" if unit == "seconds" else None)
    if out is None:  # not rank 0
        return
    print(f"wrote {out} ({plan.windows} windows; sidecar {out.with_suffix('.m141')})")
    if args.report:
        from ..video.mp4 import iter_mp4
        from ..video.seams import measure_seams

        frames, _ = iter_mp4(out)
        starts = plan.window_starts()
        report = measure_seams(frames, plan.seams(), starts, [starts[k] for k in plan.cuts])
        print(report.summary())
