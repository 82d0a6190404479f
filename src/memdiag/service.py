"""MemoryDiagnostics: the per-process monitor that runs the pipeline.

One shared instance per process (:meth:`MemoryDiagnostics.get_instance`, or
``memdiag.start()``) samples on a daemon thread every ``sample_interval``, runs the
heavier profile every ``profile_interval``, keeps a bounded history, detects pressure,
and runs the cleanup ladder automatically when enabled. The thread never touches an
event loop, so plain, threaded and asyncio services are served alike; the ``a*``
methods run the blocking calls in a worker thread for async callers.

Fork safety: after ``fork()`` the child gets a fresh monitor (its own thread, history
and descriptors) if the parent's was running; the API server is not inherited.

The service wires and runs: the documents come from :mod:`memdiag.reports`, a new
configuration's consequences from :mod:`memdiag.configure`, the parts (rungs, process
governance, leak detection) are turned on by :mod:`memdiag.wiring`.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from . import config as _config_mod
from . import configure as _configure
from . import registry, reports, wiring
from ._logging import get_logger
from .cleanup import CleanupLadder, CleanupResult
from .config import MemoryConfig, load_config
from .history import History, HistoryStore
from .monitor import LoopStats
from .pressure import LEVELS, RANK, PressureDetector, PressureState
from .probes.process import own_threads_cpu
from .probes.python import yield_gil
from .sample import Sample, Sampler
from .units import MIB

__all__ = ["MemoryDiagnostics", "add_subprocess_decorator"]

log = get_logger("memdiag")

# The settings the loop's timing reads: a change wakes the loop to tick now. Others take
# effect at the next tick (within sample_interval): a configure request no longer adds a
# tick of its own (issue 16: with one a second under load, ticks doubled).
_LOOP_FIELDS = ("sample_interval", "profile_interval", "enable_profiling")


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
        self.http_server: Any = None
        self._init_state()
        wiring.install_parts()
        _INSTANCES.add(self)

    def _init_state(self) -> None:
        """(Re)create everything that belongs to one process."""
        self.pid = os.getpid()
        self._sampler = Sampler(None, self.proc_root, self.cgroup_root)
        self.detector = PressureDetector(self._cfg)
        self.history = History(self._cfg.history_size)
        self.store: HistoryStore | None = _configure.open_store(self._cfg)
        self.ladder = CleanupLadder(lambda: self._cfg, self._check_pressure, "self")
        self.ladder.add_listener(self._record_cleanup)
        self.ladder.hints = lambda: wiring.growth_hints(self)
        self.events: deque[dict[str, Any]] = deque(maxlen=100)
        self.last_sample: Sample | None = None
        self.last_profile: Sample | None = None
        self._last_profile_at = 0.0
        self.stats = LoopStats()
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
        """Stop and forget the shared instance (tests, or a full reconfiguration), releasing
        what it holds: a forgotten instance kept its history file open, and its descriptors
        stayed marked as memdiag's after they were gone."""
        with cls._instance_lock:
            inst, cls._instance = cls._instance, None
        if inst is not None:
            inst.close()

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
            new = _configure.updated(self._cfg, merged, persist=persist)
            old, self._cfg = self._cfg, new
            self.detector.reconfigure(new)
            self.history = _configure.history_for(old, new, self.history)
            self.store = _configure.store_for(old, new, self.store)
            if self is MemoryDiagnostics._instance:
                _config_mod._set_active(new)
        if any(getattr(old, f) != getattr(new, f) for f in _LOOP_FIELDS):
            self._wake.set()  # a new interval takes effect now, not after the old one
        return new

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def should_be_running(self) -> bool:
        """Started and not stopped since: if not :attr:`running` too, the thread died."""
        return self.stats.started_at is not None and not self._stop.is_set()

    def start(self) -> MemoryDiagnostics:
        """Start the background monitor (idempotent). Returns ``self``."""
        if self.running:
            return self
        self._stop.clear()
        self.stats.started_at = time.time()
        if self._cfg.subreaper:
            wiring.become_subreaper()
        t = threading.Thread(target=self._loop, name="memdiag-monitor", daemon=True)
        self._thread = t
        t.start()
        if self is MemoryDiagnostics._instance:
            _config_mod._set_active(self._cfg)
        if self._cfg.leak_detection:
            wiring.attach_leaks(self, on_alert=self._record_leak)
        wiring.run_lifecycle(self, started=True)
        return self

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
        """Stop the monitor and the API server, flush stored history and release the
        descriptors kept open between ticks (idempotent; a later sample or history read
        opens what it needs again)."""
        self._stop.set()
        self._wake.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        still_sampling = t is not None and t.is_alive()
        self._thread = None
        wiring.detach_leaks(self, on_alert=self._record_leak)
        wiring.run_lifecycle(self, started=False)
        server, self.http_server = self.http_server, None
        if server is not None:
            try:
                server.close()
            except Exception as exc:
                log.debug("closing the API server failed: %r", exc)
        if self.store is not None:
            self.store.close()  # flushed; reconnects on the next write or read
        if not still_sampling:  # its readers are the monitor thread's while it runs
            self._sampler.close()

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

    # -- the loop ----------------------------------------------------------------------
    def _loop(self) -> None:
        cpu_start = time.thread_time()
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # never die silently: count, remember, go on
                st = self.stats
                st.errors += 1
                st.last_error = f"{type(exc).__name__}: {exc}"[:500]
                if st.errors <= 3 or st.errors % 100 == 0:
                    log.warning("memdiag monitor tick failed (%d so far): %s", st.errors, st.last_error)
            self.stats.cpu_seconds = time.thread_time() - cpu_start
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
        yield_gil()  # a request waiting for the GIL runs between the tick's steps (bench_gil.py)
        self.history.append(sample, state.level)
        if self.store is not None:
            self.store.add(sample, state.level)
        self.stats.ticks += 1
        if previous is not None:
            self._on_transition(previous, state)
        yield_gil()
        self._notify(sample, state)
        if self.ladder.auto_due(state.level, state.raw_level):
            self.ladder.run(reason="auto", level=state.level)
        self.stats.tick_seconds.append(time.perf_counter() - t0)
        return sample, state

    def _notify(self, sample: Sample, state: PressureState) -> None:
        """This monitor's listeners, then every monitor's observers; their errors stay theirs."""
        for fn in list(self._sample_listeners):
            try:
                fn(sample, state)
            except Exception as exc:
                log.debug("sample listener failed: %r", exc)
            yield_gil()
        for name, observe in registry.observers().items():
            try:
                observe(sample)
            except Exception as exc:
                log.debug("sample observer %s failed: %r", name, exc)
            yield_gil()

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
        log_fn = log.warning if RANK[state.level] > RANK[previous.level] else log.info
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

    # The counters of the loop, by their earlier names.
    @property
    def _ticks(self) -> int:
        return self.stats.ticks

    @property
    def last_error(self) -> str | None:
        return self.stats.last_error

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
        monitor = reports.monitor_section(self.running, cfg, self.stats)
        return reports.profile(s, cfg, self.detector.state.to_dict(), deep=self.last_profile, monitor=monitor)

    def subprocesses(self, *, cmdline: bool = True) -> list[dict[str, Any]]:
        """The descendants of the last sample, with USS/PSS from the last profile tick."""
        s = self._fresh()
        deep = self.last_profile.child_memory if self.last_profile else {}
        return reports.subprocesses(s, deep, proc_root=self.proc_root, cmdline=cmdline)

    def trends(self, window_seconds: float | None = None) -> dict[str, Any]:
        """Robust trends of RSS, container working set, heap and children, with a projection
        of when each crosses its threshold at the current rate."""
        cfg = self._cfg
        window = window_seconds or cfg.leak_window_seconds
        s = self.last_sample
        h = self.history
        # Theil-Sen over a window is the costliest report, and pollers (the dashboard's
        # diagnostics + history, every 2 s) ask for it repeatedly: same sample, same answer.
        memo_key = (cfg, window, None if s is None else s.time, id(h), h.appended)
        memo = self._trends_memo
        if memo is None or memo[0] != memo_key:
            memo = self._trends_memo = (memo_key, reports.trends(h, s, cfg, window))
        return {k: dict(v) if isinstance(v, dict) else v for k, v in memo[1].items()}

    def overhead(self) -> dict[str, Any]:
        """What the monitor costs: CPU, time per tick, and the memory it holds."""
        parts = reports.own_components(
            self.history,
            self.events,
            self.stats,
            (self.last_sample, self.last_profile),
            store_open=self.store is not None,
            heap_profiler=_heap_profiler_cost(self),
            leak_series=_leak_series_cost(self),
        )
        own = sum(c["bytes"] for c in parts.values())
        return reports.overhead(
            self.stats,
            self.history,
            running=self.running,
            memory_bytes=own,
            memory_budget_bytes=int(self._cfg.self_memory_budget_mb * MIB),
            open_fds=self._sampler.walker.open_fds + 32,
            collector_errors=self._sampler.collector_errors,
            components=parts,
            threads_cpu=own_threads_cpu(),
        )

    def status(self) -> dict[str, Any]:
        """A short summary: pressure level, RSS against the threshold, monitor state."""
        s = self._fresh()
        return reports.status(s, self._cfg, self.detector.state, self.ladder, running=self.running)

    def diagnostics(self) -> dict[str, Any]:
        """Everything: profile, config (secrets redacted), subprocesses, trends, pressure
        events, cleanup history and the monitor's own overhead, plus registered sections."""
        return reports.diagnostics(self)

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


def _after_fork_in_child() -> None:
    # Caches first: a monitor restarted below samples them at once, and their locks are
    # still the ones held across the fork until memdiag.cache resets them (its own
    # handler may run after this one: handlers run in the order they were registered).
    cache_core = sys.modules.get("memdiag.cache.core")
    if cache_core is not None:
        try:
            cache_core._after_fork_child()
        except Exception as exc:  # never break the host's fork
            log.debug("memdiag cache after-fork reset failed: %r", exc)
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


def _leak_series_cost(diag: Any) -> tuple[int, int] | None:
    """Leak detection's line series and followed containers, when it runs (read, never
    imported)."""
    leaks = sys.modules.get("memdiag.leaks")
    det = getattr(leaks, "_detectors", {}).get(diag) if leaks is not None else None
    live = getattr(det, "live", None)
    return live.cost() if live is not None and hasattr(live, "cost") else None


def _heap_profiler_cost(diag: Any) -> tuple[int, int | None] | None:
    """The sampling heap profiler's own bytes and their bound, when leak detection runs it
    (read, never imported: a monitor without leak detection does not load it)."""
    leaks = sys.modules.get("memdiag.leaks")
    det = getattr(leaks, "_detectors", {}).get(diag) if leaks is not None else None
    prof = getattr(getattr(getattr(det, "live", None), "heap", None), "last", None)
    if prof is None:
        return None
    return int(prof.overhead_bytes), getattr(prof, "bound_bytes", None)
