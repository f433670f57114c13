"""Out-of-memory, turned into a message that says what to change, with the failed run's memory released; and
checked up front from a lower-bound estimate where the work's size is known before it starts."""

from __future__ import annotations

import gc
from contextlib import contextmanager

import torch

from .device import release_freed_memory

REMEDIES = ("load the transformer with int8 weights (Model Loader 'int8' / CLI --int8)",
            "keep some blocks in CPU memory (Model Loader 'block_swap')",
            "decode with smaller tiles (VAE Decode (Tiled), or a smaller memory budget)",
            "render fewer frames or a smaller size")


# what torch's allocators say when a request fails: CUDA raises torch.OutOfMemoryError; the CPU allocator raises a
# plain RuntimeError ("DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes"); MPS another one
_OOM_TEXTS = ("can't allocate memory", "out of memory", "not enough memory")


class OutOfMemory(RuntimeError):
    """The compute device ran out of memory; the message lists the pack's remedies."""


def _advice(what: str, detail: str) -> str:
    return f"out of memory while {what} ({detail[:200]}). Try: " + "; ".join(REMEDIES) + "."


def is_out_of_memory(error: BaseException) -> bool:
    """True for every allocator's out-of-memory error (CUDA's OutOfMemoryError, the CPU allocator's RuntimeError)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(t in str(error).lower() for t in _OOM_TEXTS)


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can still get on `device`: CUDA's free memory plus what torch's cache holds unused;
    on the CPU the kernel's MemAvailable (Linux). None where it cannot be known."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                info = dict(line.split(":", 1) for line in f)
            return int(info["MemAvailable"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            return None
    return None


def check_memory(what: str, needed: int, device: torch.device):
    """Refuse up front, with the out-of-memory advice, work whose LOWER-BOUND memory estimate `needed` (bytes)
    exceeds what `device` has available, instead of failing minutes later inside the allocator."""
    free = available_bytes(device)
    if free is not None and needed > free:
        raise OutOfMemory(_advice(what, f"it needs at least {needed / 2**30:.1f} GiB on {torch.device(device).type}, "
                                        f"{free / 2**30:.1f} GiB are available"))


def free_memory():
    """Release what a failed run held: Python garbage, the CUDA cache, freed heap pages."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    release_freed_memory()


@contextmanager
def oom_advice(what: str):
    """Run a block; an out-of-memory error inside becomes `OutOfMemory` naming `what` and the remedies."""
    try:
        yield
    except RuntimeError as e:  # torch.OutOfMemoryError is a RuntimeError too
        if isinstance(e, OutOfMemory) or not is_out_of_memory(e):
            raise
        detail = str(e).splitlines()[0] if str(e) else "out of memory"
        error = OutOfMemory(_advice(what, detail))
    else:
        return
    free_memory()  # outside the except block, so the traceback no longer pins the failed run's tensors
    raise error
