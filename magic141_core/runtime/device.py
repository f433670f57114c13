"""Device policy: which dtype a model computes in on a given device.

Weights keep their storage dtype (bf16, fp16, fp32, int8). Activations use the storage dtype on GPUs. On a CPU
without native half-precision units (AVX2-only x86, for example) a bf16 matmul or convolution is 5-100x slower
than fp32, so there the model computes in fp32 and casts each weight as it is used, as ComfyUI's `manual_cast`
ops do. Whether the CPU has those units is read from its feature flags (deterministic; timing under load is not).

Range: a model whose activations exceed fp16's largest value (65504) never computes in fp16. The 13B DiT's hidden
states reach ~1e5 and the HunyuanVideo VAE's decoder is run by ComfyUI only in bf16 or fp32 too (ComfyUI's
`supported_inference_dtypes` / `working_dtypes` for HunyuanVideo), so both pass `RANGE_SAFE`: fp16 weights then
compute in bf16 where the device has it (NVIDIA Ampere or newer, Apple silicon, CPUs with BF16 units), else in
fp32, casting each fp16 weight as it is used. The text encoders (Llama-3, CLIP-L) run in fp16 officially and keep it.
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


ANY_FLOAT = (torch.float16, torch.bfloat16, torch.float32)
RANGE_SAFE = (torch.bfloat16, torch.float32)  # 8-bit exponent: holds activations of ~1e5 (fp16 stops at 65504)


def compute_dtype_for(device: torch.device, weight_dtype: torch.dtype,
                      supported: tuple[torch.dtype, ...] = ANY_FLOAT) -> torch.dtype:
    """The activation dtype for weights of `weight_dtype` on `device`, among the model's `supported` dtypes.

    int8 / fp8 storage computes in bf16 (paper §3.2); a half dtype on a CPU without native units computes in fp32;
    a dtype the model does not support (fp16 for `RANGE_SAFE` models) is replaced by `safe_dtype`."""
    if weight_dtype not in ANY_FLOAT:  # quantized storage (int8, fp8): compute in bf16 like the paper
        weight_dtype = torch.bfloat16
    if weight_dtype in _HALF and device.type == "cpu" and not cpu_half_is_fast(weight_dtype):
        weight_dtype = torch.float32
    return safe_dtype(device, weight_dtype, supported)


def safe_dtype(device: torch.device, dtype: torch.dtype, supported: tuple[torch.dtype, ...]) -> torch.dtype:
    """`dtype` when the model supports it; else bf16 when supported and native on `device`, else fp32.

    ComfyUI's `unet_manual_cast` makes the same choice for a model whose `supported_inference_dtypes` lack the
    weights' dtype. Used for an explicitly requested compute dtype too, so fp16 is never forced on such a model."""
    if dtype in supported:
        return dtype
    if torch.bfloat16 in supported and bf16_is_native(device):
        return torch.bfloat16
    return torch.float32


def bf16_is_native(device: torch.device) -> bool:
    """True when `device` computes bf16 natively: CUDA compute capability >= 8 (Ampere; V100, T4 and RTX 20xx
    have none), Apple MPS, or a CPU with BF16 units (see `cpu_half_is_fast`)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "mps":
        return True
    if device.type == "cpu":
        return cpu_half_is_fast(torch.bfloat16)
    return False


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
