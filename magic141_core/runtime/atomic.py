"""Atomic, non-destructive file output: write to a temporary file beside the target, then publish it under a name
that does not exist yet.

Every file the pack writes (videos, int8 checkpoints, caches, retrieval indexes, demo models) goes through
`atomic_path` or `make_temp_beside` + `publish`, so a crash, an interrupt or a full disk leaves either the previous
file or no file, never a half-written one; and, unless a caller replaces its own file on purpose (`overwrite=True`:
the retrieval index), an existing file is never replaced: publishing is a hard link, which fails when the name
exists (no race between checking and writing).

A write that fails for want of room or permission (disk full, quota, read-only file system; `write_error`) is
reported naming the file, the folder, the bytes free there (and needed, when known) and that nothing was kept; a
write whose size is known (`atomic_path(needed=...)`) is refused before it starts when the folder lacks the room.

Temporary files are hidden (`.<stem>.m141tmp-<host>-<pid>.<random>.partial<ext>`) and carry the writing process's
id, so the leftovers of a killed run (SIGKILL, power loss) are recognised and deleted the next time the pack writes
into that folder (`sweep_stale_temps`), while another live process's temporary files are left alone.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

_TAG = "m141tmp"
_TEMP_NAME = re.compile(rf"^\..*\.{_TAG}-(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.[A-Za-z0-9_]+"
                        r"\.partial(\.[A-Za-z0-9]+)?$")


# write failures that the user can act on -> what to say; any other error passes through unchanged
_WRITE_FAILURES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is larger than the file system (or a size limit) allows",
    errno.EROFS: "the folder is on a read-only file system",
    errno.EACCES: "there is no permission to write there",
    errno.EPERM: "there is no permission to write there",
}


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB ({n} bytes)" if n >= 2**20 else f"{n} bytes"


def _free_bytes(folder: Path) -> int | None:
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    try:
        return shutil.disk_usage(existing).free if existing is not None else None
    except OSError:
        return None


def write_errno(error: BaseException) -> int | None:
    """The errno of a failed write when it is one `write_error` explains (an OSError's, or the "(os error N)" that
    safetensors' own error carries), else None."""
    number = getattr(error, "errno", None)
    if number is None and (found := re.search(r"\(os error (\d+)\)", str(error))):
        number = int(found[1])
    return number if number in _WRITE_FAILURES else None


def write_error(number: int, path: str | os.PathLike, needed: int | None = None, written: int | None = None) -> OSError:
    """The OSError (errno `number`) for a write of `path` that failed or cannot fit: names the file, its folder,
    the reason, the bytes free there, the bytes `needed` (or `written` before it failed) when known, that nothing
    was kept, and the fix."""
    path = Path(path).absolute()
    free = _free_bytes(path.parent)
    sizes = [f"{_size(free)} free there" if free is not None else None,
             f"the file needs {_size(needed)}" if needed is not None else None,
             f"{_size(written)} were written before it failed" if written is not None else None]
    room = number in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    fix = "free some space there or choose another folder" if room else "choose a folder you may write in"
    detail = "; ".join(s for s in sizes if s)
    error = OSError(f"could not write {path.name} in {path.parent}: {_WRITE_FAILURES.get(number, 'the write failed')}"
                    f"{f' ({detail})' if detail else ''}. Nothing was kept (no partial file). To fix: {fix}")
    error.errno = number
    return error


def check_room(path: str | os.PathLike, needed: int) -> None:
    """Refuse (`write_error`, ENOSPC) a write of `needed` bytes to `path` when its folder has less free space."""
    free = _free_bytes(Path(path).absolute().parent)
    if free is not None and needed > free:
        raise write_error(errno.ENOSPC, path, needed)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the pack's temporary files in `folder` left by processes of this machine that no longer run (a killed
    run's hidden `.partial` files); returns what was deleted. Files of live processes and every other file stay."""
    removed, host = [], _host()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match and match["host"] == host and not _alive(int(match["pid"])) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                continue
    if removed:
        log.info("removed %d unfinished file(s) of earlier, stopped runs in %s", len(removed), folder)
    return removed


def make_temp_beside(path: Path, suffix: str) -> Path:
    """An empty hidden temporary file in `path`'s folder (created if missing), named after this process so a killed
    run's leftovers can be recognised, with the permissions a normal new file gets (mkstemp's 0600 would leave
    outputs unreadable to other users). Stale leftovers of dead runs in that folder are deleted first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{_TAG}-{_host()}-{os.getpid()}.", suffix=suffix,
                               dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    return Path(tmp)


def refuse_existing(path: str | os.PathLike, what: str = "file") -> None:
    """Raise `FileExistsError` naming `path` when something (a file, a folder, a dangling link) is already there."""
    if os.path.lexists(path):
        raise FileExistsError(f"{path} already exists; the {what} is not written over it (Magic141 never replaces "
                              "an existing file). Choose another name, or move the existing file away")


def next_free(path: str | os.PathLike) -> Path:
    """`path` when nothing is there yet, else the first free `<stem>_2<suffix>`, `<stem>_3<suffix>`, ..."""
    path = Path(path)
    n = 2
    candidate = path
    while os.path.lexists(candidate):
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
        n += 1
    return candidate


def publish(tmp: Path, path: Path, overwrite: bool = False) -> Path:
    """Move the finished temporary file `tmp` to `path` atomically. Without `overwrite` an existing `path` is never
    replaced: `FileExistsError` naming it (and `tmp` stays for the caller to delete)."""
    if overwrite:
        os.replace(tmp, path)
        return path
    try:
        os.link(tmp, path)  # fails if `path` exists, atomically
    except FileExistsError:
        refuse_existing(path)
        raise
    except OSError:  # a filesystem without hard links: check, then rename (a tiny race, only there)
        refuse_existing(path)
        os.replace(tmp, path)
        return path
    os.unlink(tmp)
    return path


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False, needed: int | None = None):
    """Yield a temporary path in the target's folder; on success publish it as `path`, on error delete it.

    Without `overwrite`, an existing `path` is refused before anything is written (`FileExistsError` naming it).
    `needed`: the file's size in bytes when known; a folder with less free space is refused before writing. A
    write that fails for want of room or permission, here or in the caller's block, becomes `write_error`."""
    path = Path(path)
    if not overwrite:
        refuse_existing(path)
    if needed is not None:
        check_room(path, needed)
    tmp = None
    try:
        tmp = make_temp_beside(path, f".partial{path.suffix}")
        yield tmp
        publish(tmp, path, overwrite)
    except Exception as e:
        if (number := write_errno(e)) is None:
            raise
        raise write_error(number, path, needed) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
