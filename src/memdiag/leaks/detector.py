"""LeakDetector: always-on cheap signals, a verdict every few seconds, windows on suspicion.

It listens to the monitor's samples (``on_sample``) and, every
``max(sample_interval, leak_window_seconds / 30)`` seconds (10 s by default), fits
robust trends over the last ``leak_window_seconds`` of history:

* **memory**: over the recent half of the window, RSS must grow significantly
  (Mann-Kendall p < 0.01), faster than ``leak_min_growth_kb_per_min``, without levelling
  off (no plateau in its last third, no halving of the slope from its first half to
  its second). With the heap profile running (the default), the live heap names the
  site: growing containers at once, growing Python lines outside any container once RSS
  has grown for ``leak_window_seconds / 5``; no tracing window opens on its own. Without
  it (the fallback), an allocation-tracing window is started automatically (budget
  permitting) and its result classifies the growth and names the site.
* **resources**: fds, threads, asyncio tasks, child processes and zombies must keep
  rising (significant, no plateau) by a minimum count.
* ``gc.garbage`` growing (uncollectable objects) and malloc retaining a large share of
  RSS as free memory (``mallinfo2``).

A suspect survives short lapses (a fifth of the window) before it is resolved, so a
noisy trend does not flap; each change goes through the :class:`Notifier`.
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from .. import registry
from .._logging import get_logger
from .._record import asdict
from ..errors import MemdiagError
from ..history import COLUMNS, growth_split
from ..probes.python import yield_gil
from ..stats import Trend, median, trend
from .census import CensusHistory
from .classify import (
    RESOURCES,
    decelerating,
    followed_suspect,
    memory_suspects,
    resource_suspect,
    retention_suspect,
    uncollectable_suspect,
)
from .flight import FlightRecorder
from .follow import ContainerFollower
from .live import MIN_SPAN_SECONDS, RETAIN_SECONDS, growth_test, prune
from .livecheck import LiveChecker
from .native import MallocInfo, malloc_info
from .notify import notifier
from .resources import garbage_types, tasks_collector
from .sites import KINDS as SITE_KINDS
from .tracing import MIN_HORIZON_SECONDS, manager

if TYPE_CHECKING:
    from ..monitor import Monitor
    from ..pressure import PressureState
    from ..sample import Sample

__all__ = ["LeakDetector"]

log = get_logger("memdiag.leaks")


class LeakDetector:
    """Leak detection for one :class:`~memdiag.service.MemoryDiagnostics`.

    Use :func:`memdiag.leaks.enable` (``memdiag.start()`` does it when
    ``leak_detection`` is on) rather than building one directly.
    """

    def __init__(self, diag: Monitor) -> None:
        self._diag = weakref.ref(diag)
        self.pid = os.getpid()
        self.active = False
        self._registered = False
        self.census = CensusHistory()
        self._series: dict[str, deque[tuple[float, float]]] = {
            name: deque(maxlen=4096) for name in ("asyncio_tasks", "gc_garbage", "malloc_in_use", "malloc_free")
        }
        self._suspects: dict[str, dict[str, Any]] = {}
        self._missing: dict[str, float] = {}
        self._resolved: deque[dict[str, Any]] = deque(maxlen=20)
        self._growth_since: float | None = None
        self._last_growing = 0.0
        self._seen_window: Any = None
        self.follower = ContainerFollower()
        self.live = LiveChecker()
        self._advice: list[dict[str, Any]] = []
        self._attached_at = time.time()
        self._last_check = 0.0
        self._checked_at: float | None = None
        self._check_seconds: deque[float] = deque(maxlen=100)
        self._trends: dict[str, Any] = {}
        self._auto_blocked: str | None = None
        self._malloc: MallocInfo | None = None
        self._lock = threading.RLock()
        self._busy = threading.local()
        self.flight = FlightRecorder()
        # True once the flight recorder has written during the current critical episode;
        # a service already critical when the detector attached is caught up on next tick.
        self._critical_recorded = False
        self.checks = 0
        self.errors = 0
        self.last_error: str | None = None

    # -- wiring ----------------------------------------------------------------------
    def attach(self) -> LeakDetector:
        """Listen to the monitor's samples and pressure changes; add the report section."""
        diag = self._diag()
        if diag is None:
            raise MemdiagError("the MemoryDiagnostics instance is gone")
        if not self._registered:
            diag.on_sample(self._on_sample)
            diag.on_pressure_change(self._on_pressure)
            self._registered = True
        registry.register_collector("asyncio_tasks", tasks_collector)
        if not self.active:
            self.live.start(diag.config.heap_profile)
            self._attached_at = time.time()
        self.active = True
        return self

    def detach(self) -> None:
        """Stop reacting to samples and end a running tracing window."""
        self.active = False
        manager().stop()
        self.live.stop()

    # -- listeners (monitor thread) ----------------------------------------------------
    def _on_sample(self, sample: Sample, state: PressureState) -> None:
        if not self.active or getattr(self._busy, "on", False):
            return
        diag = self._diag()
        if diag is None:
            return
        self._busy.on = True
        try:
            cfg = diag.config
            reason = self.flight.event_reason(sample.cgroup.events if sample.cgroup is not None else None)
            if reason:
                self._flight(diag, reason)
            self._catch_up_critical(diag, state)
            self._record_imminent(diag, state)
            if not cfg.leak_detection:
                return
            now = sample.time
            tasks = sample.extra.get("asyncio_tasks")
            if isinstance(tasks, int):
                self._append("asyncio_tasks", now, float(tasks), cfg.leak_window_seconds)
            self._append("gc_garbage", now, float(sample.python.garbage), cfg.leak_window_seconds)
            # resource totals are read over the verdict window too
            self.live.resources.retain_seconds = max(RETAIN_SECONDS, cfg.leak_window_seconds)
            pids = [c.pid for c in sample.children if c.state != "Z"]
            zombies = [c.pid for c in sample.children if c.state == "Z"]
            self.live.tick(now, cfg.heap_snapshot_seconds, pids, zombies)
            if sample.profile:
                yield_gil()  # between steps: a waiting request runs (probes.python.yield_gil)
                self.census.take()
            every = max(cfg.sample_interval, cfg.leak_window_seconds / 30.0)
            mono = time.monotonic()
            if mono - self._last_check >= every:
                self._last_check = mono
                yield_gil()
                self.check()
        except Exception as exc:  # never into the monitor
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.debug("leak detector failed: %s", self.last_error, exc_info=True)
        finally:
            self._busy.on = False

    def _on_pressure(self, previous: PressureState, current: PressureState) -> None:
        if current.level != "critical":
            self._critical_recorded = False
        if not self.active or current.level != "critical" or previous.level == "critical":
            return
        diag = self._diag()
        if diag is not None:
            why = ", ".join(f"{r['signal']}={r['value']}" for r in current.reasons) or "critical"
            self._critical_recorded = self._flight(diag, f"pressure {previous.level} -> critical ({why})")

    def _catch_up_critical(self, diag: Monitor, state: PressureState) -> None:
        """Record a critical episode whose transition this detector did not see (the
        service was critical before it attached, e.g. at startup), once per episode."""
        if state.level != "critical":
            self._critical_recorded = False
        elif not self._critical_recorded:
            why = ", ".join(f"{r['signal']}={r['value']}" for r in state.reasons) or "critical"
            self._critical_recorded = self._flight(diag, f"pressure critical, already when recording began ({why})")

    def _record_imminent(self, diag: Monitor, state: PressureState) -> None:
        """When the limit is projected within half of ``act_ahead_seconds`` (the defence has
        not stopped the growth), write the flight record naming the cause, before the kill.
        At most one write per the recorder's interval."""
        detector = getattr(diag, "detector", None)
        proj = getattr(getattr(detector, "projection", None), "last", None)
        if proj is None or proj.seconds_to_limit is None or state.raw_level != "critical":
            return
        if proj.seconds_to_limit > diag.config.act_ahead_seconds / 2:
            return
        self._flight(diag, f"OOM imminent: {proj.describe()}; growing: {self._growth_cause(diag)}")

    def _growth_cause(self, diag: Monitor) -> str:
        """What is growing, in words: the leak suspect first, then where the bytes go."""
        parts = []
        growing = [s for s in self.suspects() if (s.get("growth_bytes_per_min") or 0) > 0]
        growing.sort(key=lambda s: -(s.get("growth_bytes_per_min") or 0))
        for s in growing[:2]:  # the fastest-growing first: that is what the kill will be about
            where = f" at {s['file']}:{s['line']}" if s.get("file") else ""
            rate = s.get("growth_bytes_per_min")
            parts.append(f"leak suspect {s.get('kind')}{where}" + (f" (+{rate / 1048576:.1f} MiB/min)" if rate else ""))
        history = getattr(diag, "history", None)
        split = growth_split(history, 30.0) if history is not None else {}
        if split:
            parts.append(
                f"outside the caches {split['other_bytes_per_second'] / 1048576:+.2f} MiB/s, "
                f"caches {split['cache_bytes_per_second'] / 1048576:+.2f} MiB/s"
            )
        return "; ".join(parts) or "unknown (no history yet)"

    def _flight(self, diag: Monitor, reason: str) -> bool:
        def build() -> dict[str, Any]:
            report = diag.diagnostics()
            report.setdefault("leaks", self.report())
            return report

        return self.flight.write(diag.config.flight_recorder_path, reason, build)

    def _window_done(self, result: dict[str, Any]) -> None:
        self._last_check = 0.0  # re-check at the next tick with the new evidence

    # -- the verdict -------------------------------------------------------------------
    def _append(self, name: str, now: float, value: float, window: float) -> None:
        """One point of an own series; points older than any read of it are dropped (the
        verdict window, at least RETAIN_SECONDS), so the series is at its steady size once
        one window has passed rather than filling toward its 4096 points for an hour."""
        ser = self._series[name]
        ser.append((now, value))
        prune(ser, now - max(RETAIN_SECONDS, window))

    def _own_series(self, name: str, since: float) -> tuple[list[float], list[float]]:
        pts = [(t, v) for t, v in list(self._series[name]) if t >= since]
        return [p[0] for p in pts], [p[1] for p in pts]

    def check(self) -> list[dict[str, Any]]:
        """Evaluate every signal now; returns the current suspects (best first)."""
        diag = self._diag()
        if diag is None:
            return []
        t0 = time.perf_counter()
        cfg = diag.config
        window = cfg.leak_window_seconds
        floor = cfg.leak_min_growth_kb_per_min * 1024.0  # bytes/min
        now = time.time()
        since = now - window
        found: dict[str, dict[str, Any]] = {}
        trends: dict[str, Any] = {}

        mi = malloc_info()
        self._malloc = mi
        if mi is not None:
            self._append("malloc_in_use", now, float(mi.in_use), window)
            self._append("malloc_free", now, float(mi.free), window)

        if self.live.heap_running:
            # Growing containers (and native lines) from the live heap, within a minute or
            # two; a leak held outside any container is still named by a tracing window.
            for ms in self.live.memory_suspects(now, floor):
                found.setdefault(ms["id"], ms)
        self._window_memory(diag, cfg, now, floor, found, trends)
        self._resources(diag, now, since, found, trends)

        gx, gy = self._own_series("gc_garbage", since)
        if gy and gy[-1] > gy[0]:
            us = uncollectable_suspect(int(gy[-1]), int(gy[0]), trend(gx, gy, max_points=60), garbage_types())
            if us is not None:
                found[us["id"]] = us

        self._advice = []
        if mi is not None:
            fx, fy = self._own_series("malloc_free", now - 150.0)
            # Retained free memory is a leak only while it keeps growing; a large but steady
            # amount (transients freed back to malloc's arenas) is advice, not a suspect.
            g = growth_test(fx, fy, floor, 1024 * 1024.0) if len(fx) >= 8 else None
            s = retention_suspect(
                mi.free,
                mi.in_use,
                diag.last_sample.process.rss if diag.last_sample else None,
                g["slope_per_min"] if g is not None else None,
            )
            if s is not None and g is not None:
                found[s["id"]] = s
            elif s is not None:
                self._advice.append({**s, "confidence": None, "note": "steady, not growing: not a leak"})

        with self._lock:
            self._trends = trends
            self._commit(found, now, window, cfg.leak_webhook_url)
            self._checked_at = now
            self.checks += 1
            self._check_seconds.append(time.perf_counter() - t0)
            return self.suspects()

    def _resources(
        self, diag: Monitor, now: float, since: float, found: dict[str, Any], trends: dict[str, Any]
    ) -> None:
        """Resource suspects: by creating line where known, else by the application's count."""
        window = diag.config.leak_window_seconds
        by_site = self.live.resources.suspects(now)
        for rs in by_site:
            found[rs["id"]] = rs
        named = {rs["kind"] for rs in by_site}
        for kind, (col, *_rest) in RESOURCES.items():
            if kind in SITE_KINDS and self.live.resources.totals[kind]:
                # memdiag's own fds, threads, tasks and children left out
                pts = [p for p in self.live.resources.totals[kind] if p[0] >= since]
                rx, ry = [p[0] for p in pts], [p[1] for p in pts]
            elif col in COLUMNS:
                rx, ry = diag.history.series(col, since=since)
            else:
                rx, ry = self._own_series(col, since)
            t = trend(rx, ry, max_points=60)
            trends[kind] = _brief(t)
            vals = [v for v in ry if math.isfinite(v)]
            if t is not None and vals and kind not in named:
                rs = resource_suspect(kind, t, vals[0], vals[-1], window, 0.5 * window)
                if rs is not None:
                    found[rs["id"]] = rs

    def _window_memory(
        self, diag: Monitor, cfg: Any, now: float, floor: float, found: dict[str, Any], trends: dict[str, Any]
    ) -> None:
        """Memory suspects without a live heap: RSS growth, then a tracing window names the site."""
        window = cfg.leak_window_seconds
        recent_t, heap_t, malloc_t, growing = self._memory_trends(diag, now, window, floor, trends)
        confirm = window / 5.0
        every = max(cfg.sample_interval, window / 30.0)
        self._follow_new_window()
        self.follower.sample(now, max(every, window / 10.0))
        rss_rate = recent_t.slope_per_second * 60.0 if recent_t is not None else None
        # Sites whose container went on growing after the window named it: leaks, whatever
        # RSS does meanwhile (a warm-up elsewhere can hide a slow leak in the RSS trend).
        # Not a site that fills a cache the live heap saw evict or reorder (an LRU filling
        # slowly keeps growing after the window named it: the 10-minute twin_warmup).
        caches = self.live.cache_lines() if self.live.heap_running else set()
        for item in self.follower.growing(now, confirm):
            fs = followed_suspect(item, rss_rate, window)
            if (fs.get("file"), fs.get("line")) not in caches:
                found[fs["id"]] = fs
        if growing:
            assert recent_t is not None
            self._growth_verdict(cfg, now, floor, recent_t, heap_t, malloc_t, found)
        elif self._growth_since is not None and now - self._last_growing > confirm:
            self._growth_since = None

    def _memory_trends(
        self, diag: Monitor, now: float, window: float, floor: float, trends: dict[str, Any]
    ) -> tuple[Trend | None, Trend | None, Trend | None, bool]:
        """``(recent RSS, heap blocks, malloc in use, growing)`` over the recent half of the
        window, each noted in ``trends``; ``growing``: the recent RSS passes the growth test."""
        xs, ys = diag.history.series("rss", since=now - window)
        rss_t = trend(xs, ys, max_points=90)
        # The verdict is on the recent half of the window: growth that goes on *now*. A
        # warm-up earlier in the window must not hide a leak that followed it, and a
        # warm-up still levelling off (decelerating) must not pass for one.
        half = window / 2.0
        cut = next((i for i, x in enumerate(xs) if x >= now - half), len(xs))
        rx, ry = xs[cut:], ys[cut:]
        recent_t = trend(rx, ry, max_points=90)
        heap_t = diag.history.trend("heap_blocks", half, max_points=60)
        malloc_t = trend(*self._own_series("malloc_in_use", now - half), max_points=60)
        decel = decelerating(rx, ry) if recent_t is not None else False
        trends["rss"] = _brief(rss_t)
        trends["rss_recent"] = None if recent_t is None else {**(_brief(recent_t) or {}), "decelerating": decel}
        trends["heap_blocks"] = _brief(heap_t)
        trends["malloc_in_use"] = _brief(malloc_t)
        return recent_t, heap_t, malloc_t, _rss_growing(recent_t, decel, floor, half)

    def _follow_new_window(self) -> None:
        """Hand the containers a new tracing window found growing to the follower."""
        last = manager().last_result
        if last is not None and last.get("id") != self._seen_window and "growing_sites" in last:
            self._seen_window = last.get("id")
            sites = {(g["file"], g["line"]): g for g in last["growing_sites"]}
            for c in last.get("growing_containers", []):
                if (c.get("site_share") or 0) >= 0.3:
                    self.follower.add(c, sites.get((c.get("file"), c.get("line"))), last)

    def _growth_verdict(
        self,
        cfg: Any,
        now: float,
        floor: float,
        recent_t: Trend,
        heap_t: Trend | None,
        malloc_t: Trend | None,
        found: dict[str, Any],
    ) -> None:
        """RSS grows now: once confirmed, classify it. With the heap profile running the
        live heap's growing Python lines are the sites (no window); without it a tracing
        window names them (budget permitting)."""
        window = cfg.leak_window_seconds
        half, confirm = window / 2.0, window / 5.0
        self._last_growing = now
        if self._growth_since is None:
            self._growth_since = now
        result = self._episode_window(now, window)
        if self.live.heap_running:
            # The live heap names the sites: no tracing window opens on its own (windows
            # are the fallback where the heap profile cannot run; manual ones still count).
            self._auto_blocked = None
            if now - self._growth_since >= confirm:
                for ls in self.live.line_suspects(now):
                    found.setdefault(ls["id"], ls)
        else:
            # Trace again when the growth is still unexplained a window after the last
            # trace (a warm-up that turned into a leak), else only when the evidence has
            # aged past the budget's horizon: each window costs the service real time.
            age = now - float(result.get("ended_at") or 0.0) if result is not None else None
            explained = any(k.startswith("python_objects:") for k in found)
            if age is None or age > MIN_HORIZON_SECONDS or (age > window and not explained):
                self._auto_window(cfg)
        # A verdict is listed only once the growth outlasted the window by `confirm`:
        # a cache still warming up when the window ran has levelled off by then.
        if result is not None and now >= float(result.get("ended_at") or now) + confirm:
            growing_types = self.census.growing_types()
            live = {k for k, v in found.items() if v.get("classified_by") == "live_heap"}
            caches = self.live.cache_lines() if self.live.heap_running else set()
            for ms in memory_suspects(recent_t, half, heap_t, result, floor, malloc_t, growing_types):
                if ms["evidence"].get("container") is None:  # anchored sites: the follower decides
                    if ms["kind"] == "native" and (live or "native" in found):
                        continue  # the live heap explained the growth (or measured it)
                    if (ms.get("file"), ms.get("line")) in caches:
                        continue  # a cache's turnover seen by the window (its entries' line)
                    if ms["kind"] == "python_objects" and self.live.heap_running and not self.live.line_grows(
                        ms.get("file"), ms.get("line"), now, 0.5 * float(ms.get("growth_bytes_per_min") or 0.0)
                    ):
                        continue  # the live heap does not see that line grow (a warm-up's last inserts)
                    ms = self._native_rate(ms, now, floor)
                    if ms is not None:
                        found.setdefault(ms["id"], ms)
        elif result is None and self._auto_blocked and now - self._growth_since >= confirm:
            # No window possible (budget): the cheap signals' tentative verdict.
            ms = memory_suspects(recent_t, half, heap_t, None, floor, malloc_t, self.census.growing_types())[0]
            ms = self._native_rate(ms, now, floor)
            if ms is not None:
                found[ms["id"]] = {**ms, "evidence": {**ms["evidence"], "window": self._auto_blocked}}

    def _native_rate(self, ms: dict[str, Any], now: float, floor: float) -> dict[str, Any] | None:
        """A native verdict's rate from malloc's figures (not RSS) where they grow steadily.

        Where Python's bytes from malloc are counted, the native bytes (malloc's less
        Python's) give the rate, and if they do not grow there is no native verdict: RSS
        then grows in pymalloc's arenas (a cache warming up, fragmentation), in malloc's
        free memory (the retention verdict's business) or, rarely, in memory native code
        maps itself with mmap (not reported as native then: far more often a warm-up)."""
        if ms["kind"] != "native":
            return ms
        from .livecheck import SHIM_ADVICE

        if self.live.counted:
            g = self.live.native_rate(now, floor)
            if g is None:  # a count too short to tell yet: the verdict as before
                return ms if self.live.native_span(now) < MIN_SPAN_SECONDS else None
            m, how = g["slope_per_min"], "mallinfo2 in use - Python's bytes from malloc (counted)"
        else:
            m, how = self.live.malloc_rate(now, floor), "mallinfo2"
            if m is None:
                return ms
        return {
            **ms,
            "growth_bytes_per_min": round(m, 1),
            "classified_by": "malloc",
            "evidence": {**ms["evidence"], "rate_from": how},
            "suggestion": f"{ms['suggestion']}; {SHIM_ADVICE}",
        }

    def _episode_window(self, now: float, window: float) -> dict[str, Any] | None:
        """The latest successful tracing window run during this growth (or just before)."""
        for r in reversed(list(manager().results)):
            if r.get("error") or "growing_sites" not in r:
                continue
            started = float(r.get("started_at") or 0.0)
            if self._growth_since is not None and started >= max(self._growth_since - window, self._attached_at):
                return r
        return None

    def _auto_window(self, cfg: Any) -> None:
        m = manager()
        if m.running:
            return
        budget = m.budget(cfg)
        if not budget["allowed"]:
            self._auto_blocked = budget["reason"]
            return
        try:
            m.start(cfg, reason="auto", on_done=self._window_done)
            self._auto_blocked = None
        except (MemdiagError, ValueError) as exc:
            self._auto_blocked = str(exc)

    def _commit(self, found: dict[str, dict[str, Any]], now: float, window: float, webhook: str | None) -> None:
        hold = window / 5.0
        note = notifier()
        latest = max((x["evidence"].get("window_id") or 0 for x in found.values()), default=0)
        # a verdict renamed (tasks named at their coroutine, then at their creating line once
        # the Task hook went in) is superseded at once, not held as a lapse; so is one whose
        # container was seen evicting (a cache)
        replaced = {k for x in found.values() for k in x["evidence"].get("replaces", ())}
        replaced |= self.live.retracted if self.live.heap_running else set()
        for key, s in found.items():
            prev = self._suspects.get(key)
            s["first_seen"] = prev["first_seen"] if prev else now
            s["last_seen"] = now
            self._missing.pop(key, None)
            self._suspects[key] = s
            note.suspect(s, webhook)
        for key in list(self._suspects):
            if key in found:
                continue
            since = self._missing.setdefault(key, now)
            superseded = key in replaced or (self._suspects[key]["evidence"].get("window_id") or latest) < latest
            if now - since < hold and not superseded:
                continue  # a short lapse: keep the verdict (but not one a newer window replaced)
            gone = self._suspects.pop(key)
            self._missing.pop(key, None)
            gone["resolved_at"] = now
            self._resolved.append(gone)
            note.resolved(gone, webhook)

    # -- reports -----------------------------------------------------------------------
    def suspects(self) -> list[dict[str, Any]]:
        """Current suspects, most confident first."""
        with self._lock:
            items = [dict(s) for s in self._suspects.values()]
        items.sort(key=lambda s: (s.get("confidence") or 0.0, s.get("growth_bytes_per_min") or 0.0), reverse=True)
        return items

    def report(self) -> dict[str, Any]:
        """The ``leaks`` report (see :func:`memdiag.leaks.leaks_report`)."""
        diag = self._diag()
        if diag is None:
            raise MemdiagError("the MemoryDiagnostics instance is gone")
        cfg = diag.config
        last = manager().last_result or {}
        with self._lock:
            times = list(self._check_seconds)
            trends = dict(self._trends)
            resolved = [dict(s) for s in self._resolved]
        return {
            "enabled": cfg.leak_detection,
            "attached": self.active,
            "checked_at": self._checked_at,
            "checks": self.checks,
            "check_interval_seconds": max(cfg.sample_interval, cfg.leak_window_seconds / 30.0),
            "window_seconds": cfg.leak_window_seconds,
            "min_growth_bytes_per_min": cfg.leak_min_growth_kb_per_min * 1024.0,
            "suspects": self.suspects(),
            "resolved": resolved,
            "trends": trends,
            "tracing": {
                **manager().state(cfg),
                "auto_blocked": self._auto_blocked,
                # windows open on their own only where the heap profile is not running
                "auto_windows": not self.live.heap_running,
            },
            "top_allocations": list(last.get("top_allocations", [])),
            "growing_sites": list(last.get("growing_sites", [])),
            "growing_containers": list(last.get("growing_containers", [])),
            "followed_containers": self.follower.report(),
            "census": self.census.report(),
            "malloc": asdict(self._malloc) if self._malloc is not None else None,
            "advice": list(self._advice),
            "live_heap": self.live.report(),
            "top_live_sites": self.live.top(20),
            "resources": self.live.resources.report(),
            "notifications": notifier().report(),
            "flight_recorder": self.flight.report(cfg.flight_recorder_path),
            "overhead": {
                "check_seconds_median": median(times),
                "check_seconds_max": max(times) if times else None,
                "census_seconds_last": self.census.last_seconds,
                "follow_seconds_last": self.follower.last_seconds,
            },
            "errors": self.errors,
            "last_error": self.last_error,
        }


def _rss_growing(recent: Trend | None, decelerating: bool, floor: float, half: float) -> bool:
    """The growth test: the recent RSS rises significantly, above ``floor`` (bytes/min),
    without a plateau or a slowing down, over (nearly) all of the recent ``half`` window."""
    return (
        recent is not None
        and recent.growing
        and not recent.plateau
        and not decelerating
        and recent.slope_per_second * 60.0 >= floor
        and recent.span_seconds >= 0.95 * half
    )


def _brief(t: Trend | None) -> dict[str, Any] | None:
    if t is None:
        return None
    return {
        "slope_per_minute": round(t.slope_per_second * 60.0, 3),
        "p": t.p,
        "growing": t.growing,
        "plateau": t.plateau,
        "span_seconds": round(t.span_seconds, 1),
        "points": t.points,
    }
