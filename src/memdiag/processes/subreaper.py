"""Child-subreaper mode: adopt orphaned descendants and reap them.

Normally when a child of ours dies, its own children are re-parented to init (or to the
container's init), and they leave our tree: their memory is no longer counted and, when
they exit, nobody here can reap them. With ``prctl(PR_SET_CHILD_SUBREAPER)`` the kernel
re-parents such orphans to us instead. memdiag then reaps an adopted orphan on the next
monitor tick after it exits (it can tell an orphan from a child someone here started: it
saw the orphan under another parent first). Orphans first seen already adopted are left
to the zombie rung of the cleanup ladder, which reaps them only when no object owns them.

It is opt-in (config ``subreaper``; ``memdiag run`` turns it on): a service that forks
raw children and waits for them itself should not have grandchildren added to its family.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

from .._libc import libc
from .._logging import get_logger

__all__ = ["is_child_subreaper", "set_child_subreaper", "subreaper_mode"]

log = get_logger("memdiag.processes")

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37

_mode = False  # set by set_child_subreaper; the observer reaps adopted orphans while on


def _prctl() -> Any:
    lib = libc()
    if lib is None:
        raise OSError("the C library could not be loaded: no prctl")
    return lib.prctl


def set_child_subreaper(on: bool = True) -> None:
    """Make this process a child subreaper (``on``) or stop being one.

    Raises:
        OSError: the kernel refused (not Linux 3.4+).
    """
    global _mode
    prctl = _prctl()
    if prctl(PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1 if on else 0), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")
    _mode = on
    log.info("child subreaper mode %s", "on" if on else "off")


def subreaper_mode() -> bool:
    """True once :func:`set_child_subreaper` turned the mode on in this process (cheap:
    the tree observer asks on every tick; the kernel clears the mode in a forked child)."""
    return _mode


def _after_fork_in_child() -> None:
    global _mode
    _mode = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def is_child_subreaper() -> bool:
    """True if this process is a child subreaper now (the kernel's answer)."""
    try:
        prctl = _prctl()
    except OSError:
        return False
    value = ctypes.c_int(0)
    if prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) != 0:
        return False
    return bool(value.value)
