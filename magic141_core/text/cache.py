"""Embedding cache: in memory (least recently used first out) and optionally on disk as safetensors.

Keys are hashes of (encoder identity, kind, content): the prompt text for text embeddings, the pixel hash for image
tokens. Disk entries are written atomically (temporary file, then rename) and checked on read; an unreadable, foreign
or non-finite entry is a miss, never an error. Non-finite embeddings (NaN/inf from a broken encoder) are never
stored: `put` refuses them with `NonFiniteEmbedding`, so one bad run cannot poison every later run of that prompt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path

import torch

from ..weights import CheckpointError, read_metadata, read_state_dict, save_safetensors

logger = logging.getLogger(__name__)


class NonFiniteEmbedding(ValueError):
    """An encoder produced NaN or infinite values; they are not cached and must not be used."""


def _finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf, or None when all are finite."""
    return next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)


def cache_key(identity: str, kind: str, content: str) -> str:
    return hashlib.sha256(json.dumps([identity, kind, content]).encode()).hexdigest()


class EmbeddingCache:
    """Dicts of CPU tensors by key, `max_items` in memory and, with `directory`, one safetensors file per key."""

    def __init__(self, directory: str | os.PathLike | None = None, max_items: int = 32):
        self.directory = Path(directory) if directory is not None else None
        self.max_items = max_items
        self._memory: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.safetensors"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            return {k: v.clone() for k, v in self._memory[key].items()}
        if self.directory is None or not self._path(key).is_file():
            return None
        path = self._path(key)
        try:
            if read_metadata(path).get("magic141_cache_key") != key:
                return None
            tensors = read_state_dict(path)
        except (CheckpointError, OSError) as e:
            logger.warning("ignoring unreadable cache entry %s (%s)", path.name, e)
            return None
        if _finite(tensors) is not None:
            logger.warning("ignoring cache entry %s: it holds non-finite values", path.name)
            return None
        self._remember(key, tensors)
        return {k: v.clone() for k, v in tensors.items()}

    def put(self, key: str, tensors: dict[str, torch.Tensor], description: str = ""):
        """Remember `tensors` under `key` (and write them to disk once). Raises `NonFiniteEmbedding` naming the
        tensor and `description` when any value is NaN or inf: such an embedding is never cached."""
        bad = _finite(tensors)
        if bad is not None:
            what = f"{bad} for {description[:80]}" if description else bad
            raise NonFiniteEmbedding(
                f"the encoder produced NaN or infinite values ({what}); its weights are broken or overflow in this "
                "dtype. Nothing was cached; load the encoders in fp32 or with other files")
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        self._remember(key, tensors)
        if self.directory is not None and not self._path(key).exists():  # same key, same content: written once
            meta = {"magic141_cache_key": key, "description": description[:500]}
            try:
                save_safetensors(tensors, self._path(key), metadata=meta)
            except FileExistsError:  # another process wrote the same entry meanwhile
                pass
            except OSError as e:
                logger.warning("cannot write the embedding cache in %s (%s); going on without it", self.directory, e)

    def _remember(self, key: str, tensors: dict[str, torch.Tensor]):
        self._memory[key] = tensors
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_items:
            self._memory.popitem(last=False)
