"""Reports: the documents every surface shows, built from a monitor's state.

Each function takes the state it reports on (samples, configuration, pressure state,
cleanup ladder, history) and returns plain, JSON-serialisable data. None of them takes
a sample or changes anything, so the Python API (:class:`~memdiag.service.MemoryDiagnostics`),
the HTTP API and ``/metrics``, the dashboard and the CLI (inside a service through the API;
outside one, ``memdiag profile --pid``, from a sample of its own) all show the same facts
under the same keys. :func:`subprocesses` alone reads ``/proc`` (each child's start
time and command line, which samples do not carry).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

from . import registry
from .pressure import LEVELS, PressureDetector
from .probes.process import read_cmdline

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

    from .cleanup import CleanupLadder
    from .config import MemoryConfig
    from .history import History, HistoryStore
    from .monitor import LoopStats, Monitor
    from .pressure import PressureState
    from .sample import Sample

# The outside views of the command line (``memdiag profile --pid N``) use profile() and
# subprocesses() alone: history, statistics and logging are imported where they are used.

__all__ = [
    "cleanup_summary",
    "diagnostics",
    "history_summary",
    "instant_pressure",
    "monitor_section",
    "overhead",
    "own_memory",
    "profile",
    "status",
    "subprocesses",
    "trends",
]

# 60 evenly spaced points: Theil-Sen's pairwise work is O(n^2), and 60 points over a
# 5-minute window (one per 5 s) resolve any trend worth reporting.
TREND_POINTS = 60


def profile(
    sample: Sample,
    config: MemoryConfig,
    pressure: dict[str, Any],
    *,
    deep: Sample | None = None,
    monitor: dict[str, Any] | None = None,
    agent: bool = True,
) -> dict[str, Any]:
    """The memory state: process, system, cgroup, PSI, heap, children, caches, pressure.

    Args:
        sample: the latest sample.
        config: thresholds are reported beside the figures.
        pressure: the pressure document (:meth:`PressureState.to_dict` or
            :func:`instant_pressure`).
        deep: the last profile tick's sample (USS/PSS/swap); ``None`` before one.
        monitor: the monitor's own state (:func:`monitor_section`), when there is one.
        agent: the sample was taken inside the process: it includes the Python heap,
            caches and collectors' extras (an outside view has none of them).
    """
    threshold = config.memory_threshold_bytes
    proc = sample.process
    sd = sample.to_dict()
    doc: dict[str, Any] = {
        "timestamp": sample.time,
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
    }
    if agent:
        doc["python"] = sd["python"]
    doc["children"] = {
        "count": len(sample.children),
        "rss_bytes": sample.children_rss,
        "zombies": sample.zombies,
        "threshold_bytes": config.subprocess_threshold_bytes,
    }
    if agent:
        doc["caches"] = [dict(c) for c in sample.caches]
    doc["pressure"] = pressure
    if monitor is not None:
        doc["monitor"] = monitor
    if agent:
        doc["extra"] = dict(sample.extra)
    return doc


def monitor_section(running: bool, config: MemoryConfig, stats: LoopStats) -> dict[str, Any]:
    """The monitor's own state, as :func:`profile` shows it."""
    return {
        "running": running,
        "sample_interval": config.sample_interval,
        "ticks": stats.ticks,
        "last_error": stats.last_error,
    }


def instant_pressure(sample: Sample, config: MemoryConfig) -> dict[str, Any]:
    """Pressure judged from this one sample alone (no history, no sustain times)."""
    rank, signals = PressureDetector(config).assess(sample)
    return {
        "level": LEVELS[rank],
        "raw_level": LEVELS[rank],
        "instant": True,
        "reasons": [s for s in signals if s["level"] != "ok"],
        "signals": signals,
    }


def status(
    sample: Sample, config: MemoryConfig, pressure: PressureState, ladder: CleanupLadder, *, running: bool
) -> dict[str, Any]:
    """A short summary: pressure level, RSS against the threshold, monitor state."""
    last = ladder.last_result
    cg = sample.cgroup
    return {
        "status": pressure.level,
        "pressure_detected": pressure.level != "ok",
        "pid": sample.process.pid,
        "rss_bytes": sample.process.rss,
        "threshold_bytes": config.memory_threshold_bytes,
        "system_percent": sample.system.percent if sample.system else None,
        "cgroup_usage_ratio": round(cg.usage_ratio, 4) if cg and cg.usage_ratio is not None else None,
        "children": len(sample.children),
        "zombies": sample.zombies,
        "reasons": [dict(r) for r in pressure.reasons],
        "monitor_running": running,
        "auto_cleanup": config.enable_auto_cleanup,
        "last_cleanup": last.to_dict() if last else None,
        "cleanup_retry_after_seconds": round(ladder.retry_after(), 3),
        "timestamp": sample.time,
    }


def subprocesses(
    sample: Sample,
    deep_memory: dict[int, dict[str, int]],
    *,
    proc_root: str = "/proc",
    cmdline: bool = True,
    decorate: bool = True,
) -> list[dict[str, Any]]:
    """One row per descendant of ``sample``, with USS/PSS from ``deep_memory`` (pid ->
    smaps figures of the last profile tick), its start time and (redacted) command line.

    ``decorate`` lets the registered parts add their fields (owned, role, Node.js heap:
    :func:`memdiag.registry.add_subprocess_decorator`); an outside view has none.
    """
    from .redact import redact_argv

    out = []
    for c in sample.children:
        item: dict[str, Any] = c.to_dict(deep_memory.get(c.pid))
        item["start_time"] = c.start_time(proc_root)
        if cmdline:
            args = read_cmdline(c.pid, proc_root)
            item["cmdline"] = None if args is None else redact_argv(args)
        out.append(item)
    if decorate:
        for hook in registry.subprocess_decorators():
            try:
                hook(out)
            except Exception as exc:  # a part's bug must not cost the report
                from ._logging import get_logger

                get_logger("memdiag").debug("subprocess decorator failed: %r", exc)
    return out


def trends(history: History, sample: Sample | None, config: MemoryConfig, window: float) -> dict[str, Any]:
    """Robust trends of RSS, container working set, heap and children over ``window``
    seconds of ``history``, with a projection of when each crosses its threshold."""
    out: dict[str, Any] = {"window_seconds": window}
    s = sample
    targets: dict[str, tuple[float | None, float | None]] = {
        "rss": (float(config.memory_threshold_bytes), s.process.rss if s else None),
        "children_rss": (float(config.subprocess_threshold_bytes), float(s.children_rss) if s else None),
        "heap_blocks": (None, float(s.python.allocated_blocks) if s else None),
    }
    if s is not None and s.cgroup is not None and s.cgroup.limit:
        targets["cgroup_working_set"] = (
            s.cgroup.limit * config.system_memory_threshold,
            float(s.cgroup.working_set or 0),
        )
    for column, (threshold, current) in targets.items():
        t = history.trend(column, window, max_points=TREND_POINTS)
        if t is None:
            out[column] = None
            continue
        d: dict[str, Any] = dict(t.to_dict())
        d["threshold"] = threshold
        d["current"] = current
        eta = t.seconds_until(threshold, current) if threshold is not None and current is not None else None
        d["seconds_to_threshold"] = None if eta is None else round(eta, 1)
        d["projected_at"] = None if eta is None else time.time() + eta
        out[column] = d
    return out


def overhead(
    stats: LoopStats,
    history: History,
    *,
    running: bool,
    memory_bytes: int,
    memory_budget_bytes: int,
    open_fds: int,
    collector_errors: dict[str, Any],
    components: dict[str, dict[str, Any]] | None = None,
    threads_cpu: dict[str, float] | None = None,
) -> dict[str, Any]:
    """What the monitor costs: CPU, time per tick, and the memory it holds.

    ``threads_cpu``: CPU seconds of each of memdiag's running threads (the monitor, the heap
    profile's snapshots and container scans, the HTTP and control servers, ...)."""
    from .stats import median, percentile

    ticks = list(stats.tick_seconds)
    wall = (time.time() - stats.started_at) if stats.started_at and running else None
    return {
        "ticks": stats.ticks,
        "errors": stats.errors,
        "last_error": stats.last_error,
        "monitor_cpu_seconds": round(stats.cpu_seconds, 6),
        "monitor_cpu_percent": round(100.0 * stats.cpu_seconds / wall, 4) if wall else None,
        "tick_seconds_median": median(ticks),
        "tick_seconds_p99": percentile(ticks, 99) if len(ticks) >= 2 else None,
        "tick_seconds_last": ticks[-1] if ticks else None,
        "history_bytes": history.memory_bytes(),
        "memory_budget_bytes": memory_budget_bytes,
        "memory_bytes": memory_bytes,
        "open_fds": open_fds,
        "collector_errors": dict(collector_errors),
        "own_cost": own_cost(components or {}, stats, wall, threads_cpu),
    }


def own_memory(history: History, events: Iterable[Any], stats: LoopStats, samples: Iterable[Sample | None]) -> int:
    """An accounting of a monitor's own structures (the history ring dominates)."""
    return sum(c["bytes"] for c in own_components(history, list(events), stats, samples).values())


EVENT_BYTES = 1024  # an upper estimate of one pressure event dict with its values
SAMPLE_BYTES_PER_PROCESS = 200  # a Sample's share per process row (children + 10 fixed rows)


HEAP_PROFILER_BOUND = (
    "the sampler's tables, filled from the front and counted by the pages written: frames (<= 65536), "
    "stacks (<= 12287), live sampled blocks (<= 65536; one per heap_sample_interval of live heap) and "
    "small blocks rerouted to malloc (<= 16384 x 529 B), and the frame and stack tuples snapshots reuse"
)

LEAK_SERIES_BOUND = (
    "live-heap lines (300 x the points of the last 330 s, at most 256) and followed "
    "containers (256 x the lengths of the last 330 s, at most 64)"
)


def own_components(
    history: History,
    events: Any,
    stats: LoopStats,
    samples: Iterable[Sample | None],
    *,
    store_open: bool = False,
    heap_profiler: tuple[int, int | None] | None = None,
    leak_series: tuple[int, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """memdiag's own memory, per bounded structure: ``bytes`` now, ``bound_bytes`` at most
    (``None``: bounded by a count, not a byte figure) and ``bound`` in words."""
    ticks = stats.tick_seconds
    tick_cap = ticks.maxlen or len(ticks)
    ev_cap = getattr(events, "maxlen", None) or len(events)
    rows = sum(len(s.children) + 10 for s in samples if s is not None)
    out: dict[str, dict[str, Any]] = {
        "history_ring": {
            "bytes": history.memory_bytes(),
            "bound_bytes": history.memory_bytes(),
            "bound": f"preallocated: history_size {history.capacity} samples x 8 B per column",
        },
        "pressure_events": {
            "bytes": sum(sys.getsizeof(e) for e in events),
            "bound_bytes": ev_cap * EVENT_BYTES,
            "bound": f"the last {ev_cap} events",
        },
        "tick_times": {
            "bytes": sys.getsizeof(ticks) + 24 * len(ticks),
            "bound_bytes": sys.getsizeof(ticks) + 24 * tick_cap,
            "bound": f"the last {tick_cap} tick durations",
        },
        "latest_samples": {
            "bytes": SAMPLE_BYTES_PER_PROCESS * rows,
            "bound_bytes": None,
            "bound": "the latest sample and profile only: 200 B per process in the tree",
        },
    }
    if store_open:
        from .history import STORE_CACHE_BYTES

        out["history_store_cache"] = {
            "bytes": STORE_CACHE_BYTES,  # its ceiling: SQLite does not say how full it is
            "bound_bytes": STORE_CACHE_BYTES,
            "bound": f"SQLite page cache, at most {STORE_CACHE_BYTES // 1024} KiB (the file itself: history_max_mb)",
        }
    if heap_profiler is not None:  # (bytes, bound): the native tables' ceiling, None for tracemalloc
        out["heap_profiler"] = {
            "bytes": heap_profiler[0],
            "bound_bytes": heap_profiler[1],
            "bound": HEAP_PROFILER_BOUND,
        }
    if leak_series is not None:  # (bytes, bound) of leak detection's own series
        out["leak_series"] = {
            "bytes": leak_series[0],
            "bound_bytes": leak_series[1],
            "bound": LEAK_SERIES_BOUND,
        }
    return out


def own_cost(
    components: dict[str, dict[str, Any]],
    stats: LoopStats,
    wall: float | None,
    threads_cpu: dict[str, float] | None = None,
) -> dict[str, Any]:
    """What memdiag costs the process: its structures (adding up to ``memory_bytes``), their
    bounds, and the monitor thread's CPU. Code and imports are not visible from inside:
    ``benchmarks/bench_footprint.py`` measures the whole process delta (docs/benchmarks.md)."""
    bounds = [c["bound_bytes"] for c in components.values()]
    cpu = max(stats.cpu_seconds, sum((threads_cpu or {}).values()))
    return {
        "memory_bytes": sum(c["bytes"] for c in components.values()),
        "bound_bytes": sum(b for b in bounds if b is not None),
        "unbounded_in_bytes": sorted(n for n, c in components.items() if c["bound_bytes"] is None),
        "components": components,
        # every memdiag thread's CPU (the monitor's alone when the others cannot be read)
        "cpu_seconds": round(cpu, 6),
        "cpu_percent": round(100.0 * cpu / wall, 4) if wall else None,
        "cpu_by_thread": {k: round(v, 3) for k, v in sorted((threads_cpu or {}).items())},
        "not_counted": (
            "code and imported modules (benchmarks/bench_footprint.py); the allocation and audit "
            "hooks' time on the application's own threads (benchmarks/bench_heapprof.py)"
        ),
    }


def cleanup_summary(ladder: CleanupLadder) -> dict[str, Any]:
    """The ladder: its last result, run counts, cooldown and rungs."""
    return {
        "last": ladder.last_result.to_dict() if ladder.last_result else None,
        "runs": dict(ladder.runs),
        "retry_after_seconds": round(ladder.retry_after(), 3),
        "actions": [
            {"name": a.name, "order": a.order, "emergency_only": a.emergency_only} for a in registry.cleanup_actions()
        ],
    }


def history_summary(history: History, store: HistoryStore | None) -> dict[str, Any]:
    """How much history is kept, and where it is stored."""
    return {
        "samples": len(history),
        "capacity": history.capacity,
        "store": store.path if store else None,
        "store_mode": store.mode if store else "memory",
        "store_bytes": store.size_bytes() if store else None,
        "store_error": store.last_error if store else None,
    }


def diagnostics(monitor: Monitor) -> dict[str, Any]:
    """Everything: profile, config (secrets redacted), subprocesses, trends, pressure
    events, cleanup history and the monitor's own overhead, plus registered sections
    (each ``fn(monitor)``; one that raises shows as ``{"error": ...}``)."""
    report: dict[str, Any] = {
        "profile": monitor.profile(),
        "config": monitor.config.to_dict(),
        "subprocesses": monitor.subprocesses(),
        "trends": monitor.trends(),
        "pressure_events": list(monitor.events),
        "cleanup": cleanup_summary(monitor.ladder),
        "history": history_summary(monitor.history, monitor.store),
        "overhead": monitor.overhead(),
    }
    for name, fn in registry.sections().items():
        try:
            report[name] = fn(monitor)
        except Exception as exc:
            report[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return report
