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

__all__ = ["libc"]

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
