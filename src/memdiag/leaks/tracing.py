"""Bounded allocation-tracing windows: tracemalloc on for seconds, never left on.

tracemalloc slows allocation-heavy code 11-41x, so it runs only in windows, within a
budget: over a sliding horizon of ``max(600 s, window / trace_budget)``, the traced time
(the window asked for included) may not exceed ``trace_budget`` of the horizon. With
the defaults (10 s windows, 2 %) that is one window per 10 minutes.

A window takes three snapshots, at 30 %, 65 % and 100 % of its length, and compares them.
Objects allocated before tracing started are invisible to tracemalloc, so a first
snapshot taken at the start would make every bounded structure's turnover look like
growth; measuring from 30 % on lets short-lived churn balance out, and a site counts
as *consistent* only if it grew in both halves. At each snapshot the window also
records the lengths of large containers; a container that keeps growing is a leak's
usual anchor, and ``tracemalloc.get_object_traceback`` on its newest items names the
line that allocates them, which tells a leak from an LRU cache's turnover.

Everything memdiag does is excluded from the figures (filter on memdiag's own package
directory). Snapshots are bounded: if tracemalloc's own memory passes
:data:`MAX_TRACEMALLOC_BYTES`, the window ends early (``truncated``). Tracing is stopped
in a ``finally`` and after ``fork()`` in the child; the analysis runs after tracing has
stopped. If tracemalloc was already on (started by the user), the window borrows it and
leaves it on.
"""

from __future__ import annotations

import gc
import heapq  # noqa: F401  Counter.most_common(n) imports it: no import may run under exclusive_gil
import itertools
import math
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from .._logging import get_logger
from ..config import FIELD_INFO, MemoryConfig
from ..errors import MemdiagError
from ..probes.process import read_statm_rss
from ..probes.python import EXCLUSIVE_SWITCH_INTERVAL, exclusive_gil, referrers, tracked_objects
from .census import CONTAINER_TYPES, container_lengths, type_census, type_name

__all__ = ["MAX_TRACEMALLOC_BYTES", "MIN_HORIZON_SECONDS", "TraceManager", "manager"]

log = get_logger("memdiag.leaks")

MAX_TRACEMALLOC_BYTES = 16 * 1024 * 1024  # tracemalloc's own memory (~300k traces): analysis stays ~1 s
MIN_HORIZON_SECONDS = 600.0
TOP_N = 10
CONTAINER_MIN_LEN = 100  # containers shorter than this are not followed
ITEMS_SAMPLED = 64  # newest items of a growing container whose allocation site is looked up
MARKS = (0.3, 0.65, 1.0)
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../memdiag


def _own_file(filename: str) -> bool:
    return filename.startswith(_OWN_DIR + os.sep)


class TraceManager:
    """The process's tracing windows: budget, the running window, recent results.

    There is one per process (:func:`manager`): tracemalloc is process-wide.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: deque[tuple[float, float]] = deque(maxlen=256)  # (start, end) monotonic
        self._current: _Window | None = None
        self._seq = itertools.count(1)
        self.results: deque[dict[str, Any]] = deque(maxlen=5)
        self.windows_run = 0
        self.refused = 0

    # -- budget ------------------------------------------------------------------------
    def _used(self, since: float, now: float) -> float:
        used = 0.0
        spans = list(self._spans)
        cur = self._current
        if cur is not None and cur.started_mono is not None and not cur.done.is_set():
            spans.append((cur.started_mono, max(now, cur.started_mono)))
        for s, e in spans:
            used += max(0.0, min(e, now) - max(s, since))
        return used

    def budget(self, cfg: MemoryConfig, seconds: float | None = None) -> dict[str, Any]:
        """Whether a window of ``seconds`` fits the budget now, and when one would."""
        w = float(seconds if seconds is not None else cfg.trace_window_seconds)
        share = cfg.trace_budget
        now = time.monotonic()
        with self._lock:
            if share <= 0:
                return {
                    "share": share,
                    "horizon_seconds": None,
                    "used_seconds": self._used(now - MIN_HORIZON_SECONDS, now),
                    "allowed": False,
                    "retry_after_seconds": None,
                    "reason": "tracing is disabled (trace_budget = 0)",
                }
            horizon = max(MIN_HORIZON_SECONDS, w / share)
            allowance = share * horizon
            used = self._used(now - horizon, now)
            allowed = used + w <= allowance + 1e-6
            retry = 0.0
            if not allowed:
                # Walk forward over the ends of past windows until enough has left the horizon.
                retry = float("inf")
                for _, e in sorted(self._spans, key=lambda se: se[1]):
                    t = e + horizon
                    if t > now and self._used(t - horizon, t) + w <= allowance + 1e-6:
                        retry = t - now
                        break
                if self._current is not None:
                    retry = max(retry if retry != float("inf") else 0.0, self._current.remaining())
        return {
            "share": share,
            "horizon_seconds": round(horizon, 1),
            "allowance_seconds": round(allowance, 3),
            "used_seconds": round(used, 3),
            "used_share": round(used / horizon, 5),
            "allowed": allowed,
            "retry_after_seconds": None if retry == float("inf") else round(retry, 1),
            "reason": None
            if allowed
            else (
                f"trace budget: {used:.1f} s of the {allowance:.1f} s allowed per {horizon:.0f} s are used; "
                f"a {w:g} s window does not fit (raise trace_budget or wait)"
            ),
        }

    # -- windows -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        cur = self._current
        return cur is not None and not cur.done.is_set()

    def start(
        self,
        cfg: MemoryConfig,
        seconds: float | None = None,
        frames: int | None = None,
        *,
        reason: str = "manual",
        on_done: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Start a window now; returns its state.

        Raises:
            ValueError: ``seconds`` not in (0, 3600] or ``frames`` not in 1..64.
            MemdiagError: a window is already running, or the budget forbids it.
        """
        # The same bounds as the config fields (and the API's documented TraceRequest).
        longest = FIELD_INFO["trace_window_seconds"].bounds[1]
        w = _check_number("seconds", seconds, cfg.trace_window_seconds, 0.0, longest, integer=False)
        n = int(_check_number("frames", frames, cfg.trace_frames, *FIELD_INFO["trace_frames"].bounds, integer=True))
        cur = self._current
        if cur is not None and not cur.done.is_set():
            self.refused += 1
            raise MemdiagError(f"an allocation-tracing window is already running ({cur.remaining():.1f} s left)")
        b = self.budget(cfg, w)
        if not b["allowed"]:
            self.refused += 1
            raise MemdiagError(
                b["reason"]
                + (f"; next window possible in {b['retry_after_seconds']} s" if b["retry_after_seconds"] else "")
            )
        with self._lock:
            if self._current is not None and not self._current.done.is_set():
                raise MemdiagError("an allocation-tracing window is already running")
            win = _Window(next(self._seq), w, n, reason, self._finished, on_done, trim=cfg.malloc_trim)
            self._current = win
        win.begin()
        return win.state()

    def _finished(self, win: _Window, result: dict[str, Any]) -> None:
        with self._lock:
            if win.started_mono is not None:
                self._spans.append((win.started_mono, win.started_mono + result.get("seconds", 0.0)))
            self.results.append(result)
            self.windows_run += 1

    def stop(self, timeout: float = 5.0) -> None:
        """End the running window now (its result is still analysed)."""
        cur = self._current
        if cur is not None:
            cur.stop_event.set()
            if cur.thread is not None and cur.thread is not threading.current_thread():
                cur.thread.join(timeout)

    @property
    def last_result(self) -> dict[str, Any] | None:
        return self.results[-1] if self.results else None

    def state(self, cfg: MemoryConfig) -> dict[str, Any]:
        """The tracing section of the leaks report."""
        cur = self._current
        return {
            "running": self.running,
            "window": cur.state() if cur is not None and self.running else None,
            "budget": self.budget(cfg),
            "windows_run": self.windows_run,
            "refused": self.refused,
            "window_seconds": cfg.trace_window_seconds,
            "frames": cfg.trace_frames,
            "last": _summary(self.last_result),
        }

    def after_fork_in_child(self) -> None:
        """The window thread did not survive the fork: stop the tracing it owned."""
        cur = self._current
        if cur is not None and not cur.done.is_set() and cur.owned:
            try:
                import tracemalloc

                tracemalloc.stop()
            except Exception:
                pass
        self._lock = threading.Lock()
        self._current = None
        self.reset()

    def reset(self) -> None:
        """Forget past windows (budget, results); a running window is ended first."""
        self.stop()
        with self._lock:
            self._spans.clear()
            self.results.clear()
            self.windows_run = 0
            self.refused = 0


def _check_number(name: str, value: Any, default: float, lo: float, hi: float, *, integer: bool) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if integer:
        if not float(value).is_integer() or not lo <= value <= hi:
            raise ValueError(f"{name} must be a whole number from {lo:g} to {hi:g}, got {value!r}")
    elif not lo < value <= hi:
        raise ValueError(f"{name} must be > {lo:g} and <= {hi:g}, got {value!r}")
    return float(value)


def _summary(result: dict[str, Any] | None) -> dict[str, Any] | None:
    if result is None:
        return None
    keys = (
        "id",
        "reason",
        "started_at",
        "seconds",
        "frames",
        "borrowed",
        "truncated",
        "error",
        "memory",
        "snapshot_seconds",
        "analysis_seconds",
        "traced_growth_bytes_per_min",
    )
    return {k: result.get(k) for k in keys}


class _Window:
    """One window: its thread, snapshots and result."""

    def __init__(
        self,
        wid: int,
        seconds: float,
        frames: int,
        reason: str,
        finished: Callable[[_Window, dict[str, Any]], None],
        on_done: Callable[[dict[str, Any]], None] | None,
        *,
        trim: bool = True,
    ) -> None:
        self.id = wid
        self.trim = trim
        self.seconds = seconds
        self.frames = frames
        self.reason = reason
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.thread: threading.Thread | None = None
        self.started_at: float | None = None
        self.started_mono: float | None = None
        self.owned = False
        self.phase = "starting"
        self._finished = finished
        self._on_done = on_done

    def remaining(self) -> float:
        if self.started_mono is None:
            return self.seconds
        return max(0.0, self.started_mono + self.seconds - time.monotonic())

    def state(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reason": self.reason,
            "phase": self.phase,
            "seconds": self.seconds,
            "frames": self.frames,
            "started_at": self.started_at,
            "ends_at": None if self.started_at is None else self.started_at + self.seconds,
            "remaining_seconds": round(self.remaining(), 2),
        }

    def begin(self) -> None:
        import tracemalloc

        # Start tracing in the caller's thread, so the window has begun when start() returns.
        if tracemalloc.is_tracing():
            self.frames = tracemalloc.get_traceback_limit()
        else:
            tracemalloc.start(self.frames)
            self.owned = True
        self.started_at = time.time()
        self.started_mono = time.monotonic()
        self.phase = "tracing"
        self.thread = threading.Thread(target=self._run, name=f"memdiag-trace-{self.id}", daemon=True)
        try:
            self.thread.start()
        except BaseException:
            self._stop_tracing()
            self.done.set()
            raise

    def _stop_tracing(self) -> None:
        if self.owned:
            try:
                import tracemalloc

                tracemalloc.stop()
            except Exception as exc:
                log.debug("tracemalloc.stop failed: %r", exc)

    def _run(self) -> None:
        """The window's thread: trace, snapshot at the marks, analyse, hand the result over."""
        result = self._new_result()
        captures: list[dict[str, Any]] = []
        cost = _Cost(read_statm_rss() or 0)
        t0 = self.started_mono or time.monotonic()
        traced_seconds = 0.0
        try:
            self._trace(t0, result, captures, cost)
        except Exception as exc:  # never raise from the window thread
            result["error"] = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            traced_seconds = time.monotonic() - t0
            self._stop_tracing()
        self.phase = "analysing"
        result["seconds"] = round(traced_seconds, 3)
        result["ended_at"] = time.time()
        result["memory"] = cost.memory(read_statm_rss() or 0)
        result["snapshot_seconds"] = round(sum(c["seconds"] for c in captures), 4)
        self._analyse_into(result, captures)
        captures.clear()
        result["memory"]["trimmed"] = self._release_heap()
        self.phase = "done"
        self._deliver(result)

    def _new_result(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reason": self.reason,
            "started_at": self.started_at,
            "requested_seconds": self.seconds,
            "frames": self.frames,
            "borrowed": not self.owned,
            "truncated": None,
            "error": None,
            "aborted": False,
        }

    def _trace(self, t0: float, result: dict[str, Any], captures: list[dict[str, Any]], cost: _Cost) -> None:
        """Take a capture at each of the :data:`MARKS` (fewer when the window is stopped or
        tracemalloc outgrows its bound, noted in ``result``)."""
        import tracemalloc

        end = t0 + self.seconds  # the window never traces past this (plus one capture's grace)
        for k in range(len(MARKS)):
            self._wait_until(self._mark_time(k, t0, end, captures), result, cost, tracemalloc)
            if result["aborted"] and k == 0:
                break
            last = k == len(MARKS) - 1 or bool(result["truncated"]) or result["aborted"]
            self.phase = f"snapshot {k + 1}"
            captures.append(_capture(tracemalloc, captures, last=last, frames=self.frames, deadline=end))
            if captures[-1]["late"]:
                result["truncated"] = result["truncated"] or "deadline: container analysis skipped"
            if last:
                break

    def _mark_time(self, k: int, t0: float, end: float, captures: list[dict[str, Any]]) -> float:
        """When the ``k``-th capture starts (monotonic)."""
        if k == len(MARKS) - 1 and captures:
            # Start the last capture early enough to end on time: half as much again as
            # the quickest capture so far (captures grow with the traced heap), plus one
            # switch interval of exclusive_gil (a capture may wait that long for the GIL).
            took = 1.5 * min(c["seconds"] for c in captures) + EXCLUSIVE_SWITCH_INTERVAL
            return max(t0 + MARKS[-2] * self.seconds, end - took)
        return t0 + MARKS[k] * self.seconds

    def _wait_until(self, at: float, result: dict[str, Any], cost: _Cost, tracemalloc: Any) -> None:
        """Wait for ``at``, watching the cost; returns early (noted in ``result``) when
        tracemalloc passes its bound or the window is stopped."""
        while True:
            now = time.monotonic()
            cost.rss_peak = max(cost.rss_peak, read_statm_rss() or 0)
            tm_mem = tracemalloc.get_tracemalloc_memory()
            cost.tracemalloc_peak = max(cost.tracemalloc_peak, tm_mem)
            if tm_mem > MAX_TRACEMALLOC_BYTES:
                result["truncated"] = f"tracemalloc memory passed {MAX_TRACEMALLOC_BYTES // (1024 * 1024)} MiB"
                return
            if self.stop_event.is_set():
                result["aborted"] = True
                return
            if now >= at:
                return
            self.stop_event.wait(min(0.2, at - now))

    def _release_heap(self) -> bool:
        """Give back the heap the window freed: tracemalloc's tables and the snapshots were
        malloc'd by every thread while the service allocated too, so their free pages lie
        between the service's blocks, where glibc never trims. Left there, a busy service's
        USS stayed ~5 MiB higher after each window (and the detector, seeing RSS grow, traced
        again). True when ``malloc_trim(0)`` ran (``malloc_trim`` config, glibc)."""
        if not (self.owned and self.trim):
            return False
        from .._libc import malloc_trim

        return malloc_trim(0) is not None

    def _analyse_into(self, result: dict[str, Any], captures: list[dict[str, Any]]) -> None:
        t1 = time.perf_counter()
        try:
            if len(captures) >= 2:
                result.update(_analyse(captures, self.frames))
            elif result["error"] is None:
                result["error"] = "the window ended before a second snapshot: nothing to compare"
        except Exception as exc:
            result["error"] = f"analysis failed: {type(exc).__name__}: {exc}"[:300]
        result["analysis_seconds"] = round(time.perf_counter() - t1, 4)

    def _deliver(self, result: dict[str, Any]) -> None:
        """Hand the result to the manager (then the window is done), then to ``on_done``."""
        try:
            self._finished(self, result)
        finally:
            self.done.set()
        if self._on_done is not None:
            try:
                self._on_done(result)
            except Exception as exc:
                log.debug("tracing window callback failed: %r", exc)


class _Cost:
    """What a window costs the process as it runs: RSS at its start and peak, tracemalloc's peak."""

    __slots__ = ("rss_peak", "rss_start", "tracemalloc_peak")

    def __init__(self, rss_start: int) -> None:
        self.rss_start = self.rss_peak = rss_start
        self.tracemalloc_peak = 0

    def memory(self, rss_end: int) -> dict[str, int]:
        """The result's ``memory``, with the RSS at the end."""
        self.rss_peak = max(self.rss_peak, rss_end)
        return {
            "rss_start_bytes": self.rss_start,
            "rss_peak_bytes": self.rss_peak,
            "rss_end_bytes": rss_end,
            # RSS-based: includes what tracemalloc's tables and the snapshots cost, which
            # get_tracemalloc_memory() undercounts by about half (DESIGN.md).
            "extra_rss_peak_bytes": max(0, self.rss_peak - self.rss_start),
            "tracemalloc_peak_bytes": self.tracemalloc_peak,
        }


def _capture(
    tracemalloc: Any, previous: list[dict[str, Any]], *, last: bool, frames: int, deadline: float
) -> dict[str, Any]:
    """A type census, the large containers' lengths and a compact snapshot, taken now.

    The census comes first and the snapshot is reduced to a small table at once, so
    memdiag's own objects (snapshots hold one tuple per trace) never count as growth.
    Past ``deadline`` the growing-container analysis (the slow part) is skipped
    (``late``), so the window ends on time.
    """
    t0 = time.perf_counter()
    mono = time.monotonic()
    # The lists (tracked_objects(), and the referrers _holder asks for) leave out tuples
    # under construction; exclusive_gil is the fallback's safety and keeps finalizers off.
    with exclusive_gil():
        objs, census = tracked_objects(count=True)
        try:
            lengths = container_lengths(objs, CONTAINER_MIN_LEN)
            growing: list[dict[str, Any]] = []
            late = time.monotonic() > deadline
            if last and previous and not late:
                growing = _growing_containers(
                    tracemalloc,
                    objs,
                    previous[0]["lengths"],
                    lengths,
                    mono - previous[0]["time"],
                    previous[1]["lengths"] if len(previous) > 1 else None,
                )
        finally:
            del objs
    table = _table(tracemalloc.take_snapshot(), frames)
    return {
        "time": mono,
        "table": table,
        "census": census,
        "lengths": lengths,
        "growing": growing,
        "late": late,
        "seconds": time.perf_counter() - t0,
    }


def _table(snapshot: Any, frames: int) -> dict[tuple[tuple[str, int], ...], tuple[int, int]]:
    """``{raw traceback (most recent frame first): (bytes, blocks)}``, memdiag's own excluded.

    Reads the snapshot's raw trace tuples (what ``Snapshot.statistics`` itself reads):
    about ten times faster than building a ``Statistic`` per site.
    """
    import tracemalloc

    skip = {tracemalloc.__file__, "<unknown>"}
    out: dict[tuple[tuple[str, int], ...], tuple[int, int]] = {}
    raw = getattr(snapshot.traces, "_traces", None)
    if raw is None:  # another implementation: the public, slower way
        raw = [
            (t.domain, t.size, tuple((f.filename, f.lineno) for f in reversed(t.traceback)), None)
            for t in snapshot.traces
        ]
    own = _OWN_DIR + os.sep
    for trace in raw:
        size, tb = trace[1], trace[2]
        if not tb:
            continue
        name = tb[0][0]
        if name in skip or name.startswith(own):
            continue
        key = tb if frames > 1 else tb[:1]
        prev = out.get(key)
        out[key] = (size, 1) if prev is None else (prev[0] + size, prev[1] + 1)
    return out


def _growing_containers(
    tracemalloc: Any,
    objs: list[Any],
    first: dict[int, tuple[type, int]],
    now: dict[int, tuple[type, int]],
    dt: float,
    middle: dict[int, tuple[type, int]] | None,
) -> list[dict[str, Any]]:
    """Containers that grew at every snapshot, with the allocation site of their newest items."""
    grew = []
    for oid, (t, n) in now.items():
        a = first.get(oid)
        if a is None or a[0] is not t or n - a[1] < 16:
            continue
        m = middle.get(oid) if middle is not None else None
        if middle is not None and (m is None or m[0] is not t or not a[1] < m[1] < n):
            continue
        grew.append((n - a[1], oid, t, a[1], n))
    grew.sort(reverse=True)
    grew = grew[:5]
    if not grew:
        return []
    wanted = {oid for _, oid, _, _, _ in grew}
    found = {id(o): o for o in objs if type(o) in CONTAINER_TYPES and id(o) in wanted}
    out: list[dict[str, Any]] = []
    for delta, oid, t, n0, n1 in grew:
        obj = found.get(oid)
        if obj is None:
            continue
        sites = Counter(_newest_sites(tracemalloc, obj))
        site, hits = sites.most_common(1)[0] if sites else (None, 0)
        out.append(
            {
                "type": type_name(t),
                "object_id": oid,
                "len_start": n0,
                "len_end": n1,
                "items_per_min": round(delta / dt * 60.0, 1) if dt > 0 else None,
                "holder": _holder(obj, ignore=found) if len(out) < 3 else None,
                "file": site[0] if site else None,
                "line": site[1] if site else None,
                "site_share": round(hits / max(1, sum(sites.values())), 3) if site else None,
            }
        )
    del found
    return out


def _newest_sites(tracemalloc: Any, obj: Any) -> list[tuple[str, int]]:
    """Where the newest items of a container were allocated (traced ones only)."""
    try:
        if isinstance(obj, dict):
            keys = list(itertools.islice(reversed(obj), ITEMS_SAMPLED))
            items = [obj.get(k) for k in keys] + keys
        elif isinstance(obj, list):
            items = obj[-ITEMS_SAMPLED:]
        elif isinstance(obj, set):
            items = list(itertools.islice(iter(obj), ITEMS_SAMPLED))
        else:  # deque
            items = list(obj)[-ITEMS_SAMPLED:]
    except RuntimeError:  # mutated by another thread while we looked
        return []
    sites = []
    for item in items:
        tb = tracemalloc.get_object_traceback(item)
        if tb is None:
            continue
        for frame in reversed(tb):  # most recent first
            if not _own_file(frame.filename):
                sites.append((frame.filename, frame.lineno))
                break
    return sites


def _holder(obj: Any, ignore: object) -> str | None:
    """A name for what holds a container: ``module.name`` or ``Type.attribute``."""
    import types

    try:
        refs = referrers(obj)
    except Exception:
        return None
    try:
        for r in refs:
            if r is ignore or isinstance(r, types.FrameType):
                continue
            if isinstance(r, dict):
                name = next((k for k, v in r.items() if v is obj), None)
                if name is None:
                    continue
                if "__name__" in r and "__builtins__" in r:
                    return f"{r['__name__']}.{name}"
                return f"dict[{name!r}]" if isinstance(name, str) else "dict"
            if isinstance(r, (list, tuple, set)) or type(r) in CONTAINER_TYPES:
                continue
            try:
                attrs = vars(r)
            except TypeError:
                continue
            name = next((k for k, v in attrs.items() if v is obj), None)
            if name is not None:
                owner = r.__name__ if isinstance(r, type) else type_name(type(r))
                return f"{owner}.{name}"
    finally:
        del refs
    return None


def _frames_of(tb: tuple[tuple[str, int], ...]) -> list[str]:
    return [f"{f}:{n}" for f, n in reversed(tb)]  # oldest first, as Python prints them


def _analyse(captures: list[dict[str, Any]], frames: int) -> dict[str, Any]:
    """Compare the snapshots: growing sites, top allocations, what grew by type."""
    tables = [c["table"] for c in captures]
    first, last = tables[0], tables[-1]
    middle = tables[1] if len(tables) == 3 else None
    dt = captures[-1]["time"] - captures[0]["time"]
    per_min = 60.0 / dt if dt > 0 else 0.0
    container_sites: dict[tuple[str, int], dict[str, Any]] = {}
    for g in captures[-1]["growing"]:
        if g["file"] is not None and (g["site_share"] or 0) >= 0.3:
            container_sites.setdefault((g["file"], g["line"]), g)
    sites = []
    for tb, (size, count) in last.items():
        s0, c0 = first.get(tb, (0, 0))
        growth = size - s0
        if growth <= 0:
            continue
        consistent = True
        if middle is not None:
            sm = middle.get(tb, (0, 0))[0]
            consistent = s0 < sm < size
        filename, lineno = tb[0]
        sites.append(
            {
                "file": filename,
                "line": lineno,
                "traceback": _frames_of(tb),
                "size_bytes": size,
                "count": count,
                "growth_bytes": growth,
                "count_growth": count - c0,
                "growth_bytes_per_min": round(growth * per_min, 1),
                "consistent": consistent,
                "container": _container_ref(container_sites.get((filename, lineno))),
            }
        )
    sites.sort(key=lambda s: (s["container"] is not None, s["consistent"], s["growth_bytes"]), reverse=True)
    top = sorted(last.items(), key=lambda kv: kv[1][0], reverse=True)[:TOP_N]
    census_delta = Counter(captures[-1]["census"])
    census_delta.subtract(captures[0]["census"])
    types = [
        {"type": type_name(t), "delta": d, "count": captures[-1]["census"].get(t, 0)}
        for t, d in census_delta.most_common(TOP_N)
        if d > 0
    ]
    return {
        "measured_seconds": round(dt, 3),
        "traced_growth_bytes_per_min": round(
            (sum(v[0] for v in last.values()) - sum(v[0] for v in first.values())) * per_min, 1
        ),
        "growing_sites": sites[:TOP_N],
        "top_allocations": [
            {"file": tb[0][0], "line": tb[0][1], "size_bytes": size, "count": count, "traceback": _frames_of(tb)}
            for tb, (size, count) in top
        ],
        "growing_containers": captures[-1]["growing"],
        "types": types,
    }


def _container_ref(g: dict[str, Any] | None) -> dict[str, Any] | None:
    if g is None:
        return None
    return {k: g[k] for k in ("type", "holder", "len_start", "len_end", "items_per_min", "site_share")}


_manager: TraceManager | None = None
_manager_lock = threading.Lock()


def manager() -> TraceManager:
    """The process's :class:`TraceManager`."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = TraceManager()
        return _manager


def _after_fork_in_child() -> None:
    global _manager_lock
    _manager_lock = threading.Lock()
    m = _manager
    if m is not None:
        m.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
