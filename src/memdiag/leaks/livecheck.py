"""The always-on part of leak detection: live heap, containers, resources by site.

:class:`LiveChecker` is driven by the leak detector: :meth:`tick` on every monitor sample
(it acts every ``heap_snapshot_seconds``), :meth:`memory_suspects` and
:meth:`resource_suspects` at each verdict. With the heap profile running (the native
sampler, or ``heap_profile = "on"``), memory verdicts come from it and no tracing window
is needed (the detector opens no window on its own then); without it, the detector's
tracing windows name the site and this module
still measures native growth from malloc's own figures (``mallinfo2``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from .._logging import get_logger
from ..probes.python import yield_gil
from ..stats import theil_sen, thin
from . import heapprof, origins
from .live import CONTAINER_SCAN_SECONDS as CONTAINER_EVERY
from .live import (
    HORIZON_SECONDS,
    MIN_SPAN_SECONDS,
    RETAIN_SECONDS,
    ContainerWatch,
    HeapSeries,
    at_entry_rate,
    early_linear,
    growth_test,
    match_site,
    prune,
    scan_interval,
    slowed_down,
)
from .native import malloc_info
from .sites import ResourceSites

__all__ = ["LiveChecker"]

log = get_logger("memdiag.leaks")

SNAPSHOT_DUTY_DIVISOR = 200.0  # snapshots take at most 0.5 % of the application's time (scans: live.py, 1 %)
NATIVE_SETTLE_SECONDS = 15.0
SHIM_ADVICE = "run the service under `memdiag run` (the preload sampler) to have the allocating line named"
NATIVE_MATCH_FACTOR = 3.0  # a sampled native line within this factor of malloc's rate names its verdict
PRELOAD_WAIT = "the preload sampler names the allocating line once it has sampled a few of its blocks"


class LiveChecker:
    """Heap series, container lengths and resource sites of one process."""

    def __init__(self) -> None:
        self.heap = HeapSeries()
        self.containers = ContainerWatch()
        self.resources = ResourceSites()
        self.malloc: deque[tuple[float, float]] = deque(maxlen=512)
        # malloc's bytes in use less Python's own (counted exactly by the raw hooks) and the
        # profiler's tables: the native heap alone, where the count is available
        self.native: deque[tuple[float, float]] = deque(maxlen=512)
        self._held_epoch: int | None = None
        self._native_since = 0.0  # time of the current count's first point
        self.python_rate = 0.0  # the sampled Python heap's bytes/min at the last verdict
        self._ticked = 0.0
        self.heap_state: str | None = None  # why the heap profile is (not) running
        self.errors = 0
        self.last_error: str | None = None
        self.tick_seconds: float | None = None
        self.snapshot_seconds: float | None = None
        self.round_cost: float | None = None  # CPU of the last snapshot and series update (s)
        self.cost_seconds = 0.0  # the application's loss to every round so far (snapshots' CPU, scans' wall)
        self.growing_lines: list[dict[str, Any]] = []
        self._container_ids: dict[int, str] = {}  # a growing container's id -> its last verdict's id
        self._native_line: tuple[str, int] | None = None  # the line malloc's native verdict was last named at
        self.retracted: set[str] = set()  # container verdicts the last check withdrew (evictions seen)
        self._every = 5.0
        self._lock = threading.Lock()
        self._bytes = 0  # what cost() reports: counted after each snapshot, read without the lock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, mode: str, interval_bytes: int | None = None) -> None:
        """Install the resource hooks; start the heap profile per ``mode`` (auto, on, off)."""
        origins.install()
        ok, why = heapprof.available()
        if mode == "off":
            self.heap_state = "off (heap_profile = off)"
            return
        if mode == "auto" and not ok:
            self.heap_state = f"off: {why}"
            return
        try:
            if interval_bytes:
                heapprof.start(interval_bytes=interval_bytes)
            else:
                heapprof.start()
            self.heap_state = f"running ({heapprof.backend()})"
            self._start_thread()
        except Exception as exc:  # never into the host
            self.heap_state = f"failed: {type(exc).__name__}: {exc}"[:200]
            log.info("memdiag: heap profile not started: %s", self.heap_state)

    def _start_thread(self) -> None:
        # Snapshots and container scans run on their own thread: with the tracemalloc
        # stand-in a snapshot can take seconds, and the monitor's sampling must not wait.
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._heap_loop, name="memdiag-heap", daemon=True)
        self._thread.start()

    def _heap_loop(self) -> None:
        ignore = getattr(heapprof, "ignore_current_thread", None)
        if ignore is not None:  # the sampler leaves this thread's allocations out
            ignore(True)
        # Duty, in what the application loses. A snapshot (and the line series' update)
        # costs its CPU time (this thread holds the GIL meanwhile): the next snapshot waits
        # at least SNAPSHOT_DUTY_DIVISOR times that (0.5 %), whatever the number of stacks.
        # A container scan holds every other thread off: its wall time is charged (up to
        # 2x its CPU time + 20 ms, live.scan_cost: beyond that a loaded host kept the
        # process off a core), and scan_interval spaces scans to 100x that (1 %). The two are kept apart so that
        # a slow scan (a large heap, a loaded machine) spaces out scans, not the snapshots
        # the live-heap verdicts are made of. The tracemalloc stand-in (heap_profile = "on"
        # without the extension: costly by choice) keeps at most a third of the time: at
        # 0.5 % its seconds-long snapshots would leave too few points for a verdict.
        divisor = SNAPSHOT_DUTY_DIVISOR if heapprof.backend() != "tracemalloc" else 2.0
        while not self._stop.wait(max(self._every, divisor * (self.round_cost or 0.0))):
            if not heapprof.running():
                continue
            t0, c0 = time.perf_counter(), time.thread_time()
            scan_wall = scan_cpu = 0.0
            try:
                prof = heapprof.snapshot()
                now = time.time()
                with self._lock:
                    self.heap.add(prof, now)
                    yield_gil()  # the scan below holds the GIL: let a waiting request run first
                    scans, s0, sc0 = self.containers.scans, time.perf_counter(), time.thread_time()
                    rising = self._rising()
                    # While a container rises, scan twice as often (duty bound unchanged):
                    # a clear, steady rise is a verdict on fewer points (live.early_linear).
                    base = CONTAINER_EVERY / 2.0 if rising else CONTAINER_EVERY
                    self.containers.scan(
                        now,
                        interval=scan_interval(max(self._every, base), self.containers.last_cost_seconds),
                        describe=rising,
                    )
                    if self.containers.scans != scans:
                        scan_wall, scan_cpu = time.perf_counter() - s0, time.thread_time() - sc0
                    self._bytes = self.heap.memory_bytes() + self.containers.memory_bytes()
            except Exception as exc:  # never into the host
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.debug("heap snapshot failed: %s", self.last_error, exc_info=True)
            self.snapshot_seconds = time.perf_counter() - t0
            self.round_cost = (time.thread_time() - c0) - scan_cpu  # the snapshot's part
            self.cost_seconds += self.round_cost + scan_wall

    def stop(self) -> None:
        """Stop the heap thread, and the heap profile if this checker started it."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5.0)
        self._thread = None
        if self.heap_state and self.heap_state.startswith("running"):
            heapprof.stop()
            self.heap_state = "stopped"

    @property
    def heap_running(self) -> bool:
        return heapprof.running()

    def tick(
        self, now: float, every: float, child_pids: Iterable[int] | None, zombie_pids: Iterable[int] | None = None
    ) -> None:
        """Sample resources, the heap profile and malloc (at most every ``every`` s)."""
        self._every = every
        if now - self._ticked < every:
            return
        self._ticked = now
        t0 = time.perf_counter()
        try:
            self.resources.sample(now, child_pids, zombie_pids)
            self._read_malloc(now)
        except Exception as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.debug("live check failed: %s", self.last_error, exc_info=True)
        self.tick_seconds = time.perf_counter() - t0

    def _read_malloc(self, now: float) -> None:
        """One point of malloc's bytes in use and, where Python's are counted, of native bytes."""
        before = heapprof.malloc_held()
        mi = malloc_info()
        if mi is None:
            return
        self.malloc.append((now, float(mi.in_use)))
        prune(self.malloc, now - RETAIN_SECONDS)
        after = heapprof.malloc_held() if before is not None else None
        if before is None or after is None or after[0] != before[0]:
            self.native.clear()  # not counted (or the hooks went in again meanwhile)
            self._held_epoch = None
            return
        if after[0] != self._held_epoch:
            self.native.clear()  # a new count: points of another epoch do not compare
            self._held_epoch = after[0]
            self._native_since = now
        # Other threads allocate while mallinfo2 walks the arenas: Python's bytes halfway.
        python = (before[1] + after[1]) / 2.0
        self.native.append((now, float(mi.in_use) - python - float(after[2])))
        prune(self.native, now - RETAIN_SECONDS)

    def line_grows(self, file: str | None, line: int | None, now: float, min_rate: float) -> bool:
        """Whether the live heap sees ``file:line`` grow by at least ``min_rate`` bytes/min
        over the recent horizon (a tracing window's few seconds are no proof: a memo that
        fills ever more slowly still inserts during them)."""
        with self._lock:
            rows = self.heap.slopes(now)
        return any(r["file"] == file and r["line"] == line and r["domain"] == "python"
                   and r["growth_bytes_per_min"] >= min_rate for r in rows)

    def cache_lines(self) -> set[tuple[str, int]]:
        """Lines that fill a cache that evicts or reorders (see ContainerWatch.cache_entry_lines)."""
        with self._lock:
            return self.containers.cache_entry_lines()

    def _rising(self) -> set[int]:
        out = set()
        for oid, (_tp, ser) in list(self.containers._lens.items()):
            last = [n for _, n in list(ser)[-3:]]
            if len(last) == 3 and last[0] < last[1] < last[2]:
                out.add(oid)
        return out

    # -- verdicts ----------------------------------------------------------------------
    def memory_suspects(self, now: float, floor: float) -> list[dict[str, Any]]:
        """Python and native suspects from the live heap and malloc (best evidence first)."""
        with self._lock:
            sites = self.heap.growing(now, floor) if self.heap_running else []
            containers = self.containers.growing(now) if self.heap_running else []
        explained = self._cache_lines(now)
        out = self._container_suspects(now, floor, containers, sites, explained)
        # Python lines growing outside any followed container are reported (growing_lines)
        # but not listed here: a sampled profile sees caches warming up, tables resizing
        # and step growth as such lines too. The detector lists them (line_suspects) only
        # while RSS grows as well; native lines (the preload sampler) are suspects directly.
        self.growing_lines = [s for s in sites if (s["file"], s["line"]) not in explained][:20]
        for s in self.growing_lines:
            if s["domain"] == "native":
                named = _site_suspect(s)
                named["evidence"]["replaces"] = ["native"]  # malloc's verdict until the shim named it
                out.append(named)
        self.python_rate = py_rate = self._python_rate(now)
        native = self.native_from_malloc(now, floor, py_rate)
        lines = [s for s in out if s["kind"] == "native"]
        if native is not None and not lines:
            out.append(self._name_native(native, now))
        elif native is not None and len(lines) == 1 and native["evidence"]["rate_from"].endswith("(counted)"):
            # one native line: its rate is malloc's counted one (a few samples a minute made
            # the sampled rate 50 % high for a new user's 1 MiB/min ctypes leak)
            line = lines[0]
            sampled = line["growth_bytes_per_min"]
            line["evidence"].update(sampled_bytes_per_min=sampled, rate_from=native["evidence"]["rate_from"])
            line["growth_bytes_per_min"] = native["growth_bytes_per_min"]
        return out

    def _name_native(self, native: dict[str, Any], now: float) -> dict[str, Any]:
        """malloc's native verdict, named at the preload sampler's native line whose live
        bytes rose at about its rate, when one did (else unchanged).

        A slow leak is a few samples a minute at the default interval (1 MiB/min at 512
        KiB: two), too few for the line's own growth test within minutes (a new user's
        ctypes leak in a worker thread was measured by malloc after 90 s and never named
        in 180 s); the samples still say where, and the count says how fast. Only a line
        within a factor of three of the measured rate is taken, the closest (the line named
        last time while it still rises), and the verdict says it was matched by rate."""
        if heapprof.backend() != "preload":
            return native
        rate = native["growth_bytes_per_min"]
        with self._lock:
            lines = [s for s in self.heap.slopes(now, domain="native") if s["file"]]
        lo, hi = rate / NATIVE_MATCH_FACTOR, rate * NATIVE_MATCH_FACTOR
        fits = [s for s in lines if lo <= s["growth_bytes_per_min"] <= hi]
        kept = [s for s in lines if (s["file"], s["line"]) == self._native_line]  # still rising: kept, no flapping
        if not fits and not kept:
            return native
        best = kept[0] if kept else min(fits, key=lambda s: abs(math.log(s["growth_bytes_per_min"] / rate)))
        self._native_line = (best["file"], best["line"])
        evidence = {**native["evidence"], "named_by": "preload samples", "site_from": "rate_match",
                    "sampled_bytes_per_min": round(best["growth_bytes_per_min"], 1), "replaces": ["native"]}
        return {
            **native,
            "id": f"native:{best['file']}:{best['line']}",
            "file": best["file"],
            "line": best["line"],
            "traceback": best["traceback"],
            "evidence": evidence,
            "suggestion": (
                f"native memory allocated under {best['file']}:{best['line']} is never freed (probably: the "
                "preload sampler's native line whose live bytes grow at the rate malloc's bytes in use do)"
            ),
        }

    def _cache_lines(self, now: float) -> set[tuple[str, int]]:
        """Lines filling a cache that evicts or reorders (at its turnover rate, or known
        from its sampled entries): not leaks."""
        with self._lock:
            caches = self.containers.turnover_rates(now) if self.heap_running else []
            every_line = self.heap.slopes(now) if caches else []
            explained = set(self.containers.cache_entry_lines())
        for rate in caches:
            for s in every_line:
                bpm = s.get("blocks_per_min") or 0.0
                if s["domain"] == "python" and rate > 0 and 0.5 <= bpm / rate <= 2.5:
                    explained.add((s["file"], s["line"]))
        return explained

    def _container_suspects(
        self,
        now: float,
        floor: float,
        containers: list[dict[str, Any]],
        sites: list[dict[str, Any]],
        explained: set[tuple[str, int]],
    ) -> list[dict[str, Any]]:
        """A suspect per growing container that is no cache, at its line; the lines that are
        part of it are added to ``explained``."""
        out = []
        cache_lines = frozenset(explained)
        self.retracted = set()
        for c in containers:
            for s in sites:  # the lines that allocate its entries (at its entry rate) are part of it
                if at_entry_rate(c, s):
                    explained.add((s["file"], s["line"]))
            if c.get("turnover"):  # a cache that evicts or reorders while it fills: not a leak
                before = self._container_ids.pop(c["object_id"], None)
                if before is not None:  # its verdict (a TTL cache's first fill) goes at once, not after a hold
                    self.retracted.add(before)
                continue
            if "bytes_per_item" not in c:
                continue
            rate = c["items_per_min"] * c["bytes_per_item"]
            if rate < floor:
                continue
            inserted = c.get("inserted_at") or []
            if inserted:  # the line that keeps the entries, read from the holder's code
                site = _insertion_site(c, inserted)
                if c.get("file"):  # the entries' allocating line is part of it
                    explained.add((c["file"], c["line"]))
            else:
                site = c if c.get("file") else _matched(match_site(c, sites, cache_lines))
            if site is None:
                with self._lock:
                    slopes = self.heap.slopes(now, max(60.0, float(c.get("followed_seconds") or 0.0)))
                site = _matched(match_site(c, slopes, cache_lines))
            if site is not None and site.get("file"):  # the line it names (matched by bytes, maybe): listed once
                explained.add((site["file"], site["line"]))
            suspect = _container_suspect(c, site, rate)
            # Its line can change as evidence comes (matched by rate, then a sampled entry):
            # the verdict under the new line replaces the one under the old at once.
            before = self._container_ids.get(c["object_id"])
            if before is not None and before != suspect["id"]:
                suspect["evidence"]["replaces"] = [before]
            self._container_ids[c["object_id"]] = suspect["id"]
            out.append(suspect)
        growing = {c["object_id"] for c in containers}
        for oid in [i for i in self._container_ids if i not in growing]:
            del self._container_ids[oid]  # bounded by the containers growing now
        return out

    def _python_rate(self, now: float) -> float:
        """Bytes/min of the sampled Python heap and the profiler's own tables (both through
        malloc), over the last 150 s."""
        if not self.heap_running:
            return 0.0
        recent = [p for p in self.heap.overhead if p[0] >= now - 150.0]
        with self._lock:
            xs, ys = self.heap.total("python")
        cut = next((i for i, x in enumerate(xs) if x >= now - 150.0), len(xs))
        return _slope(xs[cut:], ys[cut:]) + _slope([p[0] for p in recent], [p[1] for p in recent])

    def line_suspects(self, now: float) -> list[dict[str, Any]]:
        """The growing Python lines outside any growing container (``growing_lines`` of the
        last :meth:`memory_suspects`) as suspects, for the detector to list while RSS grows
        too (what a tracing window did before the heap profile ran): a chain of objects, a
        leak held by many small containers. Not a line filling a cache, nor one whose growth
        keeps slowing down over two horizons (a memo warming up: ``slowed_down``)."""
        with self._lock:
            caches = self.containers.cache_entry_lines()
            out = []
            for s in self.growing_lines:
                if s["domain"] != "python" or (s["file"], s["line"]) in caches:
                    continue
                if slowed_down(self.heap.points(s["file"], s["line"], s["domain"]), now):
                    continue
                ss = _site_suspect(s)
                ss["evidence"]["rss_growing"] = True
                out.append(ss)
        return out

    def malloc_rate(self, now: float, floor: float) -> float | None:
        """malloc's bytes in use per minute if they grow steadily, else None."""
        g = _series_growth(self.malloc, now, floor)
        return g["slope_per_min"] if g is not None else None

    @property
    def counted(self) -> bool:
        """Whether the native series is counted (Python's bytes from malloc known exactly)."""
        return self._held_epoch is not None and bool(self.native)

    def native_span(self, now: float) -> float:
        """Seconds of settled native points within the recent horizon (0: none)."""
        since = max(self._native_since + NATIVE_SETTLE_SECONDS, now - HORIZON_SECONDS)
        pts = [p[0] for p in self.native if p[0] >= since]
        return pts[-1] - pts[0] if len(pts) >= 2 else 0.0

    def native_rate(self, now: float, floor: float) -> dict[str, Any] | None:
        """Growth of the native bytes (malloc's in use less Python's, counted exactly), else None.

        The first NATIVE_SETTLE_SECONDS of a count are left out (memdiag's own start: its
        threads' malloc caches, the history database's first pages). The count is exact, so
        a rise at every point at one rate is a verdict over the early span already
        (:func:`~memdiag.leaks.live.early_linear`), as for a container."""
        if not self.native:
            return None
        settled = self._native_since + NATIVE_SETTLE_SECONDS
        pts = deque((p for p in self.native if p[0] >= settled), maxlen=self.native.maxlen)
        g = _series_growth(pts, now, floor)
        if g is None and len(pts) >= 2 and pts[-1][0] - pts[0][0] < MIN_SPAN_SECONDS:
            recent = [p for p in pts if p[0] >= now - HORIZON_SECONDS]
            xs, ys = [p[0] for p in recent], [p[1] for p in recent]
            if early_linear(xs, ys) and (ys[-1] - ys[0]) / (xs[-1] - xs[0]) * 60.0 >= floor:
                s, _ = theil_sen(xs, ys)
                return {"slope_per_min": s * 60.0, "span_seconds": xs[-1] - xs[0], "points": len(xs),
                        "confidence": round(min(1.0, (xs[-1] - xs[0]) / 90.0), 3), "early": True}
        return g

    def native_from_malloc(self, now: float, floor: float, python_rate: float) -> dict[str, Any] | None:
        """Native growth measured by mallinfo2 that Python allocations do not explain.

        Where Python's bytes from malloc are counted (plain pymalloc under the hooks), the
        native series is malloc's in-use bytes less them, exactly: its growth is the verdict
        whatever the Python heap does. Elsewhere malloc's growth is a verdict only while the
        (sampled) Python heap is nearly flat: a sampled total is too coarse to subtract.

        Under the preload shim (``memdiag run``) a native line it names comes first
        (:meth:`memory_suspects` lists this only when none does): a slow leak takes a few
        samples to name (a new user's 1 MiB/min ctypes leak got no verdict at all in 130 s
        while this measure saw it grow), and blocks from ``mmap``/``posix_memalign`` or a
        static allocator never reach the shim."""
        preload = heapprof.backend() == "preload"
        m = self.malloc_rate(now, floor)
        if self.counted:
            g = self.native_rate(now, floor)
            if g is None:
                return None
            rate, conf = g["slope_per_min"], round(min(0.9, 0.5 + 0.4 * g["confidence"]), 3)
            how = "mallinfo2 in use - Python's bytes from malloc (counted)"
        else:
            if m is None or python_rate > 0.3 * m:
                return None  # nothing steady, or the Python heap grows too
            rate, conf, how = m - max(0.0, python_rate), 0.6, "mallinfo2 in use - sampled Python heap"
        if rate < floor:
            return None
        return {
            "id": "native",
            "kind": "native",
            "file": None,
            "line": None,
            "traceback": None,
            "growth_bytes_per_min": round(rate, 1),
            "growth_per_min": None,
            "confidence": conf,
            "classified_by": "malloc",
            "evidence": {"malloc_in_use_bytes_per_min": round(m, 1) if m is not None else None,
                         "python_heap_bytes_per_min": round(python_rate, 1), "rate_from": how, "named_by": None},
            "suggestion": (
                "malloc's bytes in use grow and Python allocations do not explain it (C extensions, ctypes/cffi "
                f"buffers, native libraries): {PRELOAD_WAIT if preload else SHIM_ADVICE}"
            ),
        }

    def top(self, limit: int = 20) -> list[dict[str, Any]]:
        """The largest live sites of the last snapshot."""
        with self._lock:
            return self.heap.top(limit)

    def cost(self) -> tuple[int, int]:
        """``(bytes, bound)`` of the line series and the followed containers, as of the last
        snapshot (only the heap thread changes them): read without the lock, which a snapshot
        and its container scan hold for as long as they take (``overhead()`` never waits)."""
        return self._bytes, self.heap.bound_bytes() + self.containers.bound_bytes()

    def report(self) -> dict[str, Any]:
        prof = self.heap.last
        return {
            "state": self.heap_state,
            "backend": prof.backend if prof else heapprof.backend(),
            "running": self.heap_running,
            "snapshots": self.heap.snapshots,
            "interval_bytes": prof.interval_bytes if prof else None,
            "samples_live": prof.samples_live if prof else None,
            "dropped": prof.dropped if prof else None,
            "overhead_bytes": prof.overhead_bytes if prof else None,
            "container_scans": self.containers.scans,
            "container_scan_seconds": self.containers.last_seconds,
            "tick_seconds": self.tick_seconds,
            "snapshot_seconds": self.snapshot_seconds,
            "heap_round_cost_seconds": self.round_cost,
            "heap_cost_seconds": round(self.cost_seconds, 4),
            "growing_lines": list(self.growing_lines),
            "errors": self.errors,
            "last_error": self.last_error,
        }

    def clear(self) -> None:
        self.heap.clear()
        self.containers.clear()
        self.resources.clear()
        self.malloc.clear()
        self._bytes = self.heap.memory_bytes() + self.containers.memory_bytes()
        self.native.clear()
        self._native_line = None


def _series_growth(series: deque[tuple[float, float]], now: float, floor: float) -> dict[str, Any] | None:
    """The growth test on a malloc series over the recent horizon; None while too short, not
    growing, or slowing down (a warm-up through malloc: a cache, a pool, a page cache)."""
    pts = [p for p in series if p[0] >= now - HORIZON_SECONDS]
    if len(pts) < 8 or slowed_down(series, now):
        return None
    return growth_test([p[0] for p in pts], [p[1] for p in pts], floor, 64 * 1024.0)


def _slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 4:
        return 0.0
    s, _ = theil_sen(*thin(xs, ys, 40))
    return s * 60.0


def _matched(site: dict[str, Any] | None) -> dict[str, Any] | None:
    """A heap line matched to a container by its growth rate alone (neither an insertion
    read from code nor a sampled entry): said so in the verdict, since another line growing
    at a like rate can be matched instead."""
    return None if site is None else {**site, "site_from": "rate_match"}


def _insertion_site(c: dict[str, Any], inserted: list[dict[str, Any]]) -> dict[str, Any]:
    """The container's insertion line as the verdict's site: of several, the one nearest
    the line its entries were allocated on (the same line, else the closest in the same
    file: a registry filled from several places, one of them leaking), else the first; the
    traceback lists every insertion line, then the entries' allocating line (from the
    sampled heap) when known."""
    alloc = (c["file"], c["line"]) if c.get("file") else None
    first = inserted[0]
    if alloc is not None:
        near = [s for s in inserted if s["file"] == alloc[0]]
        if near:
            first = min(near, key=lambda s: abs(int(s["line"]) - int(alloc[1])))
    trace = [f"{s['file']}:{s['line']}" for s in [first, *(s for s in inserted if s is not first)]]
    if alloc is not None and f"{alloc[0]}:{alloc[1]}" not in trace:
        trace.append(f"{alloc[0]}:{alloc[1]}")
    return {"file": first["file"], "line": first["line"], "traceback": trace, "site_from": "insertion",
            "entries_allocated_at": f"{alloc[0]}:{alloc[1]}" if alloc else None}  # fmt: skip


def _container_suspect(c: dict[str, Any], site: dict[str, Any] | None, rate: float) -> dict[str, Any]:
    file = site.get("file") if site else None
    line = site.get("line") if site else None
    holder = c.get("holder")
    what = f"a {c['type']}" + (f" held by {holder}" if holder else "")
    where = f"{file}:{line}" if file else "an unknown line"
    allocated = site.get("entries_allocated_at") if site else None
    if site and site.get("site_from") == "rate_match":
        where = f"{where} (probably: the line whose live bytes grow at its rate)"
    return {
        "id": f"python_objects:{file}:{line}" if file else f"python_objects:container:{c['object_id']}",
        "kind": "python_objects",
        "file": file,
        "line": line,
        "traceback": site.get("traceback") if site else None,
        "growth_bytes_per_min": round(rate, 1),
        "growth_per_min": c["items_per_min"],
        "confidence": round(min(1.0, 0.7 + 0.3 * min(1.0, max(0.0, (c["z"] - 2.0) / 3.0))), 3),
        "classified_by": "live_heap",
        "evidence": {
            "container": {k: c.get(k) for k in ("type", "holder", "len", "items_per_min", "bytes_per_item",
                                                 "followed_seconds", "created_at")},
            "site_from": (site or {}).get("site_from") or ("live_heap" if site else None),
            **({"entries_allocated_at": allocated} if allocated else {}),
        },
        "suggestion": f"entries inserted at {where} accumulate in {what} that keeps growing: "
        "bound it or remove entries",
    }


def _site_suspect(s: dict[str, Any]) -> dict[str, Any]:
    kind = "native" if s["domain"] == "native" else "python_objects"
    return {
        "id": f"{kind}:{s['file']}:{s['line']}",
        "kind": kind,
        "file": s["file"],
        "line": s["line"],
        "traceback": s["traceback"],
        "growth_bytes_per_min": s["growth_bytes_per_min"],
        "growth_per_min": s["blocks_per_min"],
        "confidence": round(min(1.0, 0.45 + 0.5 * s["confidence"]), 3),
        "classified_by": "live_heap",
        "evidence": {k: s[k] for k in ("live_bytes", "live_blocks", "span_seconds", "points", "z", "p", "domain")},
        "suggestion": (
            f"memory allocated at {s['file']}:{s['line']} stays alive and keeps growing: check what keeps references"
            if kind == "python_objects"
            else f"native memory allocated under {s['file']}:{s['line']} is never freed"
        ),
    }
