"""Cancel points inside long computations: one hook the application sets, checked between units of work.

The core never imports ComfyUI. A host that can cancel work (ComfyUI's Cancel / `POST /interrupt`) installs a
callable with `set_interrupt_check`; it raises the host's own exception when the user cancelled. The core calls
`check_interrupt()` between checkpoint layers while loading, between transformer blocks, between attention query chunks on the CPU (where one block can take
minutes at 540p), between VAE decoder blocks and between VAE tiles/chunks, and on the CPU inside large VAE
convolutions (pieces of output frames) and between the VAE attention's query frames, so a cancel lands within
seconds instead of at the end of a sampler step or of a decode. Without a hook (CLI, tests) every check is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable

_CHECK: Callable[[], None] | None = None


def set_interrupt_check(check: Callable[[], None] | None) -> Callable[[], None] | None:
    """Install `check` (a no-argument callable that raises to cancel; None removes it); returns the previous one."""
    global _CHECK
    previous, _CHECK = _CHECK, check
    return previous


def interrupt_check_installed() -> bool:
    """True when a host installed a check (then the CPU attention is split into cancellable query chunks)."""
    return _CHECK is not None


def check_interrupt() -> None:
    """Raise the host's cancel exception if the user cancelled; a no-op when no check is installed."""
    if _CHECK is not None:
        _CHECK()
