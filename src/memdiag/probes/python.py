"""The Python heap as the interpreter sees it: allocator blocks and the GC."""

from __future__ import annotations

import gc
import sys
import threading
from dataclasses import dataclass

__all__ = ["PythonHeap", "python_heap"]


@dataclass(frozen=True, slots=True)
class PythonHeap:
    """Cheap interpreter-level figures.

    ``allocated_blocks`` (``sys.getallocatedblocks()``) counts live pymalloc blocks: it
    grows with Python objects and is flat when only native memory grows. ``objects`` is
    ``len(gc.get_objects())``: only filled on profile ticks (it walks the GC lists).
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
        objects=len(gc.get_objects()) if deep else None,
    )
