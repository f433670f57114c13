"""Long video cost and memory: time and peak RSS for 1, 2, 4, 8 windows at a small config, each in a fresh process.

Prints time(N) / (N x time(1)) (goal <= 1.05: linear cost) and peak RSS(N) / peak RSS(1) (goal ~1: flat memory).
Run:  python benchmarks/long_video.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def child(windows: int, size: int, frames: int):
    import torch

    from magic141_core import Conditioning, TextConditioning, tiny
    from magic141_core.demo import random_dit
    from magic141_core.long_video import CoreFrameVAE, generate_long_video, window_seeds
    from magic141_core.vae import random_vae, tiny_vae

    class Encoders:  # fixed conditioning: this measures the window loop, not the encoders
        def encode(self, prompt, image, negative=False):
            g = torch.Generator().manual_seed(0)
            return Conditioning(TextConditioning(torch.randn(1, 32, 32, generator=g), torch.ones(1, 32),
                                                 torch.randn(1, 16, generator=g)))

    dit, vae = random_dit(tiny(), seed=0), CoreFrameVAE(random_vae(tiny_vae(), seed=1))
    prior = torch.rand(1, size, size, 3)
    run = lambda n: generate_long_video(dit, Encoders(), vae, prior, ["go"] * n, window_seeds(0, n), frames,  # noqa
                                        lambda f: None)
    run(1)  # warm-up (kernels, allocator)
    start = time.perf_counter()
    run(windows)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller frames and windows")
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    size, frames = (32, 9) if args.quick else (64, 21)
    if args.child:
        child(args.child, size, frames)
        return
    rows = {}
    for n in (1, 2, 4, 8):
        cmd = [sys.executable, __file__, "--child", str(n)] + (["--quick"] if args.quick else [])
        rows[n] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        print(f"{n} windows: {rows[n]['seconds']:.2f} s, peak RSS {rows[n]['peak_kb'] / 1024:.0f} MB", flush=True)
    ratios = {"time(8) / (8 x time(1))": rows[8]["seconds"] / (8 * rows[1]["seconds"]),
              "peak RSS(8) / peak RSS(1)": rows[8]["peak_kb"] / rows[1]["peak_kb"]}
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"ratios": ratios, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
