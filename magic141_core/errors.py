"""Out-of-memory, turned into a message that says what to change, with the failed run's memory released."""

from __future__ import annotations

import gc
from contextlib import contextmanager

import torch

from .device import release_freed_memory

REMEDIES = ("load the transformer with int8 weights (Model Loader 'int8' / CLI --int8)",
            "keep some blocks in CPU memory (Model Loader 'block_swap')",
            "decode with smaller tiles (VAE Decode (Tiled), or a smaller memory budget)",
            "render fewer frames or a smaller size")


class OutOfMemory(RuntimeError):
    """The compute device ran out of memory; the message lists the pack's remedies."""


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
    except torch.OutOfMemoryError as e:
        detail = str(e).splitlines()[0] if str(e) else "out of memory"
        error = OutOfMemory(f"out of memory while {what} ({detail[:200]}). Try: " + "; ".join(REMEDIES) + ".")
    else:
        return
    free_memory()  # outside the except block, so the traceback no longer pins the failed run's tensors
    raise error
