"""MemoryDiagnostics: the per-process monitor that ties probes, pressure and cleanup.

One shared instance per process (:meth:`MemoryDiagnostics.get_instance`, or
``memdiag.start()``) samples on a daemon thread every ``sample_interval``, runs the
heavier profile every ``profile_interval``, keeps a bounded history, detects pressure,
and runs the cleanup ladder automatically when enabled. The thread never touches an
event loop, so plain, threaded and asyncio services are served alike; the ``a*``
methods run the blocking calls in a worker thread for async callers.

Fork safety: after ``fork()`` the child gets a fresh monitor (its own thread, history
and descriptors) if the parent's was running; the API server is not inherited.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from . import config as _config_mod
from . import registry
from .cleanup import CleanupLadder, CleanupResult, install_builtin_actions
from .config import MemoryConfig, load_config, save_config
from .history import COLUMNS, History, HistoryStore, history_path
from .pressure import LEVELS, PressureDetector, PressureState
from .redact import redact_argv
from .sample import Sample, Sampler

__all__ = ["MemoryDiagnostics", "add_subprocess_decorator"]

log = logging.getLogger("memdiag")
MIB = 1024 * 1024
_RANK = {name: i for i, name in enumerate(LEVELS)}


class MemoryDiagnostics:
    """Memory monitor, reporter and cleanup coordinator for one process.

    Most applications use the shared instance::

        import memdiag
        diag = memdiag.start(memory_threshold_mb=800)   # starts the background monitor
        diag.profile()["pressure"]["level"]
        diag.cleanup(force=True)

    Args:
        config: the configuration; ``None`` loads it from file and environment
            (:func:`memdiag.config.load_config`).
        proc_root, cgroup_root: where /proc and the cgroup mount are (tests).
    """

    _instance: MemoryDiagnostics | None = None
    _instance_lock = threading.Lock()

    def __init__(
        self, config: MemoryConfig | None = None, *, proc_root: str = "/proc", cgroup_root: str | None = None
    ) -> None:
        self._cfg = config if config is not None else load_config()
        self.proc_root = proc_root
        self.cgroup_root = cgroup_root
        self._cfg_lock = threading.Lock()
        self._sample_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at: float | None = None
        self.http_server: Any = None
        self._init_state()
        install_builtin_actions()
        from .processes import install as install_process_parts  # zombie/owned rungs, tree report

        install_process_parts()
        _INSTANCES.add(self)

    def _init_state(self) -> None:
        """(Re)create everything that belongs to one process."""
        self.pid = os.getpid()
        self._sampler = Sampler(None, self.proc_root, self.cgroup_root)
        self.detector = PressureDetector(self._cfg)
        self.history = History(self._cfg.history_size)
        self.store = _open_store(self._cfg)
        self.ladder = CleanupLadder(lambda: self._cfg, self._check_pressure, "self")
        self.ladder.add_listener(self._record_cleanup)
        self.events: deque[dict[str, Any]] = deque(maxlen=100)
        self.last_sample: Sample | None = None
        self.last_profile: Sample | None = None
        self._last_profile_at = 0.0
        self._ticks = 0
        self._errors = 0
        self.last_error: str | None = None
        self._tick_times: deque[float] = deque(maxlen=512)
        self._cpu_seconds = 0.0
        # trends() of the last sample: Theil-Sen over a window is the costliest report, and
        # pollers (the dashboard's diagnostics + history, every 2 s) ask for it repeatedly.
        self._trends_memo: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self._sample_listeners: list[Callable[[Sample, PressureState], None]] = []
        self._pressure_listeners: list[Callable[[PressureState, PressureState], None]] = []

    # -- the shared instance -----------------------------------------------------------
    @classmethod
    def get_instance(cls, config: MemoryConfig | None = None, **overrides: Any) -> MemoryDiagnostics:
        """The process's shared instance, created on first use (config from file + env)."""
        with cls._instance_lock:
            if cls._instance is None or cls._instance.pid != os.getpid():
                cfg = config if config is not None else load_config(overrides=overrides)
                cls._instance = cls(cfg)
            elif config is not None or overrides:
                cls._instance.configure({**(config.to_dict(redact=False) if config else {}), **overrides})
            return cls._instance

    @classmethod
    def reset_instance(cls) -> None:
        """Stop and forget the shared instance (tests, or a full reconfiguration)."""
        with cls._instance_lock:
            inst, cls._instance = cls._instance, None
        if inst is not None:
            inst.stop()

    # -- configuration -----------------------------------------------------------------
    @property
    def config(self) -> MemoryConfig:
        return self._cfg

    def configure(
        self, changes: Mapping[str, Any] | None = None, /, *, persist: bool = False, **kwargs: Any
    ) -> MemoryConfig:
        """Apply a partial update, validated as a whole; returns the new configuration.

        Raises :class:`~memdiag.errors.ConfigError` (naming each bad field) and changes
        nothing if any value is invalid. With ``persist`` the changed fields are also
        written to the config file, atomically.
        """
        merged = {**(dict(changes) if changes else {}), **kwargs}
        with self._cfg_lock:
            new = self._cfg.updated(merged)
            if persist:
                save_config({k: getattr(new, k) for k in merged})
            old, self._cfg = self._cfg, new
            self.detector.reconfigure(new)
            if new.history_size != old.history_size:
                self._resize_history(new.history_size)
            if _store_settings(new) != _store_settings(old):
                if self.store is not None:
                    self.store.close()
                self.store = _open_store(new)
            if self is MemoryDiagnostics._instance:
                _config_mod._set_active(new)
        self._wake.set()  # a new interval takes effect now, not after the old one
        return new

    def _resize_history(self, capacity: int) -> None:
        old = self.history
        new = History(capacity)
        # Carry over the most recent summaries.
        keep = old.rows(last=capacity)
        with new._lock:
            for k, row in enumerate(keep):
                for ci, name in enumerate(COLUMNS):
                    v = row.get(name)
                    new._cols[ci][k] = float("nan") if v is None else v
            new._len = len(keep)
            new._next = len(keep) % capacity
        self.history = new

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> MemoryDiagnostics:
        """Start the background monitor (idempotent). Returns ``self``."""
        if self.running:
            return self
        self._stop.clear()
        self._started_at = time.time()
        if self._cfg.subreaper:
            self._become_subreaper()
        t = threading.Thread(target=self._loop, name="memdiag-monitor", daemon=True)
        self._thread = t
        t.start()
        if self is MemoryDiagnostics._instance:
            _config_mod._set_active(self._cfg)
        if self._cfg.leak_detection:
            self._attach_leaks()
        self._run_lifecycle(0)
        return self

    def _run_lifecycle(self, which: int) -> None:
        """Registered surfaces that follow the monitor (0: started, 1: stopped), e.g. the
        local control channel; a failing one is logged, never raised."""
        for name, hooks in registry.lifecycle_hooks().items():
            try:
                hooks[which](self)
            except Exception as exc:
                log.warning("memdiag %s could not %s: %r", name, "start" if which == 0 else "stop", exc)

    def _attach_leaks(self) -> None:
        # Imported here: `import memdiag` stays cheap and never loads the leak machinery.
        try:
            from .leaks import enable

            enable(self)
            from .leaks import on_leak

            on_leak(self._record_leak)
        except Exception as exc:
            log.warning("memdiag leak detection could not start: %r", exc)

    # -- what the history file keeps beside the samples ----------------------------------
    def _record_cleanup(self, result: CleanupResult) -> None:
        store = self.store
        if store is not None and result.performed:
            store.add_event("cleanup", result.to_dict())

    def _record_leak(self, alert: Mapping[str, Any]) -> None:
        store = self.store
        if store is not None and self.pid == os.getpid():
            store.add_event("leak", alert)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the monitor and the API server, flush stored history (idempotent)."""
        self._stop.set()
        self._wake.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        self._thread = None
        leaks = sys.modules.get("memdiag.leaks")
        if leaks is not None:  # loaded only if leak detection or tracing was ever used
            leaks.disable(self)
            leaks.remove_leak_callback(self._record_leak)
        self._run_lifecycle(1)
        server, self.http_server = self.http_server, None
        if server is not None:
            try:
                server.close()
            except Exception as exc:
                log.debug("closing the API server failed: %r", exc)
        if self.store is not None:
            self.store.flush()

    def close(self) -> None:
        """Stop and release every resource (descriptors, SQLite connection)."""
        self.stop()
        self._sampler.close()
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> MemoryDiagnostics:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _become_subreaper(self) -> None:
        try:
            from .processes import set_child_subreaper  # provided by the processes module

            set_child_subreaper(True)
        except Exception as exc:  # not Linux, or the module is not there
            log.info("could not become a child subreaper: %r", exc)

    # -- the loop ----------------------------------------------------------------------
    def _loop(self) -> None:
        cpu_start = time.thread_time()
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # never die silently: count, remember, go on
                self._errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                if self._errors <= 3 or self._errors % 100 == 0:
                    log.warning("memdiag monitor tick failed (%d so far): %s", self._errors, self.last_error)
            self._cpu_seconds = time.thread_time() - cpu_start
            interval = self._cfg.sample_interval
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # fell behind (suspend, slow tick): don't burst
                next_at = now + interval
            self._wake.wait(next_at - now)
            if self._wake.is_set():
                self._wake.clear()
                next_at = time.monotonic()

    def tick(self, profile: bool | None = None) -> tuple[Sample, PressureState]:
        """Take one sample, update pressure, history, listeners and maybe auto-cleanup."""
        cfg = self._cfg
        now = time.monotonic()
        if profile is None:
            profile = cfg.enable_profiling and (
                self._last_profile_at == 0.0 or now - self._last_profile_at >= cfg.profile_interval
            )
        t0 = time.perf_counter()
        with self._sample_lock:
            sample = self._sampler.take(profile=profile)
            state, previous = self.detector.update(sample)
        if profile:
            self._last_profile_at = now
            self.last_profile = sample
        self.last_sample = sample
        self.history.append(sample, state.level)
        if self.store is not None:
            self.store.add(sample, state.level)
        self._ticks += 1
        if previous is not None:
            self._on_transition(previous, state)
        for fn in list(self._sample_listeners):
            try:
                fn(sample, state)
            except Exception as exc:
                log.debug("sample listener failed: %r", exc)
        for name, observe in registry.observers().items():
            try:
                observe(sample)
            except Exception as exc:
                log.debug("sample observer %s failed: %r", name, exc)
        if (
            cfg.enable_auto_cleanup
            and _RANK[state.level] >= _RANK[cfg.auto_cleanup_level]
            and not self.ladder.running
            and self.ladder.retry_after() == 0
        ):
            self.ladder.run(reason="auto", level=state.level)
        self._tick_times.append(time.perf_counter() - t0)
        return sample, state

    def _on_transition(self, previous: PressureState, state: PressureState) -> None:
        event = {
            "time": time.time(),
            "from": previous.level,
            "to": state.level,
            "reasons": [dict(r) for r in state.reasons],
        }
        self.events.append(event)
        if self.store is not None:
            self.store.add_event("pressure", event, at=event["time"])
        log_fn = log.warning if _RANK[state.level] > _RANK[previous.level] else log.info
        log_fn(
            "memory pressure %s -> %s: %s",
            previous.level,
            state.level,
            ", ".join(f"{r['signal']}={r['value']} (threshold {r['threshold']})" for r in state.reasons) or "resolved",
        )
        for fn in list(self._pressure_listeners):
            try:
                fn(previous, state)
            except Exception as exc:
                log.debug("pressure listener failed: %r", exc)

    def _check_pressure(self) -> tuple[int, str]:
        """The raw level of a fresh sample (used between cleanup rungs)."""
        with self._sample_lock:
            sample = self._sampler.take(profile=False)
            rank, _ = self.detector.assess(sample)
        return rank, LEVELS[rank]

    # -- listeners ---------------------------------------------------------------------
    def on_sample(self, fn: Callable[[Sample, PressureState], None]) -> None:
        """Call ``fn(sample, state)`` on the monitor thread after every tick."""
        self._sample_listeners.append(fn)

    def on_pressure_change(self, fn: Callable[[PressureState, PressureState], None]) -> None:
        """Call ``fn(previous, current)`` when the committed pressure level changes."""
        self._pressure_listeners.append(fn)

    def on_cleanup(self, fn: Callable[[CleanupResult], None]) -> None:
        """Call ``fn(result)`` after each cleanup request (performed or skipped)."""
        self.ladder.add_listener(fn)

    # -- reports -----------------------------------------------------------------------
    @property
    def pressure(self) -> PressureState:
        return self.detector.state

    def _fresh(self) -> Sample:
        """The last sample if it is recent, else a new one (when not running)."""
        s = self.last_sample
        if s is not None and self.running and time.monotonic() - s.monotonic <= 2 * self._cfg.sample_interval + 0.5:
            return s
        sample, _ = self.tick(profile=self.last_profile is None and self._cfg.enable_profiling)
        return sample

    def profile(self) -> dict[str, Any]:
        """The current memory state: process, system, cgroup, PSI, heap, children, caches, pressure."""
        s = self._fresh()
        cfg = self._cfg
        deep = self.last_profile
        threshold = cfg.memory_threshold_bytes
        proc = s.process
        sd = s.to_dict()
        return {
            "timestamp": s.time,
            "pid": proc.pid,
            "process": {
                "pid": proc.pid,
                "rss_bytes": proc.rss,
                "uss_bytes": deep.process.uss if deep else None,
                "pss_bytes": deep.process.pss if deep else None,
                "swap_bytes": deep.process.swap if deep else None,
                "profiled_at": deep.time if deep else None,
                "threshold_bytes": threshold,
                "percent_of_threshold": round(100.0 * proc.rss / threshold, 2) if proc.rss else None,
                "threads": proc.threads,
                "fds": proc.fds,
                "cpu_seconds": proc.cpu_seconds,
            },
            "system": sd["system"],
            "cgroup": sd["cgroup"],
            "psi": sd["psi"],
            "python": sd["python"],
            "children": {
                "count": len(s.children),
                "rss_bytes": s.children_rss,
                "zombies": s.zombies,
                "threshold_bytes": cfg.subprocess_threshold_bytes,
            },
            "caches": [dict(c) for c in s.caches],
            "pressure": self.detector.state.to_dict(),
            "monitor": {
                "running": self.running,
                "sample_interval": cfg.sample_interval,
                "ticks": self._ticks,
                "last_error": self.last_error,
            },
            "extra": dict(s.extra),
        }

    def subprocesses(self, *, cmdline: bool = True) -> list[dict[str, Any]]:
        """The descendants of the last sample, with USS/PSS from the last profile tick."""
        s = self._fresh()
        deep = self.last_profile.child_memory if self.last_profile else {}
        out = []
        for c in s.children:
            item: dict[str, Any] = c.to_dict(deep.get(c.pid))
            item["start_time"] = c.start_time(self.proc_root)
            if cmdline:
                item["cmdline"] = _cmdline(self.proc_root, c.pid)
            out.append(item)
        for hook in registry.subprocess_decorators():
            try:
                hook(out)
            except Exception as exc:
                log.debug("subprocess decorator failed: %r", exc)
        return out

    def trends(self, window_seconds: float | None = None) -> dict[str, Any]:
        """Robust trends of RSS, container working set, heap and children, with a projection
        of when each crosses its threshold at the current rate."""
        cfg = self._cfg
        window = window_seconds or cfg.leak_window_seconds
        s = self.last_sample
        h = self.history  # any append moves its write position, even when the ring is full
        memo_key = (cfg, window, None if s is None else s.time, id(h), len(h), h._next)
        memo = self._trends_memo
        if memo is not None and memo[0] == memo_key:  # no new sample since: same answer
            return {k: dict(v) if isinstance(v, dict) else v for k, v in memo[1].items()}
        out: dict[str, Any] = {"window_seconds": window}
        targets: dict[str, tuple[str, float | None, float | None]] = {
            "rss": ("rss", float(cfg.memory_threshold_bytes), s.process.rss if s else None),
            "children_rss": (
                "children_rss",
                float(cfg.subprocess_threshold_bytes),
                float(s.children_rss) if s else None,
            ),
            "heap_blocks": ("heap_blocks", None, float(s.python.allocated_blocks) if s else None),
        }
        if s is not None and s.cgroup is not None and s.cgroup.limit:
            targets["cgroup_working_set"] = (
                "cgroup_working_set",
                s.cgroup.limit * cfg.system_memory_threshold,
                float(s.cgroup.working_set or 0),
            )
        for key, (col, threshold, current) in targets.items():
            # 60 evenly spaced points: Theil-Sen's pairwise work is O(n^2), and 60 points
            # over a 5-minute window (one per 5 s) resolve any trend worth reporting.
            t = self.history.trend(col, window, max_points=60)
            if t is None:
                out[key] = None
                continue
            d: dict[str, Any] = dict(t.to_dict())
            d["threshold"] = threshold
            d["current"] = current
            eta = t.seconds_until(threshold, current) if threshold is not None and current is not None else None
            d["seconds_to_threshold"] = None if eta is None else round(eta, 1)
            d["projected_at"] = None if eta is None else time.time() + eta
            out[key] = d
        self._trends_memo = (memo_key, out)
        return {k: dict(v) if isinstance(v, dict) else v for k, v in out.items()}

    def overhead(self) -> dict[str, Any]:
        """What the monitor costs: CPU, time per tick, and the memory it holds."""
        import statistics  # only here: it pulls in decimal and fractions

        ticks = list(self._tick_times)
        wall = (time.time() - self._started_at) if self._started_at and self.running else None
        qs = statistics.quantiles(ticks, n=100) if len(ticks) >= 2 else None
        return {
            "ticks": self._ticks,
            "errors": self._errors,
            "last_error": self.last_error,
            "monitor_cpu_seconds": round(self._cpu_seconds, 6),
            "monitor_cpu_percent": round(100.0 * self._cpu_seconds / wall, 4) if wall else None,
            "tick_seconds_median": statistics.median(ticks) if ticks else None,
            "tick_seconds_p99": qs[98] if qs else None,
            "tick_seconds_last": ticks[-1] if ticks else None,
            "history_bytes": self.history.memory_bytes(),
            "memory_budget_bytes": int(self._cfg.self_memory_budget_mb * 1024 * 1024),
            "memory_bytes": self._own_memory(),
            "open_fds": self._sampler.walker.open_fds + 32,
            "collector_errors": dict(self._sampler.collector_errors),
        }

    def _own_memory(self) -> int:
        """An accounting of the monitor's own structures (the ring dominates)."""
        import sys

        size = self.history.memory_bytes()
        size += sum(sys.getsizeof(e) for e in self.events)
        size += sys.getsizeof(self._tick_times) + 24 * len(self._tick_times)
        for s in (self.last_sample, self.last_profile):
            if s is not None:
                size += 200 * (len(s.children) + 10)
        return size

    def status(self) -> dict[str, Any]:
        """A short summary: pressure level, RSS against the threshold, monitor state."""
        s = self._fresh()
        st = self.detector.state
        last = self.ladder.last_result
        return {
            "status": st.level,
            "pressure_detected": st.level != "ok",
            "pid": s.process.pid,
            "rss_bytes": s.process.rss,
            "threshold_bytes": self._cfg.memory_threshold_bytes,
            "system_percent": s.system.percent if s.system else None,
            "cgroup_usage_ratio": round(s.cgroup.usage_ratio, 4)
            if s.cgroup and s.cgroup.usage_ratio is not None
            else None,
            "children": len(s.children),
            "zombies": s.zombies,
            "reasons": [dict(r) for r in st.reasons],
            "monitor_running": self.running,
            "auto_cleanup": self._cfg.enable_auto_cleanup,
            "last_cleanup": last.to_dict() if last else None,
            "cleanup_retry_after_seconds": round(self.ladder.retry_after(), 3),
            "timestamp": s.time,
        }

    def diagnostics(self) -> dict[str, Any]:
        """Everything: profile, config (secrets redacted), subprocesses, trends, pressure
        events, cleanup history and the monitor's own overhead, plus registered sections."""
        report: dict[str, Any] = {
            "profile": self.profile(),
            "config": self._cfg.to_dict(),
            "subprocesses": self.subprocesses(),
            "trends": self.trends(),
            "pressure_events": list(self.events),
            "cleanup": {
                "last": self.ladder.last_result.to_dict() if self.ladder.last_result else None,
                "runs": dict(self.ladder.runs),
                "retry_after_seconds": round(self.ladder.retry_after(), 3),
                "actions": [
                    {"name": a.name, "order": a.order, "emergency_only": a.emergency_only}
                    for a in registry.cleanup_actions()
                ],
            },
            "history": {
                "samples": len(self.history),
                "capacity": self.history.capacity,
                "store": self.store.path if self.store else None,
                "store_mode": self.store.mode if self.store else "memory",
                "store_bytes": self.store.size_bytes() if self.store else None,
                "store_error": self.store.last_error if self.store else None,
            },
            "overhead": self.overhead(),
        }
        for name, fn in registry.sections().items():
            try:
                report[name] = fn(self)
            except Exception as exc:
                report[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        return report

    def cleanup(self, force: bool = False, dry_run: bool | None = None) -> dict[str, Any]:
        """Run the cleanup ladder now (respecting the cooldown unless ``force``)."""
        level = self.detector.state.level
        return self.ladder.run(force=force, dry_run=dry_run, reason="manual", level=level).to_dict()

    def history_rows(
        self, *, last: int | None = None, since: float | None = None, columns: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Recent history rows (see :data:`memdiag.history.COLUMNS`), oldest first."""
        return self.history.rows(last=last, since=since, columns=columns)

    # -- async helpers -----------------------------------------------------------------
    # These run the blocking call in a worker thread, so an event loop is never blocked.
    async def aprofile(self) -> dict[str, Any]:
        import asyncio

        return await asyncio.to_thread(self.profile)

    async def adiagnostics(self) -> dict[str, Any]:
        import asyncio

        return await asyncio.to_thread(self.diagnostics)

    async def astatus(self) -> dict[str, Any]:
        import asyncio

        return await asyncio.to_thread(self.status)

    async def acleanup(self, force: bool = False, dry_run: bool | None = None) -> dict[str, Any]:
        import asyncio

        return await asyncio.to_thread(self.cleanup, force, dry_run)

    # -- fork --------------------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        was_running = self._thread is not None
        # Locks may have been held by the parent's threads at fork time: replace them.
        self._cfg_lock = threading.Lock()
        self._sample_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = None
        self.http_server = None  # the parent's socket; never serve it from the child
        try:
            self._sampler.reset_after_fork()
        except Exception:
            pass
        self._init_state()
        if was_running:
            self.start()


_INSTANCES: weakref.WeakSet[MemoryDiagnostics] = weakref.WeakSet()
# The parts below the service (leak detection) reach the shared instance through this.
registry.set_monitor_provider(MemoryDiagnostics.get_instance)
# Kept here for callers of earlier versions; it lives in the registry now.
add_subprocess_decorator = registry.add_subprocess_decorator


def _store_settings(cfg: MemoryConfig) -> tuple[Any, ...]:
    return (history_path(cfg), cfg.history_db_interval, cfg.history_retention_days, cfg.history_max_mb)


def _open_store(cfg: MemoryConfig) -> HistoryStore | None:
    """The history file ``cfg`` asks for (opened lazily, on the first write), or None."""
    path = history_path(cfg)
    if path is None:
        return None
    return HistoryStore(
        path, cfg.history_db_interval, cfg.history_retention_days, max_bytes=int(cfg.history_max_mb * MIB)
    )


def _after_fork_in_child() -> None:
    for inst in list(_INSTANCES):
        try:
            inst._after_fork_in_child()
        except Exception as exc:  # never break the host's fork
            log.debug("memdiag after-fork reset failed: %r", exc)


def _at_exit() -> None:
    """Stop every monitor at interpreter exit: the API server closes (and its runtime entry
    is removed, so the CLI does not list a dead service) and stored history is flushed."""
    for inst in list(_INSTANCES):
        if inst.pid != os.getpid():
            continue
        try:
            inst.stop(timeout=1.0)
        except Exception as exc:  # never break the host's shutdown
            log.debug("memdiag shutdown failed: %r", exc)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)


def _cmdline(proc_root: str, pid: int) -> list[str] | None:
    from .probes._io import read_bytes

    data = read_bytes(f"{proc_root}/{pid}/cmdline", 65536)
    if data is None:
        return None
    args = [a.decode("utf-8", "replace") for a in data.split(b"\0") if a]
    return redact_argv(args)
