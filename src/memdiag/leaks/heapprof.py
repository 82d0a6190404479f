"""Sampled heap profile: which Python lines hold the live heap, always on, at ~1 % cost.

The native backend (``memdiag.leaks._heapprof``, a C extension built on install) wraps
CPython's allocators (raw, mem and object domains) and samples allocations with a
Poisson process over bytes: on average one sample per ``interval_bytes`` allocated
(512 KiB by default, as Go's ``MemProfileRate`` and ddtrace), whatever the allocation
sizes. A sample records the Python stack, the size and the weight ``1 / (1 - exp(-size /
interval))`` that makes the totals unbiased; the frees of sampled blocks are seen, so a
snapshot gives both the *live* heap per stack (in use now) and the *allocated* bytes
since :func:`start` (churn). Under ``memdiag run`` a preloaded malloc shim adds the
native allocations (``ctypes``, C extensions) named at the Python line that called into
native code (``domain="native"``).

Where the extension is missing (no compiler at install time, another interpreter),
memdiag says so once on the ``memdiag`` logger and ``available()`` is false: leak
detection then names sites with bounded tracemalloc windows (:mod:`memdiag.leaks.tracing`,
``heap_profile = "auto"``), or, with ``heap_profile = "on"``, this module's
``backend="tracemalloc"`` stand-in traces every allocation (exact, and several times
slower: never started by memdiag on its own).

memdiag's own allocations are left out: its threads are never sampled (they call
:func:`ignore_current_thread`, and threads named ``memdiag-*`` are excluded at every
snapshot), and frames under memdiag's package directory are dropped from the stacks
(a site whose innermost frame is memdiag's is dropped whole).
"""

from __future__ import annotations

import importlib
import itertools
import operator
import os
import threading
import time
from typing import Any

from .._logging import get_logger
from .._record import record

__all__ = [
    "DEFAULT_INTERVAL_BYTES",
    "Frame",
    "HeapProfile",
    "HeapSite",
    "available",
    "backend",
    "configure",
    "ignore_current_thread",
    "malloc_held",
    "running",
    "sites_of",
    "snapshot",
    "start",
    "stop",
]

log = get_logger("memdiag")

DEFAULT_INTERVAL_BYTES = 512 * 1024
MAX_FRAMES_LIMIT = 128
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # .../memdiag/

FORCE_ENV = "MEMDIAG_HEAPPROF_BACKEND"  # "tracemalloc": use the stand-in even where the extension loads
try:  # the C extension (a module, not a layer of the pipeline: import_module says so)
    if os.environ.get(FORCE_ENV) == "tracemalloc":
        raise ImportError(f"{FORCE_ENV}=tracemalloc")
    _native: Any = importlib.import_module("memdiag.leaks._heapprof")
except Exception as _exc:  # not built here, or built for another interpreter
    _native = None
    _native_error: str | None = f"{type(_exc).__name__}: {_exc}"
else:
    _native_error = None


@record
class Frame:
    filename: str
    lineno: int
    function: str


@record
class HeapSite:
    stack: tuple[Frame, ...]  # innermost (allocating) frame first, bounded depth
    domain: str  # "python" (PyMem/PyObject domains) or "native" (malloc via the preload shim)
    live_bytes: float  # unbiased estimate of bytes allocated at this stack and still live
    live_count: float  # estimated live blocks
    alloc_bytes: float  # estimated bytes allocated at this stack since start() (churn)
    alloc_count: float


@record
class HeapProfile:
    taken_at: float  # time.monotonic()
    sites: tuple[HeapSite, ...]
    interval_bytes: int  # mean sampling interval
    samples_live: int  # sampled blocks currently tracked
    dropped: int  # samples lost to the bound (table full)
    overhead_bytes: int  # memory the profiler itself holds
    backend: str  # "native" | "preload" | "tracemalloc"
    bound_bytes: int | None = None  # the most overhead_bytes can reach (None: tracemalloc's own)


_lock = threading.Lock()
STANDIN_FRAMES = 8  # the tracemalloc stand-in: a snapshot's cost grows with the frames
_state: dict[str, Any] = {
    "running": False,
    "interval": DEFAULT_INTERVAL_BYTES,
    "default_interval": DEFAULT_INTERVAL_BYTES,
    "frames": 32,
    "warned": False,
    "started_tracemalloc": False,
}
_frame_cache: dict[tuple[Any, int, Any], Frame] = {}
_FRAME_CACHE_MAX = 4096  # Frame objects reused across snapshots (cleared when full)


def available() -> tuple[bool, str | None]:
    """Whether the native sampler can run here, and why not if it cannot."""
    if _native is None:
        return False, f"the C extension memdiag.leaks._heapprof is not available ({_native_error})"
    return True, None


def backend() -> str:
    """``"native"``, ``"preload"`` (native plus the malloc shim of ``memdiag run``) or ``"tracemalloc"``."""
    if _native is None:
        return "tracemalloc"
    from . import preload

    return "preload" if preload.active() else "native"


def _check(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be from {lo} to {hi}, got {value}")
    return value


def configure(interval_bytes: int) -> None:
    """The interval :func:`start` uses when given none (``heap_sample_interval_kb``)."""
    _state["default_interval"] = _check("interval_bytes", interval_bytes, 1, 1 << 40)


def start(interval_bytes: int | None = None, max_frames: int = 32) -> None:
    """Start sampling (idempotent: a running sampler takes the new settings).

    ``interval_bytes`` defaults to the configured interval (512 KiB unless
    :func:`configure` said otherwise).

    Raises:
        ValueError: ``interval_bytes`` not in 1..2**40 or ``max_frames`` not in 1..128.
    """
    if interval_bytes is None:
        interval_bytes = int(_state["default_interval"])
    interval = _check("interval_bytes", interval_bytes, 1, 1 << 40)
    frames = _check("max_frames", max_frames, 1, MAX_FRAMES_LIMIT)
    with _lock:
        _state.update(interval=interval, frames=frames)
        if _native is None:
            if not _state["warned"]:
                _state["warned"] = True
                log.warning(
                    "memdiag: the sampled heap profiler is not available (%s); falling back to tracemalloc",
                    _native_error,
                )
            _standin_start(frames)
            return
        _native.start(interval, frames)
        _state["running"] = True
        _refresh_ignored_threads()
    from . import preload

    if preload.active():
        preload.route_ctypes()  # ctypes' libc malloc to the shim (see preload.route_ctypes)


def stop() -> None:
    """Stop sampling; the allocator hooks are removed if nothing was installed on top of them."""
    with _lock:
        if _native is not None:
            _native.stop()
        elif _state["running"] and _state["started_tracemalloc"]:
            import tracemalloc

            tracemalloc.stop()
            _state["started_tracemalloc"] = False
        _state["running"] = False


def running() -> bool:
    if _native is not None:
        return bool(_native.running())
    return bool(_state["running"])


def ignore_current_thread(flag: bool = True) -> None:
    """Never sample the allocations of the calling thread (memdiag's own threads call this)."""
    if _native is not None:
        _native.set_thread_ignored(flag)


def _refresh_ignored_threads() -> None:
    idents = [t.ident for t in threading.enumerate() if t.name.startswith("memdiag-") and t.ident is not None]
    _native.set_ignored_threads(idents[:64])  # type: ignore[union-attr]


def _frame(filename: Any, lineno: int, function: Any) -> Frame:
    key = (filename, lineno, function)
    f = _frame_cache.get(key)
    if f is None:
        if len(_frame_cache) >= _FRAME_CACHE_MAX:
            _frame_cache.clear()
        f = Frame(filename if isinstance(filename, str) else "", int(lineno), function or "")
        _frame_cache[key] = f
    return f


def _own(filename: str) -> bool:
    return filename.startswith(_OWN_DIR)


# A row's frames tuple -> its site key, memoised by the tuple's identity: the extension
# returns the same tuple for a stack at every snapshot (see _hp_core.h), so a profile of
# thousands of stacks is converted once, not every heap_snapshot_seconds (hashing stacks of
# Frame objects was two thirds of a 3 000-stack snapshot). The keys are canonical (one
# object per distinct (domain, stack)), so rows are merged by identity.
_stack_memo: dict[int, tuple[Any, str, tuple[str, tuple[Frame, ...]] | None]] = {}
_canon: dict[tuple[str, tuple[Frame, ...]], tuple[str, tuple[Frame, ...]]] = {}
_STACK_MEMO_MAX = 40_000  # the extensions' stack tables hold at most 12 288 each


def _site_key(domain: str, frames: Any) -> tuple[str, tuple[Frame, ...]] | None:
    """``(domain, stack)`` of a row (memdiag's frames dropped), None when memdiag allocated it."""
    memo = _stack_memo.get(id(frames))
    if memo is not None and memo[0] is frames and memo[1] == domain:
        return memo[2]
    key: tuple[str, tuple[Frame, ...]] | None = None
    if not (frames and frames[0][0] and _own(frames[0][0])):
        k = (domain, tuple(_frame(f, n, fn) for f, n, fn in frames if not (f and _own(f))))
        key = _canon.setdefault(k, k)
    if len(_stack_memo) >= _STACK_MEMO_MAX:
        _stack_memo.clear()
        _canon.clear()
    _stack_memo[id(frames)] = (frames, domain, key)
    return key


def _merge_rows(rows: list[tuple[Any, ...]]) -> tuple[HeapSite, ...]:
    """Rows of the native tables as sites: memdiag's frames dropped, equal stacks merged."""
    merged: dict[int, list[Any]] = {}
    for domain, frames, lb, lc, ab, ac in rows:
        key = _site_key(domain, frames)
        if key is None:
            continue  # allocated by memdiag itself
        acc = merged.get(id(key))
        if acc is None:
            merged[id(key)] = [key, max(lb, 0.0), max(lc, 0.0), ab, ac]
        else:
            acc[1] += max(lb, 0.0)
            acc[2] += max(lc, 0.0)
            acc[3] += ab
            acc[4] += ac
    return tuple(HeapSite(v[0][1], v[0][0], v[1], v[2], v[3], v[4]) for v in merged.values())


def snapshot() -> HeapProfile:
    """The sampled heap now (a few ms: the tables are copied, then converted)."""
    if _native is None:
        return _standin_snapshot()
    with _lock:
        if _state["running"]:
            _refresh_ignored_threads()
    rows, stats = _native.snapshot()
    from . import preload

    name = "native"
    if preload.active():
        prow, pstats = preload.snapshot_rows()
        rows.extend(prow)
        stats = {k: stats.get(k, 0) + pstats.get(k, 0) if k != "interval_bytes" else stats[k] for k in stats}
        name = "preload"
    return HeapProfile(
        taken_at=time.monotonic(),
        sites=_merge_rows(rows),
        interval_bytes=int(stats["interval_bytes"]),
        samples_live=int(stats["samples_live"]),
        dropped=int(stats["dropped"]) + int(stats.get("dropped_stacks", 0)),
        overhead_bytes=int(stats["overhead_bytes"]),
        backend=name,
        bound_bytes=int(stats["bound_bytes"]) if "bound_bytes" in stats else None,
    )


def sites_of(objects: list[Any]) -> list[tuple[float, float, tuple[Frame, ...]]]:
    """The sampled live blocks among ``objects`` (each object's own block), by allocating
    stack: ``[(count, bytes, stack)]`` (how many of them are sampled and their own sizes
    summed), innermost frame first, memdiag's frames left out. Empty without the native
    sampler (the tracemalloc stand-in has no such table)."""
    if _native is None or not objects:
        return []
    try:
        rows = _native.sites_of(objects)
    except AttributeError:  # an older build of the extension
        return []
    out = []
    for count, nbytes, frames in rows:
        stack = tuple(_frame(f, n, fn) for f, n, fn in frames if not (f and _own(f)))
        out.append((float(count), float(nbytes), stack))
    return out


def malloc_held() -> tuple[int, int, int] | None:
    """``(epoch, python_bytes, own_bytes)``: the net bytes Python's blocks have taken in
    malloc's in-use figure (``mallinfo2``) since the counting hooks went in (counted exactly
    by the raw allocator's hooks, ``epoch`` changes when they are put in again), and the
    bytes the profiler's own tables take from libc. ``None`` where they are not counted:
    the extension missing, another allocator than plain pymalloc under the hooks
    (``PYTHONMALLOC``, a debug build), the preload shim, or the sampler not started."""
    if _native is None:
        return None
    try:
        got = _native.malloc_held()
    except AttributeError:  # an older build of the extension
        return None
    return None if got is None else (int(got[0]), int(got[1]), int(got[2]))


def stats() -> dict[str, Any]:
    """The native tables' counters: samples, samples_live, dropped, overhead_bytes, bound_bytes."""
    if _native is None:
        return {"backend": "tracemalloc"}
    _, st = _native.snapshot()
    return {"backend": backend(), **st}


# -- the tracemalloc stand-in (backend "tracemalloc") ---------------------------------------
def _standin_start(frames: int) -> None:
    import tracemalloc

    if not _state["running"] and not tracemalloc.is_tracing():
        tracemalloc.start(min(frames, STANDIN_FRAMES))
        _state["started_tracemalloc"] = True
    _state["running"] = True


def _standin_snapshot() -> HeapProfile:
    """Every traced block, grouped by stack; memdiag's own stacks left out."""
    import tracemalloc

    if not _state["running"] or not tracemalloc.is_tracing():
        return HeapProfile(time.monotonic(), (), 1, 0, 0, 0, "tracemalloc")
    try:
        import _tracemalloc

        raw = _tracemalloc._get_traces()  # (domain, size, frames innermost first, nframe)
    except (ImportError, AttributeError):  # another implementation: the public, slower way
        raw = [
            (t.domain, t.size, tuple([(f.filename, f.lineno) for f in reversed(t.traceback)]), 0)
            for t in tracemalloc.take_snapshot().traces
        ]
    taken = time.monotonic()
    # Grouped with as few allocations as possible (each one is traced meanwhile): sorting
    # by traceback and summing each run in C is ~20x faster than a Python loop per trace.
    by_tb = operator.itemgetter(2)
    size_of = operator.itemgetter(1)
    raw.sort(key=by_tb)
    tm_file = tracemalloc.__file__
    sites = []
    for frames, group in itertools.groupby(raw, key=by_tb):
        if any(_own(fn) or fn == tm_file for fn, _ in frames):
            continue
        sizes = list(map(size_of, group))
        size, count = float(sum(sizes)), float(len(sizes))
        stack = tuple([_frame(fn, ln, "") for fn, ln in frames])
        sites.append(HeapSite(stack, "python", size, count, size, count))
    del raw
    n = sum(int(s.live_count) for s in sites)
    return HeapProfile(taken, tuple(sites), 1, n, 0, tracemalloc.get_tracemalloc_memory(), "tracemalloc")


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # the C tables were reinitialised by pthread_atfork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
