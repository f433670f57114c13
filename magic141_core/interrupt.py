"""The host's interrupt, for long loops in the core: loading a checkpoint layer by layer checks it between layers.

The core knows no host. A host (the ComfyUI nodes, `nodes/comfy_glue.py`) installs its check once with
`set_interrupt_check`; the check raises the host's own exception when the user pressed cancel, which then travels out
of the loop unchanged. Without a host (the CLI, tests) `check_interrupt` does nothing.
"""

from __future__ import annotations

from collections.abc import Callable

_check: Callable[[], None] | None = None


def set_interrupt_check(check: Callable[[], None] | None) -> None:
    """Install `check` (a callable that raises when the host wants the work stopped), or None to remove it."""
    global _check
    _check = check


def check_interrupt() -> None:
    """Raise the host's interrupt exception if its user asked to stop; a no-op when no host installed a check."""
    if _check is not None:
        _check()
