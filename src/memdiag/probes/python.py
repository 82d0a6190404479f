"""The Python heap as the interpreter sees it: allocator blocks and the GC."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["PythonHeap", "exclusive_gil", "python_heap"]

# Above this many live allocator blocks the object count is skipped: the count holds the
# interpreter for ~15 ms per million objects (see exclusive_gil).
MAX_BLOCKS_FOR_COUNT = 4_000_000


@contextmanager
def exclusive_gil() -> Iterator[None]:
    """Keep every other thread of the process from running for the duration.

    ``gc.get_objects()`` returns new references to every tracked object, including a
    tuple another thread is still building with ``tuple(generator)``; if that thread
    runs while the list is alive, CPython's ``_PyTuple_Resize`` sees a second reference
    and raises ``SystemError: bad argument to internal function`` in the *host's* code
    (reproduced on 3.10-3.13). So a walk of ``gc.get_objects()`` must finish, and drop
    its list, before any other thread runs: this raises the interpreter's switch interval
    so the GIL is not handed over, and disables the collector so no finalizer can run
    (and block) in between. Keep the body short and free of I/O: other threads wait.
    """
    old_interval = sys.getswitchinterval()
    was_enabled = gc.isenabled()
    sys.setswitchinterval(1000.0)
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        sys.setswitchinterval(old_interval)


def count_objects() -> int | None:
    """``len(gc.get_objects())``, safely (see :func:`exclusive_gil`); ``None`` on huge heaps."""
    if sys.getallocatedblocks() > MAX_BLOCKS_FOR_COUNT:
        return None
    with exclusive_gil():
        return len(gc.get_objects())


@dataclass(frozen=True, slots=True)
class PythonHeap:
    """Cheap interpreter-level figures.

    ``allocated_blocks`` (``sys.getallocatedblocks()``) counts live pymalloc blocks: it
    grows with Python objects and is flat when only native memory grows. ``objects`` is
    ``len(gc.get_objects())``: only filled on profile ticks, under :func:`exclusive_gil`,
    and left ``None`` on heaps above :data:`MAX_BLOCKS_FOR_COUNT` blocks.
    """

    allocated_blocks: int
    gc_counts: tuple[int, int, int]
    gc_collections: tuple[int, ...]
    gc_collected: tuple[int, ...]
    gc_uncollectable: tuple[int, ...]
    garbage: int
    threads: int
    objects: int | None = None


def python_heap(deep: bool = False) -> PythonHeap:
    """Read the interpreter's heap figures (~10 us; ``deep`` adds an object count)."""
    stats = gc.get_stats()
    return PythonHeap(
        allocated_blocks=sys.getallocatedblocks(),
        gc_counts=gc.get_count(),
        gc_collections=tuple(s.get("collections", 0) for s in stats),
        gc_collected=tuple(s.get("collected", 0) for s in stats),
        gc_uncollectable=tuple(s.get("uncollectable", 0) for s in stats),
        garbage=len(gc.garbage),
        threads=threading.active_count(),
        objects=count_objects() if deep else None,
    )
