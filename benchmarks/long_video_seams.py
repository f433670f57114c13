"""Long video seams and colour drift, measured on hand-set stand-ins whose every frame has a known right answer
(`magic141_core.demo.standins`, `magic141_core.demo.passthrough`); no trained model is involved, so these figures
measure the runner's hand-over (which frames condition a window, which are written, what the colours are matched
to), not a model's quality.

- pan: a striped clip panning 2 px per frame is extended by windows of the pan stand-in (it continues the motion its
  context shows; shown one frame it holds still), the clip written first. Rows: the seam ratio of the whole file
  (mean change at the seams / inside windows: 1.0 = the seams move like every other frame) and the pan speed after
  the last seam / the clip's, for context 1 (the classic one-frame seam) and the default context.
- still: the demo's pass-through DiT and VAE (the real architectures, hand-set to hold the start image) chained from
  one image: the mean change at the seams in grey levels (0..255), context 1 and the default.
- drift: the darken stand-in (each window's new frames are its start 1 % darker and 1 % blurred, then 8-bit rounded:
  the compounding case) over 60 windows of 9 frames: how far the last frame's mean colour is from the start's (RGB,
  0..1), with the colour anchor "start", "previous" and no colour matching.
Noise augmentation is off for the stand-ins: they copy their reference, where a trained model denoises it.
Run:  python benchmarks/long_video_seams.py [--quick | --smoke] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from magic141_core import Conditioning, TextConditioning  # noqa: E402
from magic141_core.demo.standins import DarkenDiT, PanDiT, StripeVAE, pan_clip, pan_speed  # noqa: E402
from magic141_core.video.long_video import LongVideoSettings, generate_long_video  # noqa: E402
from magic141_core.video.seams import measure_seams  # noqa: E402
from magic141_core.video.windows import DEFAULT_CONTEXT_FRAMES, WindowPlan  # noqa: E402

SPEED = 2  # the pan's whole pixels per frame


class Encoders:  # the stand-ins ignore the text; its shape fits any config
    def __init__(self, text_dim: int = 8, pooled_dim: int = 8):
        self.dims = text_dim, pooled_dim

    def encode(self, prompt, image, negative=False):
        return Conditioning(TextConditioning(torch.zeros(1, 4, self.dims[0]), torch.ones(1, 4),
                                             torch.zeros(1, self.dims[1])))


def render(model, vae, prior, windows, frames, encoders=None, start_clip=None, **settings):
    written = []
    settings = LongVideoSettings(noise_augmentation=0.0, **settings)
    generate_long_video(model, encoders or Encoders(), vae, prior, ["go"] * windows, frames, written.append, settings,
                        start_clip=start_clip)
    return torch.cat(written)


def pan(context: int, windows: int, frames: int) -> dict:
    clip = pan_clip(13, speed=SPEED)
    video = render(PanDiT(), StripeVAE(), clip[:1], windows, frames, start_clip=clip, context_frames=context,
                   include_start=True, steps=1)
    plan = WindowPlan(windows, frames, context, len(clip), include_start=True)
    report = measure_seams(video.numpy(), plan.seams())
    profiles = video[:, 0].float() / 255
    return {"seam ratio": report.seam_ratio, "speed kept": pan_speed(profiles[-2:]) / SPEED}


def still(context: int, windows: int, frames: int) -> float:
    from magic141_core.demo.models import demo_dit_config
    from magic141_core.demo.passthrough import passthrough_dit, passthrough_vae
    from magic141_core.vae import tiny_vae
    from magic141_core.video.long_video import CoreFrameVAE

    config = demo_dit_config()
    vae = CoreFrameVAE(passthrough_vae(dataclasses.replace(tiny_vae(), block_out_channels=(16, 16, 32, 32))))
    y, x = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    prior = torch.stack([x, y, (x + y) / 2], -1)[None]
    video = render(passthrough_dit(config), vae, prior, windows, frames, Encoders(config.text_dim, config.pooled_dim),
                   context_frames=context)
    return measure_seams(video.numpy(), WindowPlan(windows, frames, context).seams()).seam_diff * 255


def drift(anchor: str | None, windows: int) -> float:
    start = pan_clip(1)
    settings = {"color_match": False} if anchor is None else {"color_anchor": anchor}
    video = render(DarkenDiT(), StripeVAE(), start, windows, 9, steps=1, **settings)
    return (video[-1].float().div(255).mean((0, 1)) - start[0].mean((0, 1))).norm().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer windows")
    parser.add_argument("--smoke", action="store_true", help="the fewest windows: runs every row, in seconds")
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args()
    pan_windows, drift_windows = (2, 3) if args.smoke else (4, 20) if args.quick else (6, 60)
    pan_frames = 9 if args.smoke else 17
    n = DEFAULT_CONTEXT_FRAMES
    ratios = {}
    for context in (1, n):
        row = pan(context, pan_windows, pan_frames)
        ratios[f"pan seam / inside change, context {context}"] = row["seam ratio"]
        ratios[f"pan speed after the seams / before, context {context}"] = row["speed kept"]
    for context in (1, n):
        ratios[f"still seam change (grey levels), context {context}"] = still(context, 2 if args.smoke else 3, 9)
    for anchor in ("start", "previous", None):
        how = f"{anchor} anchor" if anchor else "no colour match"
        ratios[f"colour drift after {drift_windows} windows, {how}"] = drift(anchor, drift_windows)
    for key, value in ratios.items():
        print(f"{key}: {value:.4f}", flush=True)
    if args.json:  # the table's rows do not depend on the configuration: the drift rows are named for 60 windows
        rows = {key.replace(f"after {drift_windows} windows", "after 60 windows"): v for key, v in ratios.items()}
        args.json.write_text(json.dumps({"ratios": rows, "windows": {"pan": pan_windows, "drift": drift_windows}},
                                        indent=1))


if __name__ == "__main__":
    main()
