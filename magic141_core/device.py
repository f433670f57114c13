"""Device policy: which dtype the model computes in on a given device.

Weights keep their storage dtype (bf16, fp16, fp32, int8). Activations use the storage dtype on GPUs. On a CPU
without native half-precision units (AVX2-only x86, for example) a bf16 matmul or convolution is 5-100x slower
than fp32, so there the model computes in fp32 and casts each weight as it is used, as ComfyUI's `manual_cast`
ops do. Whether the CPU has those units is read from its feature flags (deterministic; timing under load is not).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from functools import lru_cache

import torch

_HALF = (torch.bfloat16, torch.float16)
# CPU feature flags (Linux /proc/cpuinfo) that give native arithmetic for each half dtype
_NATIVE_FLAGS = {
    torch.bfloat16: {"avx512_bf16", "amx_bf16", "bf16"},  # x86 AVX512-BF16 / AMX, Arm BF16
    torch.float16: {"avx512_fp16", "amx_fp16", "asimdhp"},  # x86 AVX512-FP16 / AMX-FP16, Arm FP16 arithmetic
}


def compute_dtype_for(device: torch.device, weight_dtype: torch.dtype) -> torch.dtype:
    """The activation dtype for weights of `weight_dtype` on `device`."""
    if not weight_dtype.is_floating_point:  # quantized storage: compute in bf16 like the paper
        weight_dtype = torch.bfloat16
    if weight_dtype in _HALF and device.type == "cpu" and not cpu_half_is_fast(weight_dtype):
        return torch.float32
    return weight_dtype


@lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo does not exist)."""
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(word for line in f if line.lower().startswith(("flags", "features"))
                             for word in line.split(":", 1)[1].split())
    except OSError:
        return frozenset()


def cpu_half_is_fast(dtype: torch.dtype) -> bool:
    """True when this CPU has native arithmetic for `dtype` (Apple silicon counts for both half dtypes)."""
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return True
    return bool(cpu_flags() & _NATIVE_FLAGS[dtype])

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
