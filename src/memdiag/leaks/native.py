"""glibc malloc figures (``mallinfo2``): native heap in use, and free memory it retains.

Python's large objects (> 512 bytes), C extensions and ``ctypes`` all allocate through
malloc. ``mallinfo2`` tells apart memory malloc hands out (``in_use``) from free memory it
keeps mapped instead of returning to the OS (``free``): a growing ``in_use`` with a flat
Python heap is a native leak; a large ``free`` is allocator retention, which
``malloc_trim(0)`` (the cleanup ladder's ``malloc_trim`` rung) gives back.

Where glibc (or ``mallinfo2``, glibc >= 2.33) is missing, :func:`malloc_info` returns
``None`` and the figures are simply absent.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from .._libc import libc
from .._record import record

__all__ = ["MallocInfo", "malloc_info"]


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@record
class MallocInfo:
    """One ``mallinfo2`` reading, in bytes.

    Attributes:
        in_use: bytes handed out by malloc (``uordblks + hblkhd``: arena chunks and
            mmapped blocks).
        free: free bytes malloc keeps in its arenas (``fordblks``): retained, not leaked.
        mmapped: bytes in mmapped blocks (``hblkhd``; large allocations).
        releasable: free bytes at the top of the main arena (``keepcost``).
    """

    in_use: int
    free: int
    mmapped: int
    releasable: int


_fn_lock = threading.Lock()
_fn: object = None  # None: not looked up yet; False: unavailable; else the C function


def _mallinfo2() -> Any:
    global _fn
    with _fn_lock:
        if _fn is None:
            try:
                lib = libc()
                if lib is None:
                    raise OSError("no C library")
                fn = lib.mallinfo2
                fn.restype = _Mallinfo2
                fn.argtypes = []
                _fn = fn
            except (OSError, AttributeError):  # not glibc, or glibc < 2.33
                _fn = False
        return _fn or None


def malloc_info() -> MallocInfo | None:
    """Read malloc's figures (a few microseconds to a millisecond); ``None`` if unavailable."""
    fn = _mallinfo2()
    if fn is None:
        return None
    try:
        mi = fn()
    except Exception:  # a foreign libc that exports the name with another layout
        return None
    return MallocInfo(in_use=mi.uordblks + mi.hblkhd, free=mi.fordblks, mmapped=mi.hblkhd, releasable=mi.keepcost)
