"""Atomic file output: write to a temporary file beside the target, then rename it into place.

Every file the pack writes (videos, int8 checkpoints, caches, retrieval indexes) goes through `atomic_path`, so a
crash, an interrupt or a full disk leaves either the previous file or no file, never a half-written one.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_temp_beside(path: Path, suffix: str) -> Path:
    """An empty temporary file in `path`'s folder, with the permissions a normal new file would get (mkstemp's
    0600 would leave outputs unreadable to other users)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path in the target's folder; on success rename it to `path`, on error delete it."""
    path = Path(path)
    tmp = make_temp_beside(path, f".partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
