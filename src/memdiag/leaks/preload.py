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
Python's own calls to malloc are masked (counted once, as ``domain="python"``).
``ctypes.CDLL(find_library("c")).malloc`` is looked up in libc's own handle, which an
``LD_PRELOAD`` library does not interpose: :func:`route_ctypes` (applied when the sampler
starts under the shim) hands ctypes the shim's ``malloc``, ``calloc``, ``realloc`` and
``free`` when a lookup found libc's. The
shim is loaded into every program of the command: its Python symbols are weak, so
non-Python programs run unaffected. This module finds the shim in the
running process and reads its tables; :mod:`memdiag.leaks.heapprof` merges them into
its snapshots as ``domain="native"`` sites.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

__all__ = ["ENV_INTERVAL", "active", "environment", "library_path", "route_ctypes", "snapshot_rows"]

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


_ALLOCATOR = ("malloc", "calloc", "realloc", "free")
_routed = False


def _address(func: Any) -> int | None:
    try:
        return ctypes.cast(func, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return None


def route_ctypes() -> bool:
    """Make ctypes lookups of libc's allocator functions find the shim's (idempotent).

    ``ctypes.CDLL("libc.so.6").malloc`` is ``dlsym`` in libc's handle: libc's own function,
    not the preloaded one, so a ctypes leak through it was never sampled (a new user's
    service under ``memdiag run``: no native line, no verdict). ``CDLL.__getitem__`` (which
    attribute access goes through) now returns, for these four names only and only when
    the lookup found exactly libc's function, a function pointer of the same library's
    kind at the shim's function, which allocates with libc's. A library's own allocator
    (jemalloc loaded by ctypes) is left alone. Returns whether the shim is in use.
    """
    global _routed
    if _routed:
        return True
    if not active():
        return False
    try:
        default = ctypes.CDLL(None)
        libc = ctypes.CDLL("libc.so.6")
        original = ctypes.CDLL.__getitem__
        own = {name: _address(original(libc, name)) for name in _ALLOCATOR}
        shim = {name: _address(original(default, name)) for name in _ALLOCATOR}
    except (OSError, AttributeError):
        return False
    libc_at = {own[n]: n for n in _ALLOCATOR if own[n] is not None and shim[n] is not None and own[n] != shim[n]}
    if not libc_at:
        return False

    def __getitem__(self: Any, name_or_ordinal: Any) -> Any:  # the method it replaces
        func = original(self, name_or_ordinal)
        name = libc_at.get(_address(func)) if name_or_ordinal in _ALLOCATOR else None
        if name is None or name != name_or_ordinal:
            return func
        routed = self._FuncPtr(shim[name])
        routed.__name__ = name
        return routed

    ctypes.CDLL.__getitem__ = __getitem__  # type: ignore[method-assign]
    _routed = True
    return True
