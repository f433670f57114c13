"""int8 memory: weight bytes int8 / bf16, peak memory while loading (quantize-on-load, pre-quantized, and the naive
build-in-bf16-then-quantize path) divided by the final int8 weight bytes, and CPU forward time int8 / bf16.

Each load runs in a fresh subprocess; peak memory is the process's anonymous RSS (RssAnon, sampled every 2 ms) above
its level after imports, so memory-mapped file pages (reclaimable page cache) are not counted.
Run:  python benchmarks/int8_memory.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# ~0.83 B parameters = 1.66 GB in bf16 (the --quick config is ~0.2 GB)
CONFIGS = {
    "full": dict(hidden_size=2048, num_heads=16, double_blocks=3, single_blocks=6, refiner_blocks=2,
                 text_dim=4096, pooled_dim=768, rope_axes=(16, 56, 56)),
    "quick": dict(hidden_size=1024, num_heads=8, double_blocks=2, single_blocks=4, refiner_blocks=1,
                  text_dim=1024, pooled_dim=768, rope_axes=(16, 56, 56)),
    "smoke": dict(hidden_size=256, num_heads=2, double_blocks=1, single_blocks=1, refiner_blocks=1,
                  text_dim=256, pooled_dim=64, rope_axes=(16, 56, 56)),  # every row's code, in seconds
}


def anon_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(fn, rss=anon_rss):
    """Run fn() while sampling `rss()` (default: anonymous RSS); returns (result, peak bytes above the starting
    level, seconds)."""
    base, peak, done = rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    thread = threading.Thread(target=sample)
    thread.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    return result, max(peak[0], rss()) - base, seconds


def child(mode: str, path: str):
    """One measurement in this (fresh) process; prints a JSON line."""
    import torch

    from magic141_core import load_dit
    from magic141_core.weights.int8 import quantize_linears_, weight_bytes

    loaders = {
        "quantize-on-load": lambda: load_dit(path, int8=True),
        "pre-quantized": lambda: load_dit(path),
        "naive bf16 then quantize": lambda: quantize_linears_(load_dit(path)),
        "bf16": lambda: load_dit(path),
    }
    model, peak, seconds = measure(loaders[mode])
    del torch
    print(json.dumps({"mode": mode, "peak": peak, "seconds": seconds, "weight_bytes": weight_bytes(model)}))


def forward_seconds(model, repeats=3) -> float:
    import torch

    c = model.config
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(1, 16, 3, 16, 16, generator=g), torch.tensor([900.0]),
            torch.randn(1, 64, c.text_dim, generator=g), torch.ones(1, 64), torch.randn(1, c.pooled_dim, generator=g))
    ref = torch.randn(1, 16, 1, 16, 16, generator=g)
    with torch.inference_mode():
        model(*args, reference=ref)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(*args, reference=ref)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run(size: str) -> dict:
    import torch

    from magic141_core import load_dit, save_dit, tiny
    from magic141_core.dit.loading import random_dit

    config = tiny(**CONFIGS[size])
    with tempfile.TemporaryDirectory() as tmp:
        bf16_path, int8_path = Path(tmp) / "bf16.safetensors", Path(tmp) / "int8.safetensors"
        model = random_dit(config, seed=0, dtype=torch.bfloat16)
        save_dit(model, bf16_path)
        del model
        save_dit(load_dit(bf16_path, int8=True), int8_path)

        def sub(mode, path):
            out = subprocess.run([sys.executable, __file__, "--child", mode, str(path)], capture_output=True,
                                 text=True, check=True)
            return json.loads(out.stdout.strip().splitlines()[-1])

        rows = {m: sub(m, p) for m, p in [("bf16", bf16_path), ("quantize-on-load", bf16_path),
                                           ("pre-quantized", int8_path), ("naive bf16 then quantize", bf16_path)]}
        int8_bytes = rows["pre-quantized"]["weight_bytes"]
        bf16_model, int8_model = load_dit(bf16_path), load_dit(int8_path)
        report = {
            "parameters (B)": sum(p.numel() for p in bf16_model.parameters()) / 1e9,
            "bf16 weight GB": rows["bf16"]["weight_bytes"] / 1e9,
            "int8 / bf16 weight bytes": int8_bytes / rows["bf16"]["weight_bytes"],
            "int8 / bf16 file bytes": int8_path.stat().st_size / bf16_path.stat().st_size,
        }
        for mode in ("quantize-on-load", "pre-quantized", "naive bf16 then quantize"):
            report[f"peak {mode} / int8 bytes"] = rows[mode]["peak"] / int8_bytes
            report[f"{mode} seconds"] = rows[mode]["seconds"]
        report["forward int8 / bf16 (CPU)"] = forward_seconds(int8_model) / forward_seconds(bf16_model)
    return report


def main(run, child, quick_help: str) -> None:
    """The command line of both int8 benchmarks: `--child ARGS...` is one measurement in this fresh process;
    otherwise run everything, print the report and write it with --json."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=sys.modules[run.__module__].__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--smoke", action="store_true", help="the tiniest configuration: runs every row, in seconds")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    opts = parser.parse_args()
    report = run("smoke" if opts.smoke else "quick" if opts.quick else "full")
    print(json.dumps(report, indent=1))
    if opts.json:
        opts.json.write_text(json.dumps({"ratios": report}, indent=1))


if __name__ == "__main__":
    main(run, child, "a ~0.2 GB model instead of ~1.7 GB")
