"""Leak detection and allocation profiling, at a cost a production service can carry.

Cheap signals run all the time and find *that* something grows and *what kind*: trends
of RSS, the Python heap, file descriptors, threads, asyncio tasks, child processes,
zombies and ``gc.garbage``, and an object-type census on profile ticks. Bounded
tracemalloc windows, started on demand or when growth is suspected and kept within
``trace_budget``, find *where*. ``memdiag.start()`` enables it when
``leak_detection`` is on (the default)::

    import memdiag
    from memdiag import leaks

    diag = memdiag.start()
    leaks.on_leak(lambda alert: print(alert["event"], alert["suspect"]["kind"]))
    leaks.start_tracing(diag, seconds=10)          # a window now, within the budget
    report = leaks.leaks_report(diag)              # {"suspects": [...], "tracing": {...}, ...}
    for s in report["suspects"]:
        print(s["kind"], s["file"], s["line"], s["growth_bytes_per_min"], s["confidence"])

Importing this package does not import or start tracemalloc.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

from .. import registry
from ..errors import MemdiagError
from .detector import LeakDetector
from .notify import on_leak, remove_leak_callback
from .resources import watch_event_loop
from .tracing import manager

if TYPE_CHECKING:
    from ..monitor import Monitor

__all__ = [
    "LeakDetector",
    "disable",
    "enable",
    "get_detector",
    "heap_report",
    "leaks_report",
    "on_leak",
    "remove_leak_callback",
    "start_tracing",
    "stop_tracing",
    "watch_event_loop",
]

_detectors: weakref.WeakKeyDictionary[Any, LeakDetector] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _resolve(diag: Monitor | None) -> Monitor:
    if diag is None:  # the shared instance, named by memdiag.service when it loads
        return registry.shared_monitor()
    return diag


def get_detector(diag: Monitor | None = None) -> LeakDetector:
    """The :class:`LeakDetector` of ``diag`` (the shared instance by default), created if needed."""
    d = _resolve(diag)
    with _lock:
        det = _detectors.get(d)
        if det is None or det.pid != os.getpid():  # after fork the monitor has new listeners
            det = LeakDetector(d)
            _detectors[d] = det
        return det


def enable(diag: Monitor | None = None) -> LeakDetector:
    """Attach leak detection to ``diag``'s monitor (idempotent).

    ``memdiag.start()`` / :meth:`MemoryDiagnostics.start` call this when
    ``config.leak_detection`` is true. Setting ``leak_detection = false`` later pauses
    the verdicts; the flight recorder keeps working.
    """
    from . import heapprof

    heapprof.configure(int(_resolve(diag).config.heap_sample_interval_kb) * 1024)  # before the profile starts
    det = get_detector(diag).attach()
    registry.register_section("leaks", _section)
    return det


def disable(diag: Monitor | None = None) -> None:
    """Detach leak detection from ``diag`` and end a running tracing window."""
    d = _resolve(diag)
    with _lock:
        det = _detectors.get(d)
    if det is not None:
        det.detach()


def _section(diag: Monitor) -> dict[str, Any]:
    return leaks_report(diag)


def leaks_report(diag: Monitor | None = None) -> dict[str, Any]:
    """The leak report of ``diag``: plain data, JSON-serialisable.

    Keys: ``suspects`` (best first; each has at least ``id``, ``kind``, ``file``, ``line``,
    ``growth_bytes_per_min``, ``growth_per_min``, ``confidence``, ``classified_by``,
    ``evidence``, ``suggestion``, ``first_seen``, ``last_seen``), ``resolved``,
    ``trends``, ``tracing`` (window state, budget used, last window's cost),
    ``top_allocations`` and ``growing_sites`` (of the last window), ``growing_containers``,
    ``census`` (types by growth), ``malloc``, ``notifications``, ``flight_recorder``,
    ``overhead``. Served at ``GET /api/memory/leaks`` and by ``memdiag leaks``.
    """
    return get_detector(diag).report()


def heap_report(diag: Monitor | None = None, limit: int = 5000) -> dict[str, Any]:
    """The live heap now, as plain data (``GET /api/memory/heap``; ``memdiag profile --heap``).

    Keys: ``backend``, ``taken_at``, ``interval_bytes``, ``samples_live``, ``dropped``,
    ``overhead_bytes``, ``sites_total`` and ``sites`` (largest first, at most ``limit``;
    each ``stack`` of ``[file, line, function]`` innermost first, ``domain``,
    ``live_bytes``, ``live_count``, ``alloc_bytes``, ``alloc_count``).

    Raises:
        memdiag.errors.MemdiagError: the heap profile is not running (``heap_profile``
            is off, or ``auto`` where the sampled profiler is not available).
    """
    from . import heapprof
    from .export import heap_data

    det = get_detector(diag)
    if not heapprof.running():
        raise MemdiagError(f"the heap profile is not running: {det.live.heap_state or 'leak detection not attached'}")
    return heap_data(heapprof.snapshot(), limit)


def start_tracing(
    diag: Monitor | None = None, seconds: float | None = None, frames: int | None = None
) -> dict[str, Any]:
    """Start a bounded allocation-tracing window now; returns its state.

    Args:
        diag: the instance whose configuration (budget, defaults) applies.
        seconds: window length (default ``trace_window_seconds``), in (0, 3600].
        frames: frames kept per allocation (default ``trace_frames``), 1..64.

    Raises:
        ValueError: a bad ``seconds`` or ``frames``.
        memdiag.errors.MemdiagError: a window is already running, or the trace budget
            does not allow one now (the message says which, and when one would fit).
    """
    d = _resolve(diag)
    det = get_detector(d)
    return manager().start(d.config, seconds, frames, reason="manual", on_done=det._window_done)


def stop_tracing() -> None:
    """End the running tracing window now (its result is still analysed and reported)."""
    manager().stop()
