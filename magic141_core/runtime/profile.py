"""Where one clip's time goes: wall time per stage, peak memory, and the number of DiT forwards.

    profile = StageProfile(device)                      # StageProfile(device, enabled=False): every call a no-op
    with profile.stage("load"):
        ...
    profile.instrument(dit=dit, encoders=encoders, vae=frame_vae)   # times their methods from now on
    generate_long_video(dit, encoders, frame_vae, ..., write=profile.wrap("MP4 write", writer.write))
    print(profile.table())

Stages are wall-clock seconds (`time.perf_counter`), with the device synchronised on entry and exit so that
asynchronous CUDA work is charged to the stage that queued it. A stage entered several times accumulates (its
`calls` counts them); each DiT forward is its own stage ("DiT step 1", "DiT step 2", ...: at guidance 1 one
forward is one step; with real CFG the two guidance branches share one batched forward, still one per step). Peak
memory: `torch.cuda.max_memory_allocated` on CUDA, the process's peak resident set (VmHWM, Linux) on the CPU.
Used by `python -m magic141_core generate --profile` and `benchmarks/gpu_check.py`.
"""

from __future__ import annotations

import functools
import time
from contextlib import contextmanager

import torch

DIT_STEP = "DiT step"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA, MPS); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def peak_rss_bytes() -> int | None:
    """The process's peak resident set size (VmHWM) in bytes; None where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or the kernel's VmHWM (Linux `clear_refs` 5)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak bytes since the last `reset_peak_memory`: allocated by torch on CUDA, resident (RSS) on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return peak_rss_bytes()


class StageProfile:
    """Accumulates {stage: seconds, calls} in first-seen order; see the module docstring."""

    def __init__(self, device: torch.device | str = "cpu", enabled: bool = True):
        self.device, self.enabled = torch.device(device), enabled
        self.stages: dict[str, dict] = {}
        self.forwards = 0
        self.start = time.perf_counter()
        if enabled:
            reset_peak_memory(self.device)

    @contextmanager
    def stage(self, name: str):
        """Time the block as `name` (added to earlier time under that name)."""
        if not self.enabled:
            yield
            return
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            entry = self.stages.setdefault(name, {"seconds": 0.0, "calls": 0})
            entry["seconds"] += time.perf_counter() - start
            entry["calls"] += 1

    def wrap(self, name: str, fn):
        """`fn` with each call timed as stage `name`."""
        if not self.enabled:
            return fn

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            with self.stage(name):
                return fn(*args, **kwargs)

        return timed

    def wrap_iter(self, name: str, fn):
        """`fn` returning an iterator: the time spent producing each item is timed as stage `name`."""
        if not self.enabled:
            return fn

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            with self.stage(name):
                iterator = iter(fn(*args, **kwargs))
            while True:
                with self.stage(name):
                    item = next(iterator, StopIteration)
                if item is StopIteration:
                    return
                yield item

        return timed

    def wrap_exit(self, name: str, context):
        """A context manager like `context` whose exit (a file's finishing, say) is timed as stage `name`."""
        return context if not self.enabled else _TimedExit(self, name, context)

    def count_forwards(self, model: torch.nn.Module) -> None:
        """Time each forward of `model` as its own stage, "DiT step N", and count them."""
        if not self.enabled:
            return
        forward = model.forward

        @functools.wraps(forward)
        def timed(*args, **kwargs):
            self.forwards += 1
            with self.stage(f"{DIT_STEP} {self.forwards}"):
                return forward(*args, **kwargs)

        model.forward = timed

    def instrument(self, dit=None, encoders=None, vae=None) -> None:
        """Time the parts of one clip: the DiT's forwards, the encoders' text and VLM passes (when the object has
        `encode_text` / `encode_image`), and a `video.long_video.FrameVAE`'s encode and (streamed) decode."""
        if not self.enabled:
            return
        if dit is not None:
            self.count_forwards(dit)
        for attr, name in (("encode_text", "text encode"), ("encode_image", "VLM encode")):
            if encoders is not None and hasattr(encoders, attr):
                setattr(encoders, attr, self.wrap(name, getattr(encoders, attr)))
        if vae is not None:
            vae.encode_frames = self.wrap("VAE encode", vae.encode_frames)
            vae.decode_frames = self.wrap_iter("decode", vae.decode_frames)

    def report(self) -> dict:
        """{"stages": {name: {"seconds", "calls"}}, "total seconds", "unaccounted seconds", "DiT forwards",
        "peak memory bytes", "peak memory of"}."""
        synchronize(self.device)
        total = time.perf_counter() - self.start
        return {"stages": self.stages, "total seconds": total,
                "unaccounted seconds": total - sum(s["seconds"] for s in self.stages.values()),
                "DiT forwards": self.forwards, "peak memory bytes": peak_memory_bytes(self.device),
                "peak memory of": "torch CUDA allocations" if self.device.type == "cuda" else "process RSS"}

    def table(self) -> str:
        """The report as lines of text: one per stage, then the total, the forward count and the peak memory."""
        r = self.report()
        lines = [f"{'stage':24s} {'seconds':>9s} {'calls':>6s}"]
        lines += [f"{name:24s} {s['seconds']:9.3f} {s['calls']:6d}" for name, s in r["stages"].items()]
        lines.append(f"{'(between stages)':24s} {r['unaccounted seconds']:9.3f}")
        lines.append(f"{'total':24s} {r['total seconds']:9.3f}")
        lines.append(f"DiT forwards: {r['DiT forwards']}")
        peak = r["peak memory bytes"]
        lines.append(f"peak memory: {'n/a' if peak is None else f'{peak / 2**30:.2f} GiB'} ({r['peak memory of']})")
        return "\n".join(lines)


class _TimedExit:
    def __init__(self, profile: StageProfile, name: str, context):
        self.profile, self.name, self.context = profile, name, context

    def __enter__(self):
        return self.context.__enter__()

    def __exit__(self, *exc):
        with self.profile.stage(self.name):
            return self.context.__exit__(*exc)


__all__ = ["DIT_STEP", "StageProfile", "peak_memory_bytes", "peak_rss_bytes", "reset_peak_memory", "synchronize"]
