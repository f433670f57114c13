"""Start-image memory vs the file's size: an 8000 x 8000 start image for a 540p video must cost about what a
1000 x 1000 one costs (memory bounded by the output size, not the input's).

Each case runs in a fresh subprocess: import torch and the core, then read and fit the file as the CLI does
(`load_start_image(path, "540p")`: image_files reads it reduced while decoding, then resize + centre crop), and
report the process's peak RSS (VmHWM), the peak minus the RSS just before, and the read's wall time. JPEG files
are decoded small (DCT scaling); PNG has no scaled decoder in Pillow, so `png_strips` inflates it in strips of a
few hundred rows, each decoded by Pillow and box-reduced as it comes (never the full-size image). "old" is the
previous reader: full-size float tensor, then resize.
Run:  python benchmarks/start_image.py [--quick] [--json out.json]   (about a minute here)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, json
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
from PIL import Image, ImageOps
from magic141_core.cli.commands import load_start_image
from magic141_core.video.start_image import fit_image, nearest_bucket

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith(("VmHWM", "VmRSS")):
            yield int(line.split()[1]) * 1024

torch.zeros(1)
before = list(hwm())[1]
start = __import__("time").perf_counter()
path, method = sys.argv[2], sys.argv[3]
if method == "new":
    out = load_start_image(__import__("pathlib").Path(path), "540p")
else:
    with Image.open(path) as image:
        rgb = ImageOps.exif_transpose(image).convert("RGB")
    full = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255)[None]
    out = fit_image(full, *nearest_bucket(full.shape[2], full.shape[1], "540p"), "crop")
seconds = __import__("time").perf_counter() - start
peak = list(hwm())[0]
print(json.dumps({"peak": peak, "delta": peak - before, "seconds": seconds, "shape": list(out.shape)}))
"""


def make_image(path: Path, side: int) -> None:
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    rgb = (np.stack([x, y, (x + y) / 2], -1) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(path, quality=90)


def measure(path: Path, method: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(REPO), str(path), method], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="JPEG and PNG, new reader only")
    parser.add_argument("--smoke", action="store_true", help="small files (500^2 vs 1500^2), new reader only: runs "
                        "every row in seconds, for bench --smoke (the figures are not the benchmark's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sides = (500, 1500) if args.smoke else (1000, 8000)
    rows, ratios = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in ("jpg", "png"):
            for side in sides:
                make_image(Path(tmp) / f"{side}.{suffix}", side)
            for method in ("new",) if args.quick or args.smoke else ("new", "old"):
                small, large = (measure(Path(tmp) / f"{side}.{suffix}", method) for side in sides)
                rows.append((suffix, method, small, large))
                label = {"jpg": "JPEG", "png": "PNG"}[suffix]  # the names bench's table expects
                ratios[f"start image peak RSS 8000^2 / 1000^2, {label}" + ("" if method == "new" else
                                                                                      ", old reader")] = \
                    round(large["peak"] / small["peak"], 3)
    print(f"{'file':5s} {'reader':6s} {'peak 1000^2':>12s} {'peak 8000^2':>12s} {'delta 1000^2':>13s} "
          f"{'delta 8000^2':>13s} {'ratio':>6s} {'s 1000^2':>9s} {'s 8000^2':>9s}")
    for suffix, method, small, large in rows:
        print(f"{suffix:5s} {method:6s} {small['peak'] / 2**20:10.0f}MB {large['peak'] / 2**20:10.0f}MB "
              f"{small['delta'] / 2**20:11.0f}MB {large['delta'] / 2**20:11.0f}MB {large['peak'] / small['peak']:6.2f} "
              f"{small['seconds']:9.2f} {large['seconds']:9.2f}")
    summary = {"ratios": ratios}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
