"""One shared background thread that frees expired cache entries.

Design: caches do not each own a thread. The first time a cache stores an entry that
can expire, it calls :func:`watch`, which adds it (weakly) to a set and starts the
single daemon thread ``memdiag-cache-sweeper`` if it is not running. The thread
sleeps until the earliest cache is due (each cache's ``cleanup_interval``), calls
that cache's ``expire()`` (which frees what has expired, in bounded chunks of lock
hold), and goes back to sleep. It holds caches only weakly between sweeps, and it
exits when no watched cache is left alive; the next :func:`watch` starts a new one.

Nothing starts at import time. After ``fork()`` the child forgets the parent's thread
(it does not exist there) and re-creates its lock; the child's caches stay watched
and the thread is started again by the next :func:`watch` (any ``set`` with a TTL).
"""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref
from typing import Any

from .._logging import get_logger

__all__ = ["running", "watch"]

_log = get_logger("memdiag.cache")

_cond = threading.Condition(threading.Lock())
_watched: weakref.WeakSet[Any] = weakref.WeakSet()
_thread: threading.Thread | None = None
_generation = 0


def watch(cache: Any) -> None:
    """Sweep ``cache`` (held weakly) every ``cache.cleanup_interval`` seconds.

    ``cache`` must have ``cleanup_interval`` (seconds), ``_next_sweep`` (a
    ``time.monotonic()`` deadline it keeps) and ``expire()``.
    """
    global _thread
    with _cond:
        _watched.add(cache)
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, args=(_generation,), name="memdiag-cache-sweeper", daemon=True)
            _start_without_collections(_thread)
        else:
            _cond.notify()


def _start_without_collections(thread: threading.Thread) -> None:
    """``thread.start()`` with the garbage collector off until it returns.

    The caller holds a cache's lock (the write that first stores an entry that can expire),
    and ``start()`` waits until the new thread has run its start-up. A collection there would
    run the finalizers of whatever garbage is due, in the new thread; one that calls that
    cache waits for its lock, held by the thread that waits for this one: a deadlock of the
    host (the cache stress hung on it). Without collections, the start-up runs no Python
    code of the application. The collector's state is restored unless something else
    changed it meanwhile.
    """
    was = gc.isenabled()
    if was:
        gc.disable()
    try:
        thread.start()
    finally:
        if was and not gc.isenabled():
            gc.enable()


def running() -> bool:
    """Whether the sweeper thread is alive (for tests and diagnostics)."""
    t = _thread
    return t is not None and t.is_alive()


def _run(generation: int) -> None:
    global _thread
    while True:
        with _cond:
            if generation != _generation:
                return
            caches = list(_watched)
            if not caches:
                _thread = None
                return
            now = time.monotonic()
            due = [c for c in caches if c._next_sweep <= now]
            if not due:
                wait = min(c._next_sweep for c in caches) - now
                del caches
                _cond.wait(timeout=min(max(wait, 0.001), 3600.0))
                continue
        del caches
        for cache in due:
            try:
                cache.expire()
            except Exception:  # never die silently: log and keep sweeping the others
                _log.exception("memdiag cache sweeper: expire() failed on %r", cache)
                cache._next_sweep = time.monotonic() + cache.cleanup_interval
        del due, cache


def _after_fork_in_child() -> None:
    global _cond, _thread, _generation
    _cond = threading.Condition(threading.Lock())
    _thread = None
    _generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
