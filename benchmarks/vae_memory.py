"""VAE decode memory and time vs clip length: our streaming decode, our one-pass decode, diffusers' tiled and untiled
decode of the same weights (AutoencoderKLHunyuanVideo), at a small config on this machine, in one run.

Each (method, length) runs in a fresh subprocess, so peak RSS (VmHWM: weights, torch and activations) of one case
never mixes with another's. "delta" is the peak minus the RSS just before decoding. Streaming consumes each chunk
as it comes (as a video writer would) and keeps nothing. Prints a table and the ratios: streaming memory should be
flat (max/min within 10 %) while one pass grows; streaming time should stay within ~1.15x of one pass.
Run:  python benchmarks/vae_memory.py [--lengths 5 11 21 41] [--size 128] [--repeat 2]  (about 15 minutes here)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from magic141_core.vae import Tiling, VAEConfig, random_vae  # noqa: E402
from magic141_core.vae.streaming import resolve_tiling  # noqa: E402

CONFIG = VAEConfig(block_out_channels=(32, 64, 64, 64), layers_per_block=2, norm_groups=32)  # 4 levels like 128..512
METHODS = ("ours_stream", "ours_one_pass", "diffusers_tiled", "diffusers_untiled")


def emit(text: str = "") -> None:
    """Benchmark output goes to stdout as it comes (the figures are the point of this script)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _cpu_seconds() -> float:
    """User + system CPU time of this process: less disturbed than wall time when other jobs share the cores."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def diffusers_model(vae, tiled: bool):
    from diffusers import AutoencoderKLHunyuanVideo

    c = vae.config
    model = AutoencoderKLHunyuanVideo(
        latent_channels=c.latent_channels, block_out_channels=c.block_out_channels,
        layers_per_block=c.layers_per_block, norm_num_groups=c.norm_groups,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4, up_block_types=("HunyuanVideoUpBlock3D",) * 4,
    )
    model.load_state_dict(vae.state_dict(), strict=True)
    if tiled:
        model.enable_tiling()  # diffusers' defaults: 256 px tiles at stride 192, 16-frame temporal tiles at stride 12
    else:
        model.use_framewise_decoding = False
    return model.eval()


def run_case(method: str, latent_frames: int, size: int) -> dict:
    """One decode in this process; returns its time, peak RSS and a checksum of the frames."""
    torch.manual_seed(0)
    vae = random_vae(CONFIG, seed=0)
    z = torch.randn(1, 16, latent_frames, size // 8, size // 8, generator=torch.Generator().manual_seed(1))
    model = diffusers_model(vae, method == "diffusers_tiled") if method.startswith("diffusers") else None
    plan = resolve_tiling(vae, z.shape, None, None, decoder=True, stream=True)  # what decode_stream(z) would pick
    base = rss("VmRSS")
    cpu_start = _cpu_seconds()
    start = time.perf_counter()
    frames, checksum = 0, 0.0
    with torch.no_grad():
        if method == "ours_stream":
            for chunk in vae.decode_stream(z, plan):  # each chunk is used, then dropped
                frames += chunk.shape[2]
                checksum += chunk.double().sum().item()
        else:
            if method == "ours_one_pass":
                out = vae.decode(z, Tiling.off())
            else:
                out = (model.decode(z).sample / 2 + 0.5).clamp(0, 1)
            frames, checksum = out.shape[2], out.double().sum().item()
            del out
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    return dict(method=method, latent_frames=latent_frames, frames=frames, seconds=seconds, cpu=cpu, peak=rss("VmHWM"),
                delta=rss("VmHWM") - base, mean=checksum / (frames * 3 * size * size),
                plan=str(plan) if method == "ours_stream" else None)


def measure(method: str, latent_frames: int, size: int) -> dict:
    """One case in a fresh subprocess."""
    out = subprocess.run(
        [sys.executable, __file__, "--case", method, str(latent_frames), "--size", str(size)],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def keep_best(results: dict, key, run: dict) -> dict:
    """Across repeats: the fastest time (other processes only ever slow a run down) and the highest peak."""
    best = results.get(key)
    if best is None:
        return run
    fastest = dict(min(best, run, key=lambda r: r["seconds"]))
    fastest["peak"], fastest["delta"] = max(best["peak"], run["peak"]), max(best["delta"], run["delta"])
    fastest["cpu"] = min(best["cpu"], run["cpu"])
    return fastest


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[5, 11, 21, 41], help="latent frames")
    parser.add_argument("--size", type=int, default=128, help="frame height and width in pixels")
    parser.add_argument("--repeat", type=int, default=2, help="rounds over all cases; the fastest run is reported")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--quick", action="store_true", help="lengths 5 and 41, one round, ours only")
    parser.add_argument("--smoke", action="store_true", help="--quick at 32 px: runs every row, in seconds")
    parser.add_argument("--json", type=Path, help="also write the summary ratios here")
    parser.add_argument("--case", nargs=2, metavar=("METHOD", "LATENT_FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        emit(json.dumps(run_case(args.case[0], int(args.case[1]), args.size)))
        return
    if args.smoke:
        args.quick, args.size = True, 32
    if args.quick:
        args.lengths, args.repeat = [5, 41], 1
        args.methods = ["ours_stream", "ours_one_pass"]

    gib = 2**30
    emit(f"VAE decode, config {CONFIG.block_out_channels} x{CONFIG.layers_per_block}, {args.size}x{args.size} px, "
          f"fp32, {torch.get_num_threads()} threads, torch {torch.__version__}")
    results = {}
    for round_ in range(args.repeat):  # whole rounds, so a burst of load elsewhere hits one run of a case, not all
        for t in args.lengths:
            for method in args.methods:
                r = measure(method, t, args.size)
                results[method, t] = keep_best(results, (method, t), r)
                emit(f"  [{round_ + 1}] {method:18s} T={t:3d} ({r['frames']:3d} frames): {r['seconds']:7.2f} s (cpu {r['cpu']:6.1f} s)  "
                      f"peak {r['peak'] / gib:5.2f} GiB  delta {r['delta'] / gib:5.2f} GiB  mean {r['mean']:.5f}"
                      + (f"  {r['plan']}" if r["plan"] else ""))
    emit("\nlatent  frames | peak RSS GiB: " + " ".join(f"{m:>17s}" for m in args.methods)
          + " | stream/one-pass: memory  time | diffusers tiled/one-pass time")
    for t in args.lengths:
        row = [results[m, t] for m in args.methods]
        line = f"{t:6d} {row[0]['frames']:7d} |              " + " ".join(f"{r['peak'] / gib:17.2f}" for r in row)
        if ("ours_stream", t) in results and ("ours_one_pass", t) in results:
            s, o = results["ours_stream", t], results["ours_one_pass", t]
            line += f" | {s['peak'] / o['peak']:22.2f} {s['seconds'] / o['seconds']:5.2f}"
        if ("diffusers_tiled", t) in results and ("ours_one_pass", t) in results:
            line += f" | {results['diffusers_tiled', t]['seconds'] / results['ours_one_pass', t]['seconds']:29.2f}"
        emit(line)
    for m in args.methods:
        peaks = [results[m, t]["peak"] for t in args.lengths]
        deltas = [results[m, t]["delta"] for t in args.lengths]
        emit(f"{m:18s} peak max/min over lengths: {max(peaks) / min(peaks):.2f} "
              f"(activations only: {max(deltas) / min(deltas):.2f})")
    times = {m: [results[m, t]["seconds"] for t in args.lengths] for m in args.methods}
    cpu = {m: [results[m, t]["cpu"] for t in args.lengths] for m in args.methods}
    for a, b in (("ours_stream", "ours_one_pass"), ("diffusers_tiled", "ours_one_pass")):
        if a in times and b in times:
            for label, values in (("wall", times), ("cpu", cpu)):
                ratios = [x / y for x, y in zip(values[a], values[b])]
                emit(f"{a} / {b} {label} time: {' '.join(f'{r:.2f}' for r in ratios)} "
                     f"(total {sum(values[a]) / sum(values[b]):.2f})")
    if args.json:
        longest, shortest = max(args.lengths), min(args.lengths)
        stream = {t: results["ours_stream", t] for t in args.lengths}
        summary = {f"streaming peak {longest} / {shortest} latent frames": stream[longest]["peak"] / stream[shortest]["peak"],
                   "streaming time / untiled time": sum(times["ours_stream"]) / sum(times["ours_one_pass"])}
        args.json.write_text(json.dumps({"ratios": summary}, indent=1))


if __name__ == "__main__":
    main()
