"""Cheap counts of resources that leak without much memory: asyncio tasks, gc.garbage.

File descriptors, threads, children and zombies are in every sample already (the core's
history columns); this module adds what the core does not count.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
import weakref
from collections import Counter
from typing import Any

from .census import type_name

__all__ = ["count_asyncio_tasks", "garbage_types", "tasks_collector", "watch_event_loop"]

_loops: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
_cache: tuple[float, int | None] = (0.0, None)
TASKS_EVERY = 5.0  # seconds between two counts on cheap ticks: counting is O(tasks)


def watch_event_loop(loop: Any = None) -> None:
    """Count the tasks of ``loop`` (default: the running loop) for the leak detector.

    Without a watched loop, memdiag counts the tasks asyncio tracks in its module-wide
    registry where this Python has one (3.10-3.13).
    """
    if loop is None:
        import asyncio

        loop = asyncio.get_running_loop()
    with _lock:
        _loops.add(loop)


def count_asyncio_tasks() -> int | None:
    """Pending asyncio tasks, or ``None`` where asyncio is not in use."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    with _lock:
        loops = [lp for lp in _loops if not lp.is_closed()]
    for _ in range(3):  # the sets may change while another thread runs its loop
        try:
            if loops:
                return sum(len(asyncio.all_tasks(lp)) for lp in loops)
            registry = getattr(asyncio.tasks, "_all_tasks", None)
            if registry is None:
                return None
            return sum(1 for t in list(registry) if not t.done())
        except RuntimeError:
            continue
    return None


def tasks_collector(profile: bool) -> int | None:
    """A sample collector: the task count, refreshed every few seconds."""
    global _cache
    now = time.monotonic()
    at, value = _cache
    if profile or at == 0.0 or now - at >= TASKS_EVERY:
        value = count_asyncio_tasks()
        _cache = (now, value)
    return value


def garbage_types(limit: int = 5, scan: int = 1000) -> list[tuple[str, int]]:
    """The most common types among the newest ``gc.garbage`` items (names only, never contents)."""
    items = gc.garbage[-scan:]
    return [(type_name(t), n) for t, n in Counter(map(type, items)).most_common(limit)]
