"""The LD_PRELOAD malloc shim (``memdiag.leaks._preload``): native allocations by Python line.

``memdiag run`` puts the shim in the child's ``LD_PRELOAD`` (unless ``heap_profile`` is
``off``); it wraps ``malloc``, ``calloc``, ``realloc`` and ``free`` (not ``mmap``,
``posix_memalign`` or ``memalign``: blocks from those are not seen) with the same Poisson
sampling over bytes as the CPython allocator hooks, and records the Python stack of the
allocating thread, so a ``ctypes`` or C-extension leak is named at the Python line that
called into native code, at its true rate. ``ctypes`` releases the GIL around a foreign
call: then the thread's own frames are read (they cannot change meanwhile) and named
from the frames the CPython hooks have interned (they hand over the stack of the next
allocation the thread makes with the GIL, usually the result's object): the first
samples of a new line may show as ``<Python frame not seen with the GIL yet>``.
Python's own calls to malloc are masked (counted once, as ``domain="python"``). The
shim is loaded into every program of the command: its Python symbols are weak, so
non-Python programs run unaffected. This module finds the shim in the
running process and reads its tables; :mod:`memdiag.leaks.heapprof` merges them into
its snapshots as ``domain="native"`` sites.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

__all__ = ["ENV_INTERVAL", "active", "environment", "library_path", "snapshot_rows"]

ENV_INTERVAL = "MEMDIAG_PRELOAD_INTERVAL"
_SNAP_SYMBOL = "memdiag_preload_snapshot"


def library_path() -> str | None:
    """The built shim's path, or ``None`` when it was not built."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        names = os.listdir(here)
    except OSError:
        return None
    for name in sorted(names):
        if name.startswith("_preload") and name.endswith(".so"):
            return os.path.join(here, name)
    return None


def environment(env: dict[str, str], interval_bytes: int = 512 * 1024) -> dict[str, str]:
    """``env`` with the shim preloaded (unchanged when the shim is not built)."""
    lib = library_path()
    if lib is None:
        return env
    out = dict(env)
    prev = out.get("LD_PRELOAD", "")
    out["LD_PRELOAD"] = lib if not prev else f"{lib} {prev}"
    out[ENV_INTERVAL] = str(int(interval_bytes))
    return out


def _handle() -> Any:
    try:
        lib = ctypes.PyDLL(None)
        fn = getattr(lib, _SNAP_SYMBOL)
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.py_object
    fn.argtypes = []
    return fn


_fn: Any = None
_looked = False


def active() -> bool:
    """Whether the shim is loaded (preloaded) in this process."""
    global _fn, _looked
    if not _looked:
        _fn = _handle()
        _looked = True
    return _fn is not None


def snapshot_rows() -> tuple[list[tuple[Any, ...]], dict[str, int]]:
    """The shim's sampled stacks, as :mod:`memdiag.leaks._heapprof` rows, and its counters."""
    if not active():
        return [], {}
    rows, stats = _fn()
    return rows, stats
