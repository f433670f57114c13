"""Editing a long video (issue 30): what a re-roll costs against a full render, whether a resumed run gives the
uninterrupted run's frames, and what the sidecar costs on disk and to read at 540p.

- re-roll: tiny random models render 12 windows (with the sidecar), then window 8 on again from the sidecar with
  another seed; the ratio is the re-roll's cost (reading and checking the sidecar, linking the 7 reused windows,
  rendering 5, joining 12) over the full render's, in CPU seconds of this process and its ffmpeg children (wall
  time on a shared machine swings by 2x between two identical runs; CPU time does not, with torch on one thread
  so that no idle worker spins). 5/12 = 0.417 is the rendering share alone, were every window alike (window 1 is
  cheaper: its reference is one frame, not five), so a second row compares the re-roll with the same 5 windows
  inside the full render (1.0: nothing but those windows; above it, the sidecar reads and the join of 12 windows).
- cancel: the same 12 windows stopped (KeyboardInterrupt, as Cancel) in window 5, then resumed from the sidecar: the
  share of the resumed MP4's decoded frames equal to the uninterrupted MP4's, bit for bit (1.0).
- sidecar at 540p: three 81-frame windows of 960 x 544 frames (the demo photo, upscaled, panning 2 px a frame; no
  model) written through the long-video writer, context 5: the sidecar's bytes per window (the window's MP4 at CRF
  19, which depends on the picture, plus its hand-over: 5 frames as uint8, exactly 7,833,600 bytes) and the seconds
  to read and check one window (its files hashed, the hand-over loaded).
Run:  python benchmarks/long_video_resume.py [--quick | --smoke] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from magic141_core import Conditioning, TextConditioning, tiny  # noqa: E402
from magic141_core.dit.loading import random_dit  # noqa: E402
from magic141_core.vae import random_vae, tiny_vae  # noqa: E402
from magic141_core.video.long_video import CoreFrameVAE, LongVideoSettings, WindowDone, generate_long_video  # noqa
from magic141_core.video.mp4 import read_mp4  # noqa: E402
from magic141_core.video.resume import LongVideoFile, continued_board, first_window  # noqa: E402
from magic141_core.video.sidecar import SidecarReader, sidecar_folder  # noqa: E402
from magic141_core.video.windows import WindowPrompt  # noqa: E402


class Encoders:  # fixed conditioning: this measures the windows and the files, not the encoders
    def encode(self, prompt, image, negative=False):
        g = torch.Generator().manual_seed(0)
        return Conditioning(TextConditioning(torch.randn(1, 32, 32, generator=g), torch.ones(1, 32),
                                             torch.randn(1, 16, generator=g)))


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the ffmpeg runs), user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def render(models, video: LongVideoFile, settings, stop_at=None) -> list[float]:
    """Render what `video` asks for; returns the CPU-time mark after each window (its files written)."""
    marks = []

    def on_step(window, step):
        if window == stop_at:
            raise KeyboardInterrupt

    def on_window(done):
        video.window_done(done)
        marks.append(cpu_seconds())

    with video:
        generate_long_video(models[0], Encoders(), models[1], video.prior, video.prompts, video.plan.window_frames,
                            video.write, settings, plan=video.plan, shots=video.shots, resume=video.handover,
                            on_step=on_step, on_window=on_window)
    return marks


def editing(folder: Path, size: int, frames: int, windows: int, reroll: int, cancel: int) -> dict:
    """Render `windows` windows, re-roll from window `reroll` (1-based), stop in window `cancel` and resume."""
    torch.set_num_threads(1)  # CPU time then counts work, not the spinning of idle worker threads
    models = random_dit(tiny(), seed=0), CoreFrameVAE(random_vae(tiny_vae(), seed=1))
    settings = LongVideoSettings(seed=5, fps=24.0)
    prior = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(2))
    board = [WindowPrompt("go")] * windows
    render(models, LongVideoFile.create(folder / "warm-up.mp4", settings, board[:1], prior, frames), settings)
    start = cpu_seconds()
    marks = render(models, LongVideoFile.create(folder / "full.mp4", settings, board, prior, frames), settings)
    full = cpu_seconds() - start
    same = marks[-1] - marks[reroll - 2]  # windows reroll..windows of the full render

    start = cpu_seconds()
    old = SidecarReader.read(sidecar_folder(folder / "full.mp4"))
    first = first_window(old, reroll - 1)
    again = dataclasses.replace(settings, seed=6)
    video = LongVideoFile.resume(folder / "reroll.mp4", old, first, again, continued_board(old, first, None))
    reads = cpu_seconds() - start  # the sidecar read and checked, the reused windows' files hashed and linked
    render(models, video, again)
    rerolled = cpu_seconds() - start

    try:
        render(models, LongVideoFile.create(folder / "stopped.mp4", settings, board, prior, frames), settings,
               stop_at=cancel - 1)
    except KeyboardInterrupt:
        pass
    old = SidecarReader.read(sidecar_folder(folder / "stopped.mp4"))
    first = first_window(old, None)
    render(models, LongVideoFile.resume(folder / "resumed.mp4", old, first, settings, continued_board(old, first,
                                                                                                      None)), settings)
    a, b = read_mp4(folder / "full.mp4")[0], read_mp4(folder / "resumed.mp4")[0]
    equal = float((a == b).all(axis=(1, 2, 3)).mean()) if a.shape == b.shape else 0.0
    print(f"full render {full:.2f} CPU s, re-roll from window {reroll} of {windows} {rerolled:.2f} CPU s; resumed "
          f"after a stop in window {cancel}: {equal:.3f} of the frames equal", flush=True)
    return {"re-roll": rerolled / full, "same windows": rerolled / same, "equal": equal,
            "cpu seconds": {"full": full, "re-roll": rerolled, "sidecar reads": reads, "the same windows": same}}


def sidecar_540p(folder: Path, frames: int, windows: int, width: int = 960, height: int = 544) -> dict:
    from PIL import Image

    from magic141_core.video.start_image import fit_image

    photo = torch.from_numpy(np.array(Image.open(REPO / "docs" / "assets" / "demo_photo.jpg").convert("RGB")))
    wide = fit_image(photo[None].float() / 255, width + 2 * frames * windows, height)[0]  # room to pan
    pan = lambda i: (wide[:, 2 * i: 2 * i + width] * 255).round().to(torch.uint8)  # noqa: E731
    settings = LongVideoSettings(fps=24.0)
    video = LongVideoFile.create(folder / "540p.mp4", settings, [WindowPrompt("go")] * windows,
                                 pan(0)[None].float() / 255, frames)
    handover, written = video.handover, 0
    for k in range(windows):
        new = torch.stack([pan(written + i) for i in range(video.plan.new_frames(k))])
        video.write(new)
        handover = handover.after(new, video.plan, settings)
        written += len(new)
        video.window_done(WindowDone(k, windows, written, handover))
    video.close()
    sidecar = sidecar_folder(folder / "540p.mp4")
    per_window = [sum((sidecar / w[name]["name"]).stat().st_size for name in ("segment", "state"))
                  for w in video.record.windows]
    start = time.perf_counter()
    reader = SidecarReader.read(sidecar)
    for k in range(1, windows + 1):
        reader.handover(k)
    reader.segments(windows)
    read = (time.perf_counter() - start) / windows
    print(f"540p sidecar: {np.mean(per_window) / 1e6:.2f} MB per window ({per_window}), read and checked in "
          f"{read * 1000:.0f} ms per window", flush=True)
    return {"bytes": float(np.mean(per_window)), "read": read}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller frames")
    parser.add_argument("--smoke", action="store_true", help="the smallest run: every row, in seconds")
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args()
    size, frames = (16, 9) if args.smoke else (32, 9) if args.quick else (128, 21)
    with tempfile.TemporaryDirectory() as tmp:  # the smoke run: 4 windows, re-roll from 3, stop in 2; 160 x 96
        edit = editing(Path(tmp), size, frames, *((4, 3, 2) if args.smoke else (12, 8, 5)))
        disk = sidecar_540p(Path(tmp), *((9, 2, 160, 96) if args.smoke else (81, 3)))
    ratios = {"re-roll from window 8 of 12 / full render": edit["re-roll"],
              "re-roll from window 8 of 12 / those 5 windows in the full render": edit["same windows"],
              "resumed after Cancel in window 5: frames equal to the uninterrupted run": edit["equal"],
              "sidecar MB per window, 540p": disk["bytes"] / 1e6,
              "sidecar read and check seconds per window, 540p": disk["read"]}
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"ratios": ratios, "cpu seconds": edit["cpu seconds"]}, indent=1))


if __name__ == "__main__":
    main()
