"""The metric families memdiag exports, as plain data: one source for every exporter.

:func:`memdiag_families` reads a monitor's latest sample, pressure, trends, cleanup ladder,
caches, leak suspects and history store, and returns :class:`Family` objects (name, type,
help, samples with labels). The standalone ``/metrics`` text, the prometheus_client
``Collector`` and the OpenTelemetry instruments are all built from them, so the three
export the same names and values. Each family has one fixed set of label names, and
labels with values from the outside (cache names, leak sites) are bounded: at most
:data:`MAX_CACHES` caches and :data:`MAX_SUSPECTS` leak suspects, the worst first.

:func:`process_families` is the ``process_*``/``python_*`` set prometheus_client's default
collectors export, from the monitor's sample (no ``/proc`` read here); exporters add it
only when prometheus_client is not there to provide it.
"""

from __future__ import annotations

import gc
import resource
import sys
from collections.abc import Iterable
from typing import Any

from .. import registry
from .._record import field, mutable_record
from .._version import __version__
from ..pressure import RANK

__all__ = [
    "MAX_CACHES",
    "MAX_SUSPECTS",
    "Family",
    "all_families",
    "memdiag_families",
    "process_families",
    "render_text",
]

#: Caches exported by name (the largest first); the rest are summed under ``cache="other"``.
MAX_CACHES = 20
#: Leak suspects exported with their kind and site (the fastest-growing first).
MAX_SUSPECTS = 10
_SITE_CHARS = 120
LEVEL_RANK = RANK  # the one level ordering (memdiag.pressure)

Labels = dict[str, str]


@mutable_record
class Family:
    """One metric family: ``kind`` is ``"gauge"`` or ``"counter"`` (counters end in ``_total``)."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def add(self, value: float | int | None, *label_values: str) -> None:
        """Add one sample; ``None`` (unknown) is left out rather than reported as zero."""
        if value is None:
            return
        if len(label_values) != len(self.labels):
            raise ValueError(f"{self.name}: labels {self.labels} got {label_values}")
        self.samples.append((tuple(str(v) for v in label_values), float(value)))


class _Families:
    def __init__(self) -> None:
        self.items: list[Family] = []

    def new(self, name: str, kind: str, help_text: str, labels: Iterable[str] = ()) -> Family:
        fam = Family(name, kind, help_text, tuple(labels))
        self.items.append(fam)
        return fam

    def one(self, name: str, kind: str, help_text: str, value: float | int | None) -> None:
        self.new(name, kind, help_text).add(value)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _pressure(out: _Families, diag: Any) -> None:
    state = diag.pressure
    out.one(
        "memdiag_pressure_level",
        "gauge",
        "Committed memory pressure level (0 ok, 1 warning, 2 critical).",
        LEVEL_RANK.get(state.level, 2),
    )
    fam = out.new("memdiag_pressure_state", "gauge", "1 for the committed pressure level, 0 for the others.", ["level"])
    for name in LEVEL_RANK:
        fam.add(int(name == state.level), name)
    out.one(
        "memdiag_pressure_raw_level",
        "gauge",
        "Memory pressure level of the latest sample, before hysteresis.",
        LEVEL_RANK.get(state.raw_level, 2),
    )
    ratios: dict[str, float] = {}
    levels: dict[str, int] = {}
    for s in state.signals:
        name = str(s.get("signal"))
        critical, value = _num(s.get("critical")), _num(s.get("value"))
        if critical and value is not None:
            ratios[name] = max(ratios.get(name, 0.0), value / critical)
        levels[name] = max(levels.get(name, 0), LEVEL_RANK.get(str(s.get("level")), 0))
    fam = out.new(
        "memdiag_pressure_signal_ratio",
        "gauge",
        "Each pressure signal's value as a share of its critical threshold (1 = critical).",
        ["signal"],
    )
    for name, ratio in sorted(ratios.items()):
        fam.add(round(ratio, 6), name)
    fam = out.new("memdiag_pressure_signal_level", "gauge", "Each pressure signal's level (0, 1, 2).", ["signal"])
    for name, level in sorted(levels.items()):
        fam.add(level, name)


def _memory(out: _Families, diag: Any) -> None:
    cfg = diag.config
    out.one("memdiag_memory_threshold_bytes", "gauge", "Process RSS that counts as critical pressure.", cfg.memory_threshold_bytes)
    out.one(
        "memdiag_subprocess_threshold_bytes",
        "gauge",
        "Children's total RSS that counts as critical pressure.",
        cfg.subprocess_threshold_bytes,
    )
    s, deep = diag.last_sample, diag.last_profile
    p = s.process if s is not None else None
    dp = deep.process if deep is not None else None
    out.one("memdiag_process_rss_bytes", "gauge", "Process RSS at the latest sample.", p and p.rss)
    out.one("memdiag_process_uss_bytes", "gauge", "Process USS at the latest profile tick.", dp and dp.uss)
    out.one("memdiag_process_pss_bytes", "gauge", "Process PSS at the latest profile tick.", dp and dp.pss)
    out.one("memdiag_process_swap_bytes", "gauge", "Process swap at the latest profile tick.", dp and dp.swap)
    out.one("memdiag_process_threads", "gauge", "Threads of the process (memdiag's own not counted).", p and p.threads)
    out.one(
        "memdiag_python_allocated_blocks",
        "gauge",
        "Live pymalloc blocks (sys.getallocatedblocks()).",
        s.python.allocated_blocks if s is not None else None,
    )
    sm = s.system if s is not None else None
    out.one("memdiag_system_memory_total_bytes", "gauge", "System RAM.", sm and sm.total)
    out.one("memdiag_system_memory_available_bytes", "gauge", "System MemAvailable.", sm and sm.available)
    out.one("memdiag_system_swap_total_bytes", "gauge", "System swap.", sm and sm.swap_total)
    out.one("memdiag_system_swap_free_bytes", "gauge", "System free swap.", sm and sm.swap_free)
    _cgroup(out, s.cgroup if s is not None else None)
    _psi(out, s)
    live = len(s.children) - s.zombies if s is not None else None
    out.one("memdiag_children", "gauge", "Live descendant processes.", live)
    out.one("memdiag_children_rss_bytes", "gauge", "Total RSS of live descendants.", s and s.children_rss)
    out.one("memdiag_zombie_processes", "gauge", "Descendants that exited and were not reaped.", s and s.zombies)


def _cgroup(out: _Families, cg: Any) -> None:
    info = out.new("memdiag_cgroup_info", "gauge", "The process's memory cgroup (version).", ["version"])
    if cg is not None:
        info.add(1, str(cg.version))
    out.one("memdiag_cgroup_limit_bytes", "gauge", "Effective cgroup memory limit (absent: unlimited).", cg and cg.limit)
    out.one("memdiag_cgroup_high_bytes", "gauge", "cgroup v2 memory.high (absent: unset).", cg and cg.high)
    out.one("memdiag_cgroup_usage_bytes", "gauge", "cgroup memory usage.", cg and cg.usage)
    out.one("memdiag_cgroup_working_set_bytes", "gauge", "cgroup working set (usage - inactive_file).", cg and cg.working_set)
    out.one("memdiag_cgroup_swap_bytes", "gauge", "cgroup swap usage.", cg and cg.swap)
    fam = out.new(
        "memdiag_cgroup_events_total", "counter", "cgroup memory events (memory.events: oom, oom_kill, high, max).", ["event"]
    )
    for k, v in sorted(cg.events.items() if cg is not None else ()):
        fam.add(v, k)


def _psi(out: _Families, s: Any) -> None:
    avg = out.new(
        "memdiag_psi_memory_avg_percent",
        "gauge",
        "Memory pressure stall information: share of time stalled (%).",
        ["scope", "kind", "window"],
    )
    total = out.new("memdiag_psi_memory_stall_seconds_total", "counter", "Total time stalled on memory.", ["scope", "kind"])
    if s is None:
        return
    cg = s.cgroup
    for scope, psi in (("system", s.psi), ("cgroup", cg.psi if cg is not None else None)):
        if psi is None:
            continue
        for kind in ("some", "full"):
            for window in ("10", "60", "300"):
                avg.add(getattr(psi, f"{kind}_avg{window}"), scope, kind, window)
        total.add(psi.some_total_us / 1e6, scope, "some")
        if psi.full_total_us is not None:
            total.add(psi.full_total_us / 1e6, scope, "full")


def _caches(out: _Families) -> None:
    rows: list[tuple[str, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for cache in registry.caches():
        name = str(getattr(cache, "name", type(cache).__name__))
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:  # two caches with one name would make duplicate series
            name = f"{name}#{seen[name]}"
        try:
            rows.append((name, dict(cache.metrics())))
        except Exception:  # a broken cache is reported by the sampler; skip it here
            continue
    rows.sort(key=lambda r: -(_num(r[1].get("bytes")) or 0.0))
    if len(rows) > MAX_CACHES:  # bounded cardinality: the rest summed as "other"
        rest = rows[MAX_CACHES - 1 :]
        merged: dict[str, Any] = {
            k: sum(_num(m.get(k)) or 0.0 for _, m in rest) for k in ("entries", "bytes", "max_bytes", "hits", "misses")
        }
        merged["fill_ratio"] = merged["bytes"] / merged["max_bytes"] if merged["max_bytes"] else None
        causes: dict[str, float] = {}
        for _, m in rest:
            for cause, n in _evictions(m).items():
                causes[cause] = causes.get(cause, 0.0) + n
        merged["evictions"] = causes
        rows = [*rows[: MAX_CACHES - 1], ("other", merged)]
    for key, name, kind, help_text in (
        ("entries", "memdiag_cache_entries", "gauge", "Entries in the cache."),
        ("bytes", "memdiag_cache_bytes", "gauge", "Bytes the cache accounts for."),
        ("max_bytes", "memdiag_cache_max_bytes", "gauge", "The cache's byte budget."),
        ("fill_ratio", "memdiag_cache_fill_ratio", "gauge", "bytes / max_bytes."),
        ("hits", "memdiag_cache_hits_total", "counter", "Cache hits."),
        ("misses", "memdiag_cache_misses_total", "counter", "Cache misses."),
    ):
        fam = out.new(name, kind, help_text, ["cache"])
        for cache_name, m in rows:
            fam.add(_num(m.get(key)), cache_name)
    fam = out.new(
        "memdiag_cache_evictions_total", "counter", "Entries evicted, by cause (size, ttl, pressure, manual).", ["cache", "cause"]
    )
    for cache_name, m in rows:
        for cause, n in sorted(_evictions(m).items()):
            fam.add(n, cache_name, cause)


def _evictions(m: dict[str, Any]) -> dict[str, float]:
    """``{cause: count}``: SharedPromptCache gives a dict; other caches may give one number."""
    ev = m.get("evictions")
    if isinstance(ev, dict):
        return {str(k): float(v) for k, v in ev.items() if _num(v) is not None}
    n = _num(ev)
    return {} if n is None else {"any": n}


def _cleanup(out: _Families, diag: Any) -> None:
    ladder = diag.ladder
    runs = dict(ladder.runs)
    fam = out.new("memdiag_cleanup_runs_total", "counter", "Cleanup requests by result.", ["result"])
    for k, v in sorted(runs.items()):
        if k != "errors":
            fam.add(v, k)
    out.one("memdiag_cleanup_action_errors_total", "counter", "Cleanup rungs that raised.", runs.get("errors"))
    out.one(
        "memdiag_cleanup_freed_bytes_total",
        "counter",
        "Bytes performed cleanups released, measured (RSS drop plus what children released).",
        getattr(ladder, "freed_bytes_total", None),
    )
    out.one("memdiag_cleanup_running", "gauge", "1 while a cleanup runs.", int(ladder.running))
    out.one(
        "memdiag_cleanup_retry_after_seconds",
        "gauge",
        "Seconds until a non-forced cleanup may run.",
        round(ladder.retry_after(), 3),
    )
    last = ladder.last_result
    out.one(
        "memdiag_cleanup_last_freed_bytes",
        "gauge",
        "Bytes the last cleanup released, measured (RSS drop plus what children released).",
        last.freed_bytes if last else None,
    )


def _trends(out: _Families, diag: Any) -> None:
    rate = out.new(
        "memdiag_growth_rate_per_second",
        "gauge",
        "Robust (Theil-Sen) growth per second over leak_window_seconds (bytes; heap_blocks: blocks).",
        ["series"],
    )
    eta = out.new(
        "memdiag_projected_seconds_to_threshold",
        "gauge",
        "Seconds until the series crosses its critical threshold at the current rate (absent: not growing).",
        ["series"],
    )
    threshold = out.new("memdiag_trend_threshold", "gauge", "The threshold each projection aims at.", ["series"])
    try:
        trends = diag.trends()
    except Exception:  # a report failure is the monitor's to tell; the metrics go on
        return
    for series, t in sorted(trends.items()):
        if not isinstance(t, dict):
            continue
        rate.add(_num(t.get("slope_per_second")), series)
        eta.add(_num(t.get("seconds_to_threshold")), series)
        threshold.add(_num(t.get("threshold")), series)


def _site(s: dict[str, Any]) -> str:
    file, line = s.get("file"), s.get("line")
    site = f"{file}:{line}" if file else str(s.get("id") or "?")
    return site if len(site) <= _SITE_CHARS else "..." + site[-(_SITE_CHARS - 3) :]


def _rate_per_min(s: dict[str, Any]) -> float | None:
    """Bytes per minute for memory suspects, items per minute for fd/thread/... suspects."""
    rate = _num(s.get("growth_bytes_per_min"))
    return rate if rate is not None else _num(s.get("growth_per_min"))


def _leaks(out: _Families, diag: Any) -> None:
    count = out.new("memdiag_leak_suspects", "gauge", "Leak suspects by kind.", ["kind"])
    growth = out.new(
        "memdiag_leak_suspect_growth_per_second",
        "gauge",
        f"Growth of the {MAX_SUSPECTS} fastest-growing leak suspects by kind and site "
        "(bytes/s for memory kinds; fds, threads, tasks or children per second for the others).",
        ["kind", "site"],
    )
    confidence = out.new(
        "memdiag_leak_suspect_confidence", "gauge", "Confidence (0..1) of each exported leak suspect.", ["kind", "site"]
    )
    leaks = sys.modules.get("memdiag.leaks")
    if leaks is None or not diag.config.leak_detection:
        return
    try:
        suspects = leaks.get_detector(diag).suspects()
    except Exception:
        return
    by_kind: dict[str, int] = {}
    for s in suspects:
        by_kind[str(s.get("kind"))] = by_kind.get(str(s.get("kind")), 0) + 1
    for kind, n in sorted(by_kind.items()):
        count.add(n, kind)
    top = sorted(suspects, key=lambda s: -(_rate_per_min(s) or 0.0))[:MAX_SUSPECTS]
    seen: set[tuple[str, str]] = set()
    for s in top:
        key = (str(s.get("kind")), _site(s))
        if key in seen:
            continue
        seen.add(key)
        rate = _rate_per_min(s)
        growth.add(None if rate is None else rate / 60.0, *key)
        confidence.add(_num(s.get("confidence")), *key)


def _monitor(out: _Families, diag: Any) -> None:
    overhead = diag.overhead()
    out.one("memdiag_monitor_running", "gauge", "1 while the monitor thread runs.", int(diag.running))
    out.one("memdiag_monitor_ticks_total", "counter", "Samples taken.", overhead["ticks"])
    out.one("memdiag_monitor_errors_total", "counter", "Samples that failed.", overhead["errors"])
    out.one(
        "memdiag_monitor_cpu_seconds_total", "counter", "CPU time of the monitor thread.", overhead["monitor_cpu_seconds"]
    )
    out.one("memdiag_history_samples", "gauge", "Samples in the in-memory history.", len(diag.history))
    store = getattr(diag, "store", None)
    out.one(
        "memdiag_history_file_ok",
        "gauge",
        "1 while the history file is written, 0 after a fault (history in memory only); absent: off.",
        None if store is None else int(store.mode == "sqlite"),
    )


def memdiag_families(diag: Any) -> list[Family]:
    """Every ``memdiag_*`` family of ``diag`` (a :class:`~memdiag.service.MemoryDiagnostics`)
    that has a value now."""
    return [f for f in all_families(diag) if f.samples]


def all_families(diag: Any) -> list[Family]:
    """Every ``memdiag_*`` family, those without a value now included (their names and
    types are what an exporter declares up front)."""
    out = _Families()
    out.new("memdiag_info", "gauge", "memdiag version.", ["version"]).add(1, __version__)
    _pressure(out, diag)
    _memory(out, diag)
    _caches(out)
    _cleanup(out, diag)
    _trends(out, diag)
    _leaks(out, diag)
    _monitor(out, diag)
    return out.items


def process_families(diag: Any) -> list[Family]:
    """``process_*`` and ``python_*`` as prometheus_client's default collectors name them,
    from the monitor's latest sample."""
    out = _Families()
    s = diag.last_sample
    p = s.process if s is not None else None
    out.one("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", p and p.vms)
    out.one("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", p and p.rss)
    out.one(
        "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", p and p.start_time
    )
    out.one("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", p and p.cpu_seconds)
    out.one("process_open_fds", "gauge", "Number of open file descriptors.", p and p.fds)
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        max_fds = None if soft == resource.RLIM_INFINITY else soft
    except (OSError, ValueError):
        max_fds = None
    out.one("process_max_fds", "gauge", "Maximum number of open file descriptors.", max_fds)
    stats = gc.get_stats()
    for key, name, help_text in (
        ("collected", "python_gc_objects_collected_total", "Objects collected during gc"),
        ("uncollectable", "python_gc_objects_uncollectable_total", "Uncollectable objects found during GC"),
        ("collections", "python_gc_collections_total", "Number of times this generation was collected"),
    ):
        fam = out.new(name, "counter", help_text, ["generation"])
        for i, st in enumerate(stats):
            fam.add(st.get(key), str(i))
    import platform  # here, not at import: about 120 KiB a service without Prometheus does not need

    major, minor, patch = platform.python_version_tuple()
    out.new(
        "python_info", "gauge", "Python platform information", ["implementation", "major", "minor", "patchlevel", "version"]
    ).add(1, platform.python_implementation(), major, minor, patch, platform.python_version())
    return [f for f in out.items if f.samples]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def render_text(families: Iterable[Family]) -> str:
    """The Prometheus text exposition format (0.0.4) of ``families``."""
    lines: list[str] = []
    for fam in families:
        lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for values, value in fam.samples:
            if fam.labels:
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(fam.labels, values))
                lines.append(f"{fam.name}{{{text}}} {_number(value)}")
            else:
                lines.append(f"{fam.name} {_number(value)}")
    return "\n".join(lines) + "\n"
