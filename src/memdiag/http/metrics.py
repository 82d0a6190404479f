"""``GET /metrics``: the Prometheus text exposition format (0.0.4), written by hand.

No dependency on ``prometheus_client``: the standard ``process_*`` and ``python_*``
families are read here the way its ``ProcessCollector`` reads them (``/proc/self``),
beside the ``memdiag_*`` families (pressure, system, cgroup, PSI, caches, children,
zombies, cleanup runs, the monitor itself). Figures that are unknown (no cgroup, no
PSI, no profile tick yet) are left out rather than reported as zero.
"""

from __future__ import annotations

import gc
import os
import platform
import resource
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import registry
from .._version import __version__
from ..probes._io import read_bytes
from ..probes.process import boot_time, clock_ticks, count_fds, page_size, read_stat
from ..probes.system import Psi

if TYPE_CHECKING:
    from ..service import MemoryDiagnostics

__all__ = ["render"]

Labels = dict[str, str]
Samples = Iterable[tuple[Labels, "float | int | None"]]

_LEVEL_RANK = {"ok": 0, "warning": 1, "critical": 2}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class _Exposition:
    """Collects metric families and renders them; families without a value are skipped."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def add(self, name: str, kind: str, help_text: str, samples: Samples) -> None:
        rows = [(labels, value) for labels, value in samples if value is not None]
        if not rows:
            return
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            self._lines.append(f"{name}{{{label_text}}} {_number(value)}" if label_text else f"{name} {_number(value)}")

    def one(self, name: str, kind: str, help_text: str, value: float | int | None) -> None:
        self.add(name, kind, help_text, [({}, value)])

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _process_families(out: _Exposition) -> None:
    """The standard ``process_*`` and ``python_*`` families, as prometheus_client names them."""
    st = read_stat(os.getpid())
    statm = read_bytes("/proc/self/statm", 256)
    vsize = None
    if statm:
        try:
            vsize = int(statm.split()[0]) * page_size()
        except (IndexError, ValueError):
            vsize = None
    out.one("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", vsize)
    out.one("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", st.rss_bytes if st else None)
    boot = boot_time()
    start = boot + st.start_ticks / clock_ticks() if st and boot is not None else None
    out.one("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", start)
    cpu = (st.utime_ticks + st.stime_ticks) / clock_ticks() if st else None
    out.one("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", cpu)
    out.one("process_open_fds", "gauge", "Number of open file descriptors.", count_fds("self"))
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        max_fds = None if soft == resource.RLIM_INFINITY else soft
    except (OSError, ValueError):
        max_fds = None
    out.one("process_max_fds", "gauge", "Maximum number of open file descriptors.", max_fds)
    stats = gc.get_stats()
    out.add(
        "python_gc_objects_collected_total",
        "counter",
        "Objects collected during gc",
        [({"generation": str(i)}, s.get("collected")) for i, s in enumerate(stats)],
    )
    out.add(
        "python_gc_objects_uncollectable_total",
        "counter",
        "Uncollectable objects found during GC",
        [({"generation": str(i)}, s.get("uncollectable")) for i, s in enumerate(stats)],
    )
    out.add(
        "python_gc_collections_total",
        "counter",
        "Number of times this generation was collected",
        [({"generation": str(i)}, s.get("collections")) for i, s in enumerate(stats)],
    )
    major, minor, patch = platform.python_version_tuple()
    out.add(
        "python_info",
        "gauge",
        "Python platform information",
        [
            (
                {
                    "implementation": platform.python_implementation(),
                    "major": major,
                    "minor": minor,
                    "patchlevel": patch,
                    "version": platform.python_version(),
                },
                1,
            )
        ],
    )


def _psi_samples(scope: str, psi: Psi | None) -> list[tuple[Labels, float | int | None]]:
    if psi is None:
        return []
    rows: list[tuple[Labels, float | int | None]] = []
    for kind in ("some", "full"):
        for window in ("10", "60", "300"):
            rows.append(({"scope": scope, "kind": kind, "window": window}, getattr(psi, f"{kind}_avg{window}")))
    return rows


def _cache_rows(diag: MemoryDiagnostics) -> list[tuple[str, dict[str, Any]]]:
    seen: dict[str, int] = {}
    rows = []
    for cache in registry.caches():
        name = str(getattr(cache, "name", type(cache).__name__))
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:  # two caches with one name would make duplicate series
            name = f"{name}#{seen[name]}"
        try:
            rows.append((name, dict(cache.metrics())))
        except Exception:  # a broken cache is reported by the sampler; skip it here
            continue
    return rows


def _num(value: Any) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def render(diag: MemoryDiagnostics) -> str:
    """The exposition text for ``diag``'s latest sample and this process."""
    out = _Exposition()
    _process_families(out)
    status = diag.status()  # takes a sample if the monitor is not running
    s = diag.last_sample
    state = diag.pressure
    cfg = diag.config
    out.add("memdiag_info", "gauge", "memdiag version.", [({"version": __version__}, 1)])
    out.one(
        "memdiag_pressure_level",
        "gauge",
        "Committed memory pressure level (0 ok, 1 warning, 2 critical).",
        _LEVEL_RANK.get(state.level, 2),
    )
    out.add(
        "memdiag_pressure_state",
        "gauge",
        "1 for the committed memory pressure level, 0 for the others.",
        [({"level": name}, int(name == state.level)) for name in _LEVEL_RANK],
    )
    out.one(
        "memdiag_pressure_raw_level",
        "gauge",
        "Memory pressure level of the latest sample, before hysteresis.",
        _LEVEL_RANK.get(state.raw_level, 2),
    )
    out.one(
        "memdiag_memory_threshold_bytes",
        "gauge",
        "Process RSS that counts as critical pressure.",
        cfg.memory_threshold_bytes,
    )
    out.one(
        "memdiag_subprocess_threshold_bytes",
        "gauge",
        "Children's total RSS that counts as critical pressure.",
        cfg.subprocess_threshold_bytes,
    )
    if s is not None:
        deep = diag.last_profile
        out.one("memdiag_process_rss_bytes", "gauge", "Process RSS at the latest sample.", s.process.rss)
        out.one(
            "memdiag_process_uss_bytes",
            "gauge",
            "Process USS at the latest profile tick.",
            deep.process.uss if deep else None,
        )
        out.one(
            "memdiag_process_pss_bytes",
            "gauge",
            "Process PSS at the latest profile tick.",
            deep.process.pss if deep else None,
        )
        out.one(
            "memdiag_process_swap_bytes",
            "gauge",
            "Process swap at the latest profile tick.",
            deep.process.swap if deep else None,
        )
        out.one("memdiag_process_threads", "gauge", "Threads of the process.", s.process.threads)
        out.one(
            "memdiag_python_allocated_blocks",
            "gauge",
            "Live pymalloc blocks (sys.getallocatedblocks()).",
            s.python.allocated_blocks,
        )
        if s.system is not None:
            out.one("memdiag_system_memory_total_bytes", "gauge", "System RAM.", s.system.total)
            out.one("memdiag_system_memory_available_bytes", "gauge", "System MemAvailable.", s.system.available)
            out.one("memdiag_system_swap_total_bytes", "gauge", "System swap.", s.system.swap_total)
            out.one("memdiag_system_swap_free_bytes", "gauge", "System free swap.", s.system.swap_free)
        cg = s.cgroup
        if cg is not None:
            out.add(
                "memdiag_cgroup_info",
                "gauge",
                "The process's memory cgroup (version).",
                [({"version": str(cg.version)}, 1)],
            )
            out.one(
                "memdiag_cgroup_limit_bytes", "gauge", "Effective cgroup memory limit (absent: unlimited).", cg.limit
            )
            out.one("memdiag_cgroup_high_bytes", "gauge", "cgroup v2 memory.high (absent: unset).", cg.high)
            out.one("memdiag_cgroup_usage_bytes", "gauge", "cgroup memory usage.", cg.usage)
            out.one(
                "memdiag_cgroup_working_set_bytes",
                "gauge",
                "cgroup working set (usage - inactive_file).",
                cg.working_set,
            )
            out.one("memdiag_cgroup_swap_bytes", "gauge", "cgroup swap usage.", cg.swap)
            out.add(
                "memdiag_cgroup_events_total",
                "counter",
                "cgroup memory events (memory.events: oom, oom_kill, high, max).",
                [({"event": k}, v) for k, v in sorted(cg.events.items())],
            )
        psi_rows = _psi_samples("system", s.psi) + _psi_samples("cgroup", cg.psi if cg is not None else None)
        out.add(
            "memdiag_psi_memory_avg_percent",
            "gauge",
            "Memory pressure stall information: share of time stalled (%).",
            psi_rows,
        )
        totals: list[tuple[Labels, float | int | None]] = []
        for scope, psi in (("system", s.psi), ("cgroup", cg.psi if cg is not None else None)):
            if psi is not None:
                totals.append(({"scope": scope, "kind": "some"}, psi.some_total_us / 1e6))
                if psi.full_total_us is not None:
                    totals.append(({"scope": scope, "kind": "full"}, psi.full_total_us / 1e6))
        out.add("memdiag_psi_memory_stall_seconds_total", "counter", "Total time stalled on memory.", totals)
        out.one("memdiag_children", "gauge", "Live descendant processes.", len(s.children) - s.zombies)
        out.one("memdiag_children_rss_bytes", "gauge", "Total RSS of live descendants.", s.children_rss)
        out.one(
            "memdiag_zombie_processes", "gauge", "Descendants that exited and were not reaped.", status.get("zombies")
        )
    caches = _cache_rows(diag)
    for key, name, kind, help_text in (
        ("entries", "memdiag_cache_entries", "gauge", "Entries in the cache."),
        ("bytes", "memdiag_cache_bytes", "gauge", "Bytes the cache accounts for."),
        ("max_bytes", "memdiag_cache_max_bytes", "gauge", "The cache's byte budget."),
        ("fill_ratio", "memdiag_cache_fill_ratio", "gauge", "bytes / max_bytes."),
        ("hits", "memdiag_cache_hits_total", "counter", "Cache hits."),
        ("misses", "memdiag_cache_misses_total", "counter", "Cache misses."),
        ("evictions", "memdiag_cache_evictions_total", "counter", "Entries evicted."),
    ):
        out.add(name, kind, help_text, [({"cache": n}, _num(m.get(key))) for n, m in caches])
    runs = dict(diag.ladder.runs)
    out.add(
        "memdiag_cleanup_runs_total",
        "counter",
        "Cleanup requests by result.",
        [({"result": k}, v) for k, v in sorted(runs.items()) if k != "errors"],
    )
    out.one("memdiag_cleanup_action_errors_total", "counter", "Cleanup rungs that raised.", runs.get("errors"))
    out.one("memdiag_cleanup_running", "gauge", "1 while a cleanup runs.", int(diag.ladder.running))
    out.one(
        "memdiag_cleanup_retry_after_seconds",
        "gauge",
        "Seconds until a non-forced cleanup may run.",
        round(diag.ladder.retry_after(), 3),
    )
    last = diag.ladder.last_result
    out.one(
        "memdiag_cleanup_last_freed_bytes",
        "gauge",
        "Bytes the last cleanup accounted as freed.",
        last.freed_bytes if last else None,
    )
    overhead = diag.overhead()
    out.one("memdiag_monitor_running", "gauge", "1 while the monitor thread runs.", int(diag.running))
    out.one("memdiag_monitor_ticks_total", "counter", "Samples taken.", overhead["ticks"])
    out.one("memdiag_monitor_errors_total", "counter", "Samples that failed.", overhead["errors"])
    out.one(
        "memdiag_monitor_cpu_seconds_total",
        "counter",
        "CPU time of the monitor thread.",
        overhead["monitor_cpu_seconds"],
    )
    out.one("memdiag_history_samples", "gauge", "Samples in the in-memory history.", len(diag.history))
    return out.text()
