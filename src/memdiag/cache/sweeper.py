"""One shared background thread that frees expired cache entries.

Design: caches do not each own a thread. The first time a cache stores an entry that
can expire, it calls :func:`watch`, which hands it (weakly) to the single daemon thread
``memdiag-cache-sweeper``, starting that thread if it is not running. The thread sleeps
until the earliest cache is due (each cache's ``cleanup_interval``), calls that cache's
``expire()`` (which frees what has expired, in bounded chunks of lock hold), and goes back
to sleep. It holds caches only weakly between sweeps, and it exits when no watched cache
is left alive; the next :func:`watch` starts a new one.

:func:`watch` runs under the calling cache's lock, so it never waits for anything another
thread can hold: a thread holding a lock can allocate, an allocation can run the garbage
collector, and a finaliser it runs can call a cache and wait for that cache's lock. (The
cache stress deadlocked that way when ``watch`` took a condition variable the sweeper
held: one writer held cache A and the condition and waited for cache B from a finaliser,
another held cache B and waited for the condition.) So the hand-over is a list append,
the wake-up is the release of a plain lock used as a binary semaphore (a release never
blocks), and the thread's start is guarded by a lock taken only without blocking.

Nothing starts at import time. After ``fork()`` the child forgets the parent's thread
(it does not exist there) and re-creates its locks; the child's caches are re-watched
by their next write with a TTL.
"""

from __future__ import annotations

import _thread
import gc
import os
import threading
import time
import weakref
from typing import Any

from .._logging import get_logger

__all__ = ["running", "watch"]

_log = get_logger("memdiag.cache")

# Written by watch() (under a cache's lock): weak references of the caches to sweep.
_incoming: list[weakref.ref[Any]] = []
# Released = a wake-up is pending; the sweeper sleeps in acquire(timeout=...).
_wake = _thread.allocate_lock()
_wake.acquire()
# Guards starting the thread and the thread's decision to exit; watch() never waits for it.
_state = _thread.allocate_lock()
# Owned by the sweeper thread: the caches it sweeps.
_watched: weakref.WeakSet[Any] = weakref.WeakSet()
_thread_obj: threading.Thread | None = None
_generation = 0


def watch(cache: Any) -> None:
    """Sweep ``cache`` (held weakly) every ``cache.cleanup_interval`` seconds.

    ``cache`` must have ``cleanup_interval`` (seconds), ``_next_sweep`` (a
    ``time.monotonic()`` deadline it keeps) and ``expire()``. Never blocks on another
    thread (module docstring).
    """
    global _thread_obj
    _incoming.append(weakref.ref(cache))
    try:
        _wake.release()
    except RuntimeError:  # a wake-up is already pending
        pass
    t = _thread_obj
    if t is not None and t.is_alive():
        return
    # Not acquired: another watch() is starting the thread, or the thread is deciding
    # whether to exit; either way it reads _incoming (appended above) before it does.
    if not _state.acquire(False):
        return
    try:
        t = _thread_obj
        if t is None or not t.is_alive():
            t = threading.Thread(target=_run, args=(_generation,), name="memdiag-cache-sweeper", daemon=True)
            _start_without_collections(t)
            _thread_obj = t
    finally:
        _state.release()


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
    t = _thread_obj
    return t is not None and t.is_alive()


def _take_incoming() -> None:
    """In the sweeper thread: move what watch() handed over into _watched."""
    while _incoming:
        cache = _incoming.pop(0)()
        if cache is not None:
            _watched.add(cache)
            del cache


def _may_exit() -> bool:
    """In the sweeper thread, with nothing to sweep: whether it may exit (then it is no
    longer the running thread). Decided under _state, after a last look at _incoming,
    so that a watch() racing with it either is seen here or starts a new thread."""
    global _thread_obj
    with _state:
        if _incoming:
            return False
        if _thread_obj is threading.current_thread():
            _thread_obj = None
        return True


def _run(generation: int) -> None:
    while generation == _generation:
        _take_incoming()
        caches = list(_watched)
        if not caches:
            if _may_exit():
                return
            continue
        now = time.monotonic()
        due = [c for c in caches if c._next_sweep <= now]
        if not due:
            wait = min(c._next_sweep for c in caches) - now
            del caches
            _wake.acquire(timeout=min(max(wait, 0.001), 3600.0))  # watch() releases it
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
    global _wake, _state, _thread_obj, _generation
    _wake = _thread.allocate_lock()
    _wake.acquire()
    _state = _thread.allocate_lock()
    _thread_obj = None
    _incoming.clear()
    _watched.clear()
    _generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
