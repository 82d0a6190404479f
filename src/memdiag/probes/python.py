"""The Python heap as the interpreter sees it: allocator blocks and the GC."""

from __future__ import annotations

import _thread
import gc
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from .._record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

try:  # setup.py builds it where a compiler is present
    from . import _gcwalk
except ImportError:  # pragma: no cover - exercised where the extension is not built
    _gcwalk = None  # type: ignore[assignment]

__all__ = ["STDLIB_DIRS", "PythonHeap", "exclusive_gil", "python_heap", "referrers", "tracked_objects", "yield_gil"]

# The standard library's directories (as given and resolved), each ending in a separator:
# where ``os`` comes from is sysconfig's "stdlib" and "platstdlib" on every CPython layout
# (a virtualenv's included), without importing sysconfig and its build data (~150 KiB).
STDLIB_DIRS: tuple[str, ...] = tuple(
    {d + os.sep for d in (os.path.dirname(os.__file__), os.path.dirname(os.path.realpath(os.__file__)))}
)

# Above this many live allocator blocks the object count is skipped: the count holds the
# interpreter for ~15 ms per million objects (see exclusive_gil).
MAX_BLOCKS_FOR_COUNT = 4_000_000
# The switch interval inside exclusive_gil: long enough for a walk of a few million objects,
# short enough that a thread which took the GIL meanwhile gives it back within this long.
EXCLUSIVE_SWITCH_INTERVAL = 0.1


def yield_gil() -> None:
    """Let a thread that waits for the GIL run now, between two steps of memdiag's work.

    A background thread running Python code keeps the GIL until it blocks, or until a
    waiting thread has waited the switch interval (5 ms by default) and forces a switch:
    a request that arrives meanwhile waits that long. memdiag's threads call this between
    the steps of a tick, a check or a snapshot round, so that a request waits for one
    step at most (``time.sleep(0)`` releases the GIL and takes it back: ~1 us when no
    thread waits; ``benchmarks/bench_gil.py`` measures the holds).
    """
    time.sleep(0)


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
    (and block) in between. Keep the body short and free of I/O and imports: other
    threads wait.

    The interval is raised to :data:`EXCLUSIVE_SWITCH_INTERVAL`, not "forever": if the
    body releases the GIL anyway (an import stats files, a finalizer does I/O) or a
    thread that was already waiting times out and forces a switch, the thread that gets
    the GIL keeps it until the waiting thread's timeout (the interval) runs out. With
    the interval at 1000 s that was a 1000 s stall of memdiag's thread and of every other
    waiter, with tracing on meanwhile (issue 14: a 5 s tracing window ran 39-76 s and the
    service crawled at 0.06-0.13x).
    """
    global _exclusive_depth, _exclusive_saved
    with _exclusive_lock:  # the first one in saves the host's settings, the last one out restores them
        if _exclusive_depth == 0:
            _exclusive_saved = (sys.getswitchinterval(), gc.isenabled())
            sys.setswitchinterval(max(_exclusive_saved[0], EXCLUSIVE_SWITCH_INTERVAL))
            gc.disable()
        _exclusive_depth += 1
    try:
        yield
    finally:
        with _exclusive_lock:
            _exclusive_depth -= 1
            if _exclusive_depth == 0:
                _restore_host_settings()


# Two of memdiag's threads may overlap in exclusive_gil (a monitor tick and a heap round):
# each saving and restoring on its own, the second would save the first one's raised
# interval and restore it last, leaving the host at 100 ms for good.
_exclusive_lock = _thread.allocate_lock()
_exclusive_depth = 0
_exclusive_saved: tuple[float, bool] = (0.005, True)


def _restore_host_settings() -> None:
    interval, was_enabled = _exclusive_saved
    if was_enabled:
        gc.enable()
    sys.setswitchinterval(interval)


def _exclusive_after_fork() -> None:
    """In a child forked while another thread walked: that thread is gone, so its hold on
    the settings is released (the host's interval and collector back) and the lock is new."""
    global _exclusive_lock, _exclusive_depth
    _exclusive_lock = _thread.allocate_lock()
    if _exclusive_depth:
        _exclusive_depth = 0
        _restore_host_settings()


os.register_at_fork(after_in_child=_exclusive_after_fork)


def tracked_objects(count: bool = False) -> tuple[list[Any], dict[type, int] | None]:
    """``gc.get_objects()`` safe to walk however long the walk takes, and (``count``) the
    number of tracked objects by type, every one included.

    With the C extension ``_gcwalk`` built, the list is taken and filtered in one C call
    (collector off, no Python code run): the tuples another thread may still be building
    with ``tuple(generator)`` (an exact tuple referenced only by its builder and the
    list) are left out, so a thread switch in the middle of the walk can no longer hand
    that thread a second reference (``SystemError`` in ``_PyTuple_Resize``). Complete
    tuples held once are left out too; the walks look for containers, ``Popen`` objects
    and named referrers, never tuples, and the counts come from the same pass. Without
    the extension (fallback) it is the plain list, and the walk's safety is today's
    :func:`exclusive_gil` alone: it must finish within the switch interval. Walk it
    under :func:`exclusive_gil` either way (that also keeps finalizers from running).
    """
    if _gcwalk is not None:
        objs, pairs = _gcwalk.objects(count)
        return objs, (dict(pairs) if pairs is not None else None)
    objs = gc.get_objects()
    return objs, (dict(Counter(map(type, objs))) if count else None)


def referrers(obj: Any) -> list[Any]:
    """``gc.get_referrers(obj)`` without tuples under construction (see :func:`tracked_objects`)."""
    if _gcwalk is not None:
        return _gcwalk.referrers(obj)
    return gc.get_referrers(obj)


def count_objects() -> int | None:
    """``len(gc.get_objects())``, safely (see :func:`exclusive_gil`); ``None`` on huge heaps."""
    if sys.getallocatedblocks() > MAX_BLOCKS_FOR_COUNT:
        return None
    with exclusive_gil():
        # One C-level call from the list's creation to its release: map() calls
        # gc.get_objects(None) and len() on its result, and no bytecode (hence no thread
        # switch) runs while the list is alive, whatever the switch interval does.
        return sum(map(len, map(gc.get_objects, (None,))))


@record
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
    import threading  # here: the command line's outside views import this module, and no thread

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
