"""The processes a test session starts, found from /proc (Linux): children and grandchildren while their parents
live, and afterwards by a token every child inherits in its environment, so an orphan re-parented to init is still
found. conftest.py fails the run when one outlives the session (`pytest_sessionfinish`); comfy_server.py checks that
stopping ./run.sh ends the ComfyUI it started."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

TOKEN_VARIABLE = "MAGIC141_TEST_SESSION"


def mark_session() -> str:
    """Put a new token in the environment every subprocess of this session inherits (a new one also in a session
    started inside another, so neither mistakes the other's processes for its own)."""
    os.environ[TOKEN_VARIABLE] = uuid.uuid4().hex
    return os.environ[TOKEN_VARIABLE]


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (exited, waiting for its parent to read its status)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def descendants(pid: int) -> list[int]:
    """Every live child, grandchild, ... of `pid`."""
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return [p for p in found if alive(p)]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def started_by_session(token: str) -> list[int]:
    """Live processes (other than this one) whose environment carries `token`: everything the session started,
    orphans included (a process that replaced its environment wholesale is not found)."""
    needle, own = f"{TOKEN_VARIABLE}={token}".encode(), os.getpid()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until every pid has ended or `timeout` s passed; returns those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time (s) the processes `pids` used so far, all their threads included: how much work they
    did, which, unlike wall time, a loaded machine does not stretch."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / os.sysconf("SC_CLK_TCK")
