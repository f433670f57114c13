"""`bench`: run every benchmark script (each in its own process) and print one table of the ratios.

With `runs` > 1 the scripts run in interleaved rounds (every script once per round), so load from other processes
spreads over all rows alike; each ratio is then the median over the rounds, with its spread (min..max). The CPU
time other processes used while the benchmarks ran (the machine's busy time from /proc/stat minus the bench's own
process tree) is printed with the table as a share of the machine: figures measured under load say so. A script
that fails prints its rows as FAILED with the reason; the other rows are unaffected.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# script -> the ratios it reports (key in its JSON summary -> what the ratio means)
RATIOS = {
    "dit_forward.py": {
        "fp32 ours / diffusers": "DiT forward time, both computing in fp32 (<= 1 is as fast)",
        "bf16 weights, ours / diffusers, same compute dtype":
            "DiT forward time, bf16 weights, both computing in the dtype ours uses here (see notes)",
        "bf16 weights, ours / diffusers computing in bf16": "the same, diffusers computing in bf16 (its default)",
        "bf16 weights, max |diff| vs fp32, ours": "accuracy of ours with bf16 weights (fp32 weights as reference)",
        "bf16 weights, max |diff| vs fp32, diffusers": "accuracy of diffusers, same weights and compute dtype",
        "bf16 weights, max |diff| vs fp32, diffusers computing in bf16": "accuracy of diffusers computing in bf16"},
    "int8_memory.py": {"int8 / bf16 weight bytes": "weight memory with int8",
                       "peak quantize-on-load / int8 bytes": "RAM peak while quantizing on load",
                       "peak pre-quantized / int8 bytes": "RAM peak loading an int8 file",
                       "forward int8 / bf16 (CPU)": "forward time int8 vs bf16 on this CPU"},
    "encoder_int8.py": {"encoder peak quantize-on-load / bf16 linear bytes":
                           "LLaVA quantize-on-load RAM peak vs its float Llama (< 1: never whole)",
                       "encoder peak pre-quantized / int8 linear bytes": "RAM peak loading an int8 LLaVA file"},
    "fp8_memory.py": {"peak loading scaled fp8 as bf16 / bf16 weight bytes": "RAM peak loading an fp8 file as bf16",
                      "peak loading official fp8 as int8 / int8 weight bytes":
                          "RAM peak loading the official fp8 .pt + map as int8",
                      "scaled fp8 kept in fp8 / bf16: weight bytes": "weight memory of an fp8 file kept in fp8",
                      "scaled fp8 kept in fp8 / bf16: peak RAM of the load":
                          "RAM peak loading an fp8 file kept in fp8 vs bf16 (<= 0.55 asked)",
                      "scaled fp8 kept in fp8 / bf16: peak RAM of load + forward":
                          "the same with one forward (its working set is the same for both)"},
    "vae_memory.py": {"streaming peak 41 / 5 latent frames": "VAE streaming decode memory, long vs short",
                      "streaming time / untiled time": "VAE streaming decode time vs untiled"},
    "parallel.py": {"step bound 1 / 8 GPUs": "H100 step-time bound, 1 vs 8 GPUs (estimate, not measured)",
                    "all-to-all share of the step, 8 GPUs": "communication share of an 8-GPU step (estimate)"},
    "start_image.py": {"start image peak RSS 8000^2 / 1000^2, JPEG": "start-image memory, huge vs small JPEG (1.0 = "
                                                                     "bounded by the video size)",
                       "start image peak RSS 8000^2 / 1000^2, PNG": "the same for PNG (decoded in strips, never at "
                                                                    "full size)"},
    "long_video.py": {"window time, later / earlier windows": "long video: steady window cost (1.0 = linear)",
                      "window time spread (max - min) / median": "long video: spread of the steady windows",
                      "steady window / a 1-window run's window": "a window inside a long video vs a single clip",
                      "peak RSS(8) / peak RSS(1)": "long video memory growth (1.0 = flat)"},
    "long_video_seams.py": {
        "pan seam / inside change, context 1": "stand-in pan extended, one-frame seams (1.0 = seams move like frames)",
        "pan speed after the seams / before, context 1": "the pan's speed after the seams (1.0 = kept, 0 = stopped)",
        "pan seam / inside change, context 5": "the same with the default motion context (5 frames)",
        "pan speed after the seams / before, context 5": "the pan's speed kept with motion context",
        "still seam change (grey levels), context 1": "pass-through demo, a still image: change at the seams (0..255)",
        "still seam change (grey levels), context 5": "the same with the default motion context",
        "colour drift after 60 windows, start anchor": "1 %-darkening stand-in: mean colour drift (RGB 0..1), fixed "
                                                       "anchor",
        "colour drift after 60 windows, previous anchor": "the same, matched to the previous window",
        "colour drift after 60 windows, no colour match": "the same without colour matching"},
    "long_video_resume.py": {
        "re-roll from window 8 of 12 / full render": "re-roll cost with the sidecar reads (5/12 = 0.417: rendering)",
        "re-roll from window 8 of 12 / those 5 windows in the full render": "what a re-roll adds to rendering its "
                                                                            "windows (1.0: nothing)",
        "resumed after Cancel in window 5: frames equal to the uninterrupted run": "bit-exact resume (1.0)",
        "sidecar MB per window, 540p": "sidecar disk per 81-frame window: its MP4 + 5 hand-over frames (uint8)",
        "sidecar read and check seconds per window, 540p": "reading one window back (SHA-256 checked)"},
}


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"{torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}, "
            f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}")


def _machine_busy_s() -> float | None:
    """Seconds of CPU time the whole machine has spent busy since boot (/proc/stat; None where it does not exist)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and of every child it has waited for (the benchmark scripts and theirs)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """The share of the machine's CPUs that OTHER processes kept busy between start and `share()`: (busy seconds of
    the machine - CPU seconds of this process tree) / (wall seconds x CPUs), in [0, 1]; None without /proc/stat.
    Unlike the load average it does not count the benchmark itself."""

    def __init__(self):
        self.busy, self.own, self.wall = _machine_busy_s(), _own_cpu_s(), time.monotonic()

    def share(self) -> float | None:
        busy, wall = _machine_busy_s(), time.monotonic() - self.wall
        if busy is None or self.busy is None or wall <= 0:
            return None
        others = (busy - self.busy) - (_own_cpu_s() - self.own)
        return min(max(others / (wall * (os.cpu_count() or 1)), 0.0), 1.0)


def _failure(result: subprocess.CompletedProcess) -> str:
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        return f"killed by {name}" + (" (out of memory, most likely)" if name == "SIGKILL" else "")
    lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return lines[-1] if lines else f"exit code {result.returncode}"


def run_script(script: Path, size: str | None, env: dict | None = None) -> tuple[dict, str | None]:
    """(its JSON summary, None), or ({}, why it failed). `size`: None (full), "quick" or "smoke"."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "summary.json"
        cmd = [sys.executable, str(script), "--json", str(out)] + ([f"--{size}"] if size else [])
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if result.returncode != 0 or not out.is_file():
            return {}, _failure(result)
        return json.loads(out.read_text()), None


def run_benchmarks(folder: Path, quick: bool = False, out: Path | None = None, runs: int = 1,
                   comfyui: Path | None = None, smoke: bool = False) -> dict:
    """Run every script `runs` times (interleaved rounds); print the table; return (and write to `out`) it as
    {"machine", "quick", "runs", "other load", "notes", "ratios": {key: {"value" (median), "min", "max",
    "values", "meaning", "error"}}}. `comfyui`: the ComfyUI folder whose tokenizers encoder_int8.py uses.
    `smoke`: every script at its tiniest configuration (checks that every row runs; the figures mean nothing)."""
    size = "smoke" if smoke else "quick" if quick else None
    env = {**os.environ, **({"MAGIC141_COMFYUI": str(comfyui)} if comfyui else {})}
    values = {key: [] for ratios in RATIOS.values() for key in ratios}
    errors, notes, loads = {}, {}, []
    for round_ in range(runs):
        load = OtherLoad()
        for script in RATIOS:
            print(f"[{round_ + 1}/{runs}] running {script} ...", file=sys.stderr, flush=True)
            summary, error = run_script(folder / script, size, env)
            if error:
                errors[script] = error
                print(f"{script} failed: {error}", file=sys.stderr, flush=True)
            notes.update({f"{script}: {n}": None for n in summary.get("notes", [])})
            for key in RATIOS[script]:
                if summary.get("ratios", {}).get(key) is not None:
                    values[key].append(summary["ratios"][key])
        loads.append(load.share())
    loads = [v for v in loads if v is not None]
    table = {"machine": machine(), "quick": quick, "smoke": smoke, "runs": runs,
             "other load": {"min": min(loads), "max": max(loads), "median": statistics.median(loads)} if loads
             else None,
             "notes": list(notes), "ratios": {}}
    for script, ratios in RATIOS.items():
        for key, meaning in ratios.items():
            v = values[key]
            table["ratios"][key] = {"value": statistics.median(v) if v else None, "min": min(v, default=None),
                                    "max": max(v, default=None), "values": v, "meaning": meaning,
                                    "error": None if v else errors.get(script, "not reported by " + script)}
    print(format_table(table))
    if out:
        out.write_text(json.dumps(table, indent=1))
    return table


def format_table(table: dict) -> str:
    load = table["other load"]
    size = " (SMOKE configurations: every row runs; the figures mean nothing)" if table.get("smoke") else \
        " (quick configurations)" if table["quick"] else ""
    lines = [f"machine: {table['machine']}{size}",
             f"runs: {table['runs']} interleaved; "
             + (f"other processes kept {load['median']:.0%} of the {os.cpu_count()} CPUs busy (per round "
                f"{load['min']:.0%}..{load['max']:.0%})" if load else "other processes' load: unknown (no /proc/stat)")
             + ("  -- LOADED MACHINE: re-measure on a quiet one" if load and load["max"] > 0.10 else ""),
             f"{'ratio':58s} {'median':>9s} {'min..max':>17s}  meaning"]
    for key, row in table["ratios"].items():
        if row["value"] is None:
            lines.append(f"{key:58s} {'FAILED':>9s} {'':17s}  {row['meaning']} -- {row['error']}")
            continue
        spread = f"{row['min']:.3g}..{row['max']:.3g}" if len(row["values"]) > 1 else ""
        lines.append(f"{key:58s} {row['value']:9.3g} {spread:>17s}  {row['meaning']}")
    lines += [f"note: {n}" for n in table["notes"]]
    return "\n".join(lines)
