"""This process's C library, for the few calls Python does not wrap (``prctl``,
``malloc_trim``, ``mallinfo2``).

``ctypes.CDLL(None)`` opens the symbols the interpreter is already linked with, libc
included: no file search. ``ctypes.util.find_library("c")``, what this replaced, runs
``ldconfig -p`` in a subprocess (milliseconds, and a short-lived child of the service
that a process-tree monitor then sees).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

__all__ = ["libc", "malloc_trim", "malloc_trim_available"]

_lock = threading.Lock()
_handle: ctypes.CDLL | None = None
_failed = False


def libc() -> ctypes.CDLL | None:
    """The C library's symbols (``errno`` kept for ``ctypes.get_errno``), or ``None``."""
    global _handle, _failed
    with _lock:
        if _handle is None and not _failed:
            try:
                _handle = ctypes.CDLL(None, use_errno=True)
            except OSError:
                try:
                    _handle = ctypes.CDLL("libc.so.6", use_errno=True)
                except OSError:
                    _failed = True
        return _handle


_trim: Any = None
_trim_checked = False


def malloc_trim_available() -> bool:
    """True where the C library has glibc's ``malloc_trim``."""
    global _trim, _trim_checked
    if not _trim_checked:
        lib = libc()
        fn = getattr(lib, "malloc_trim", None) if lib is not None else None
        if fn is not None:
            fn.argtypes = [ctypes.c_size_t]
            fn.restype = ctypes.c_int
        _trim, _trim_checked = fn, True
    return _trim is not None


def malloc_trim(pad: int = 0) -> int | None:
    """glibc's ``malloc_trim(pad)``: hand the free pages of every malloc arena back to the OS
    (those in the middle of a heap too, not only its top). 1 when memory was released, 0 when
    there was none, ``None`` where the C library has no ``malloc_trim`` (not glibc)."""
    return int(_trim(pad)) if malloc_trim_available() else None
