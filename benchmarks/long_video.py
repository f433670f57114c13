"""Long video cost and memory at a small config: the steady-state time of each window and the peak RSS, for 1 and
8 windows, each in a fresh process.

Each process first renders one window and throws it away (kernels, allocator: warm-up), then times every window of
the measured run; its first window is set aside too (it alone has no seam to drop and no re-encoded reference).
Prints the median window time of the later half of the steady windows over the earlier half (1.0: a window costs
the same however far into the video it is, so cost is linear), their spread ((max - min) / median), the steady
window time over a 1-window run's window, and peak RSS(8) / peak RSS(1) (~1: flat memory). Windows run with the
shipped settings, so each later window carries the default motion context (5 frames: a 2-latent-frame reference).
Run:  python benchmarks/long_video.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def child(windows: int, size: int, frames: int):
    import torch

    from magic141_core import Conditioning, TextConditioning, tiny
    from magic141_core.dit.loading import random_dit
    from magic141_core.video.long_video import CoreFrameVAE, LongVideoSettings, generate_long_video
    from magic141_core.vae import random_vae, tiny_vae

    class Encoders:  # fixed conditioning: this measures the window loop, not the encoders
        def encode(self, prompt, image, negative=False):
            g = torch.Generator().manual_seed(0)
            return Conditioning(TextConditioning(torch.randn(1, 32, 32, generator=g), torch.ones(1, 32),
                                                 torch.randn(1, 16, generator=g)))

    dit, vae = random_dit(tiny(), seed=0), CoreFrameVAE(random_vae(tiny_vae(), seed=1))
    prior = torch.rand(1, size, size, 3)
    marks = []
    settings = LongVideoSettings()  # the shipped defaults: motion context of DEFAULT_CONTEXT_FRAMES frames
    run = lambda n: generate_long_video(dit, Encoders(), vae, prior, ["go"] * n, frames, lambda f: None,  # noqa
                                        settings, on_window=lambda done: marks.append(time.perf_counter()))
    run(1)  # warm-up (kernels, allocator)
    marks = [time.perf_counter()]
    run(windows)
    seconds = [b - a for a, b in zip(marks, marks[1:])]
    print(json.dumps({"window seconds": seconds, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller frames")
    parser.add_argument("--smoke", action="store_true", help="the smallest frames: runs every row, in seconds")
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    size, frames = (16, 9) if args.smoke else (32, 9) if args.quick else (64, 21)  # windows longer than the context
    if args.child:
        child(args.child, size, frames)
        return
    rows = {}
    for n in (1, 8):
        cmd = [sys.executable, __file__, "--child", str(n)] + (["--quick"] if args.quick else []) \
            + (["--smoke"] if args.smoke else [])
        rows[n] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        print(f"{n} windows: " + " ".join(f"{s:.2f}" for s in rows[n]["window seconds"])
              + f" s per window, peak RSS {rows[n]['peak_kb'] / 1024:.0f} MB", flush=True)
    steady = rows[8]["window seconds"][1:]  # the first window is unlike the others (see above)
    half = len(steady) // 2
    median = statistics.median
    ratios = {"window time, later / earlier windows": median(steady[half:]) / median(steady[:half]),
              "window time spread (max - min) / median": (max(steady) - min(steady)) / median(steady),
              "steady window / a 1-window run's window": median(steady) / rows[1]["window seconds"][0],
              "peak RSS(8) / peak RSS(1)": rows[8]["peak_kb"] / rows[1]["peak_kb"]}
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"ratios": ratios, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
