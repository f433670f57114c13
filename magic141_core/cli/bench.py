"""`bench`: run every benchmark script (each in its own process) and print one table of the ratios."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

# script -> the ratios it reports (key in its JSON summary -> what the ratio means)
RATIOS = {
    "dit_forward.py": {"fp32 ours / diffusers": "DiT forward time, fp32 (<= 1 is as fast)",
                       "bf16 ours / diffusers": "DiT forward time, bf16 (lower is faster)"},
    "int8_memory.py": {"int8 / bf16 weight bytes": "weight memory with int8",
                       "peak quantize-on-load / int8 bytes": "RAM peak while quantizing on load",
                       "peak pre-quantized / int8 bytes": "RAM peak loading an int8 file",
                       "forward int8 / bf16 (CPU)": "forward time int8 vs bf16 on this CPU"},
    "encoder_int8.py": {"encoder peak quantize-on-load / bf16 linear bytes":
                           "LLaVA quantize-on-load RAM peak vs its float Llama (< 1: never whole)",
                       "encoder peak pre-quantized / int8 linear bytes": "RAM peak loading an int8 LLaVA file"},
    "fp8_memory.py": {"peak loading scaled fp8 as bf16 / bf16 weight bytes": "RAM peak loading an fp8 file as bf16",
                      "peak loading official fp8 as int8 / int8 weight bytes":
                          "RAM peak loading the official fp8 .pt + map as int8"},
    "vae_memory.py": {"streaming peak 41 / 5 latent frames": "VAE streaming decode memory, long vs short",
                      "streaming time / untiled time": "VAE streaming decode time vs untiled"},
    "parallel.py": {"step bound 1 / 8 GPUs": "H100 step-time bound, 1 vs 8 GPUs (estimate, not measured)",
                    "all-to-all share of the step, 8 GPUs": "communication share of an 8-GPU step (estimate)"},
    "long_video.py": {"time(8) / (8 x time(1))": "long video cost linearity (1.0 = linear)",
                      "peak RSS(8) / peak RSS(1)": "long video memory growth (1.0 = flat)"},
}


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"{torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}, "
            f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}")


def run_script(script: Path, quick: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "summary.json"
        cmd = [sys.executable, str(script), "--json", str(out)] + (["--quick"] if quick else [])
        result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:  # one failing script costs its rows, not the table
            print(f"{script.name} failed: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return {}
        return json.loads(out.read_text())


def run_benchmarks(folder: Path, quick: bool = False, out: Path | None = None) -> dict:
    table = {"machine": machine(), "quick": quick, "ratios": {}}
    for script, ratios in RATIOS.items():
        print(f"running {script} ...", file=sys.stderr, flush=True)
        summary = run_script(folder / script, quick)
        for key, meaning in ratios.items():
            table["ratios"][key] = {"value": summary.get("ratios", {}).get(key), "meaning": meaning}
    print(f"machine: {table['machine']}{' (quick configurations)' if quick else ''}")
    print(f"{'ratio':42s} {'value':>8s}  meaning")
    for key, row in table["ratios"].items():
        value = "n/a" if row["value"] is None else f"{row['value']:.3f}"
        print(f"{key:42s} {value:>8s}  {row['meaning']}")
    if out:
        out.write_text(json.dumps(table, indent=1))
    return table
