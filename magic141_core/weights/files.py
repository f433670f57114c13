"""Safe reading and atomic writing of weight files.

Reading: `.safetensors` through safetensors (memory-mapped, tensor by tensor, no code can run); `.pt` / `.pth` /
`.bin` / `.ckpt` only through `torch.load(weights_only=True)`, which refuses any pickled object that is not a
tensor or a plain container. Containers seen in the wild are unwrapped: `{"state_dict": ...}` (the Magic141 `.pth`),
`{"module": ...}` (HunyuanVideo's `mp_rank_00_model_states.pt`), `{"model": ...}`, and the `model.diffusion_model.`
prefix of ComfyUI-saved checkpoints.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..runtime.atomic import atomic_path
from ..runtime.finite import is_finite

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
QUANT_METADATA_KEY = "magic141_quantization"  # safetensors metadata of a pre-quantized (int8) file: its map
WRAPPER_KEYS = ("state_dict", "module", "model")
PREFIXES = ("model.diffusion_model.", "model.model.", "diffusion_model.", "module.")  # model.model.: ModelSave
# What a file's index may take before anything in it is parsed (SECURITY.md, "Budgets"): a safetensors header (JSON:
# every tensor's name, dtype, shape and offsets, plus the metadata strings) and the pickle program of a `.pt` zip
# (`data.pkl`: the names and shapes; the tensor bytes live beside it and are memory-mapped). Real files are far
# below: HunyuanVideo-13B's header is about 0.2 MB, an 8B LLaVA's 40 KB, a 13B LoRA's under 1 MB.
MAX_HEADER_BYTES = 8 << 20
MAX_PICKLE_BYTES = 8 << 20


class CheckpointError(ValueError):
    """A weight file that cannot be used, with what is wrong and what to do."""


class LazyStateDict(Mapping):
    """A read-only mapping of a weight file's tensors (wrapper prefix stripped) that reads each tensor on access.

    Safetensors are memory-mapped, so only the tensors a caller touches are read; `.pt` files are loaded with
    `mmap=True` where their format allows. Values come back in the file's dtype. `prefixes`: the wrapper prefixes
    stripped (the first one any key carries); () keeps every key as stored (a LoRA's prefixes are its format).
    """

    def __init__(self, keys, get, name: str, metadata: dict | None = None, shape=None, prefixes=PREFIXES):
        self._get, self.name, self.metadata = get, name, metadata or {}
        self._shape = shape
        keys = list(keys)
        self.prefix = next((p for p in prefixes if any(k.startswith(p) for k in keys)), "")
        # a full ComfyUI checkpoint prefixes the diffusion model; its other parts (VAE, text encoders) are skipped
        self._keys = {k.removeprefix(self.prefix): k for k in keys if k.startswith(self.prefix)}

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._get(self._keys[key])

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key) -> bool:
        return key in self._keys

    def shape(self, key: str) -> tuple[int, ...]:
        """The tensor's shape, from the file header when the format has one (no data read)."""
        return tuple(self._shape(self._keys[key])) if self._shape else tuple(self[key].shape)


def shape_of(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    """The shape of tensor `key`: from the file header when the mapping offers `shape(key)`, else by reading it."""
    return tuple(sd.shape(key)) if hasattr(sd, "shape") else tuple(sd[key].shape)


class RenamedView(Mapping):
    """The tensors of `sd` under new names (`names`: {new: old}), read on access through `read(sd, old)` (default:
    `sd[old]`), with header shapes (`shape`) passed through. Nothing is read until a tensor is asked for."""

    def __init__(self, sd: Mapping[str, torch.Tensor], names: dict[str, str], read=None):
        self._sd, self._keys = sd, names
        self._read = read or (lambda source, key: source[key])

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._read(self._sd, self._keys[key])

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def shape(self, key: str) -> tuple[int, ...]:
        return shape_of(self._sd, self._keys[key])


@contextmanager
def open_state_dict(path: str | os.PathLike, prefixes=PREFIXES) -> Iterator[LazyStateDict]:
    """Open a weight file as a `LazyStateDict` (valid inside the `with` block); `prefixes`: see there.

    Raises FileNotFoundError, or CheckpointError naming the file when it is empty, damaged, of another type, or its
    index is larger than `MAX_HEADER_BYTES` / `MAX_PICKLE_BYTES` (checked before it is parsed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path.name} is empty (0 bytes); the download or copy did not finish")
    if path.suffix == ".safetensors":
        with _open_safetensors(path) as f:
            yield LazyStateDict(f.keys(), lambda key: _read_safetensor(path, f, key), path.name, f.metadata(),
                                lambda key: f.get_slice(key).get_shape(), prefixes)
    elif path.suffix in PICKLE_SUFFIXES:
        sd = {k: v for k, v in _torch_load(path).items() if isinstance(v, torch.Tensor)}
        yield LazyStateDict(sd, sd.__getitem__, path.name, prefixes=prefixes)
    else:
        raise CheckpointError(
            f"{path.name}: unsupported file type '{path.suffix}'; use .safetensors (or .pt/.pth with plain tensors)"
        )


def converted(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """`tensor` in `dtype` when it is floating point (fp8 included); integer tensors are left alone."""
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor


def read_state_dict(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a weight file, unwrapped; converted to `dtype` one tensor at a time when given."""
    return dict(iter_state_dict(path, dtype))


def iter_state_dict(path: str | os.PathLike, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (key, tensor) pairs, reading (and converting) one tensor at a time."""
    with open_state_dict(path) as sd:
        for key in sd:
            yield key, converted(sd[key], dtype)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` strings of a safetensors file ({} for other files)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    with _open_safetensors(path) as f:
        return f.metadata() or {}


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None,
                     overwrite: bool = False):
    """Write tensors to `path` atomically (temporary file beside it, then published): a failure leaves no file and
    any old file intact. An existing `path` raises `FileExistsError` naming it before anything is written, unless
    `overwrite` (only for a file the caller owns and replaces on purpose, e.g. the retrieval index).

    Refused before anything is written: a floating-point tensor holding NaN or inf (ValueError naming it: such a
    file would load as a black video), and a folder without room for the file (OSError naming the folder, the
    bytes needed and free; `runtime.atomic`). A write that fails part-way (disk full, read-only) leaves no file."""
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    bad = next((k for k, v in tensors.items() if not is_finite(v)), None)
    if bad is not None:
        raise ValueError(f"tensor '{bad}' holds NaN or infinite values; {Path(path).name} was not written (it would "
                         "load as a black or noisy video). Find what produced them (a diverged model, a LoRA)")
    needed = sum(v.numel() * v.element_size() for v in tensors.values()) + sum(map(len, meta.values()))
    with atomic_path(path, overwrite=overwrite, needed=needed) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _check_header(path: Path) -> None:
    """Refuse a safetensors file whose header (the JSON index before the tensors) claims more than
    `MAX_HEADER_BYTES`, before safetensors parses it: a crafted file could otherwise make it read and parse up to
    100 MB of JSON for every open."""
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        return  # too short to be safetensors: safe_open says so
    (size,) = struct.unpack("<Q", head)
    if size > MAX_HEADER_BYTES:
        raise CheckpointError(
            f"{path.name}: its safetensors header claims {size} bytes, above the {MAX_HEADER_BYTES >> 20} MiB this "
            "pack reads (a 13B model's header is under 1 MB): the file is damaged or crafted; choose another file")


def _open_safetensors(path: Path):
    _check_header(path)
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path.name} is not a readable safetensors file ({e}); it may be truncated or corrupt — "
            "download or copy it again"
        ) from None


def _read_safetensor(path: Path, f, key: str) -> torch.Tensor:
    try:
        return f.get_tensor(key)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name}: tensor '{key}' cannot be read ({e}); the file is corrupt") from None


def _pickle_bytes(path: Path) -> int:
    """The size of a `.pt` zip's pickle program (`*/data.pkl`), from the zip directory (nothing inflated)."""
    with zipfile.ZipFile(path) as archive:
        return max((i.file_size for i in archive.infolist() if i.filename.endswith("data.pkl")), default=0)


def _torch_load(path: Path) -> dict:
    is_zip = zipfile.is_zipfile(path)
    if is_zip and (size := _pickle_bytes(path)) > MAX_PICKLE_BYTES:
        raise CheckpointError(
            f"{path.name}: its pickle index claims {size} bytes, above the {MAX_PICKLE_BYTES >> 20} MiB this pack reads "
            "(a 13B model's is under 1 MB): the file is damaged or crafted; choose another file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))  # torch's text also suggests loading unsafely: never quoted
        what = f" (it asks for {found[1]})" if found else ""
        raise CheckpointError(
            f"refused to load {path.name}: it contains pickled Python objects other than tensors{what}, which could "
            "run code when loaded. Nothing of it was run. Use a .safetensors version of these weights"
        ) from None
    except Exception as e:  # anything else the (weights-only) unpickler trips on means a damaged file
        raise CheckpointError(f"{path.name} cannot be read ({type(e).__name__}: {str(e)[:200]}); it may be "
                              "truncated or corrupt") from None
    return unwrap(obj, path.name)


def unwrap(obj, name: str = "checkpoint") -> dict:
    """Descend through {"state_dict" | "module" | "model": ...} wrappers to the dict of tensors."""
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{name} holds no tensors (top-level type {type(obj).__name__}); it is not a weight file")
    return obj
