"""Device policy: which dtype the model computes in on a given device.

Weights keep their storage dtype (bf16, fp16, fp32, int8). Activations use the storage dtype on GPUs. On a CPU
without native half-precision matmul units (AVX2-only x86, for example) a bf16 matmul is 5-100x slower than fp32,
so there the model computes in fp32 and casts each weight as it is used, as ComfyUI's `manual_cast` ops do. The
choice is made by timing one small matmul per dtype, once per process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from functools import lru_cache

import torch

_HALF = (torch.bfloat16, torch.float16)


def compute_dtype_for(device: torch.device, weight_dtype: torch.dtype) -> torch.dtype:
    """The activation dtype for weights of `weight_dtype` on `device`."""
    if not weight_dtype.is_floating_point:  # quantized storage: compute in bf16 like the paper
        weight_dtype = torch.bfloat16
    if weight_dtype in _HALF and device.type == "cpu" and not cpu_half_is_fast(weight_dtype):
        return torch.float32
    return weight_dtype


@lru_cache(maxsize=None)
def cpu_half_is_fast(dtype: torch.dtype) -> bool:
    """True when a `dtype` linear on this CPU runs at least 2/3 as fast as the same fp32 linear."""
    x = torch.randn(256, 512)
    w = torch.randn(512, 512)

    def best_of(xx, ww):
        torch.nn.functional.linear(xx, ww)  # warm-up
        times = []
        for _ in range(3):
            start = time.perf_counter()
            torch.nn.functional.linear(xx, ww)
            times.append(time.perf_counter() - start)
        return min(times)

    return best_of(x.to(dtype), w.to(dtype)) <= 1.5 * best_of(x, w)


@lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> None:
    """Return freed heap memory to the OS (glibc `malloc_trim`). Loading frees many block-sized temporaries; glibc
    would otherwise keep them mapped, so the process's memory grows as if they were still in use. No-op elsewhere."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
