"""Sample: one immutable, timestamped record of everything cheap, and the sampler.

A :class:`Sample` is taken every ``sample_interval`` by :class:`Sampler`; on profile ticks
it also carries USS/PSS for the process and its children and an object count. Samples
are plain data: reports and every surface render them the same way.
"""

from __future__ import annotations

import os
import time

from . import registry
from ._record import asdict, field, record
from .probes._io import PreadCache, held_fds
from .probes.process import ProcStat, clock_ticks, count_fds, read_smaps_rollup, read_stat
from .probes.python import PythonHeap, python_heap
from .probes.system import (
    CgroupLocation,
    CgroupMemory,
    Psi,
    SystemMemory,
    ancestor_limits,
    detect_cgroup,
    read_cgroup,
    read_meminfo,
    read_psi,
)
from .probes.tree import ChildInfo, ChildWalker

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ProcessMemory", "Sample", "Sampler"]


@record
class ProcessMemory:
    """This process's memory. ``uss``/``pss``/``swap`` are ``None`` except on profile ticks."""

    pid: int
    rss: int | None
    uss: int | None = None
    pss: int | None = None
    swap: int | None = None
    threads: int | None = None
    fds: int | None = None
    cpu_seconds: float | None = None
    vms: int | None = None
    start_time: float | None = None


@record
class Sample:
    """Everything cheap about the process's memory at one instant."""

    time: float
    monotonic: float
    profile: bool
    process: ProcessMemory
    system: SystemMemory | None
    cgroup: CgroupMemory | None
    psi: Psi | None
    python: PythonHeap
    children: tuple[ChildInfo, ...]
    child_memory: dict[int, dict[str, int]] = field(default_factory=dict)  # pid -> smaps (profile ticks)
    caches: tuple[dict[str, Any], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # what taking it cost

    @property
    def children_rss(self) -> int:
        """Total RSS of live (non-zombie) descendants."""
        return sum(c.rss_bytes for c in self.children if c.state != "Z")

    @property
    def zombies(self) -> int:
        return sum(1 for c in self.children if c.state == "Z")

    @property
    def cache_bytes(self) -> int:
        return sum(int(c.get("bytes") or 0) for c in self.caches)

    @property
    def effective_limit(self) -> int | None:
        """The memory this process can really use: the container limit, else system RAM."""
        limits = [
            x for x in (self.cgroup.limit if self.cgroup else None, self.system.total if self.system else None) if x
        ]
        return min(limits) if limits else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view of the sample."""
        d = {
            "time": self.time,
            "profile": self.profile,
            "process": asdict(self.process),
            "system": _system_dict(self.system),
            "cgroup": _cgroup_dict(self.cgroup),
            "psi": asdict(self.psi) if self.psi else None,
            "python": asdict(self.python),
            "children": {
                "count": len(self.children),
                "rss_bytes": self.children_rss,
                "zombies": self.zombies,
            },
            "caches": list(self.caches),
            "extra": dict(self.extra),
            "seconds": self.seconds,
        }
        return d


def _system_dict(s: SystemMemory | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "total_bytes": s.total,
        "available_bytes": s.available,
        "used_bytes": s.used,
        "free_bytes": s.free,
        "percent": s.percent,
        "swap_total_bytes": s.swap_total,
        "swap_free_bytes": s.swap_free,
    }


def _cgroup_dict(c: CgroupMemory | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "version": c.version,
        "path": c.path,
        "limit_bytes": c.limit,
        "high_bytes": c.high,
        "usage_bytes": c.usage,
        "working_set_bytes": c.working_set,
        "inactive_file_bytes": c.inactive_file,
        "anon_bytes": c.anon,
        "file_bytes": c.file,
        "swap_bytes": c.swap,
        "usage_ratio": round(c.usage_ratio, 4) if c.usage_ratio is not None else None,
        "events": dict(c.events),
        "psi": asdict(c.psi) if c.psi else None,
    }


class Sampler:
    """Takes samples of one process (this one by default). Owned by one thread.

    Args:
        pid: the process to sample; defaults to this one.
        proc_root: where /proc is (recorded trees in tests).
        cgroup_root: overrides the cgroup mount point (see :func:`detect_cgroup`).
        psi_path: system PSI file; ``None`` for ``{proc_root}/pressure/memory``.
        with_python: include this interpreter's heap (only meaningful for this process).
    """

    def __init__(
        self,
        pid: int | None = None,
        proc_root: str = "/proc",
        cgroup_root: str | None = None,
        psi_path: str | None = None,
        *,
        with_python: bool = True,
        max_children: int = 4096,
    ) -> None:
        self.pid = pid if pid is not None else os.getpid()
        self.proc_root = proc_root
        self.cgroup_root = cgroup_root
        self.psi_path = psi_path or f"{proc_root}/pressure/memory"
        self.with_python = with_python
        self.walker = ChildWalker(self.pid, proc_root, max_children=max_children)
        self._cache = PreadCache(32)
        self._started: tuple[int, float | None] | None = None  # (pid, start time): read once
        self._cgroup_loc: CgroupLocation | None = None
        self._cgroup_checked = 0.0
        self._ancestors: tuple[int | None, int | None] = (None, None)
        self._last_psi: tuple[float, Psi | None] = (0.0, None)
        self.collector_errors: dict[str, str] = {}
        self._fds: int | None = None
        self._fds_at = 0.0

    def _cgroup(self, now: float, profile: bool) -> CgroupMemory | None:
        # A process's cgroup and its ancestors' limits rarely change: look them up again
        # every 60 s and on profile ticks; a cheap tick reads only the cgroup's own files.
        if self._cgroup_checked == 0.0 or now - self._cgroup_checked > 60.0 or profile:
            self._cgroup_loc = detect_cgroup(self.pid, self.proc_root, self.cgroup_root)
            self._ancestors = ancestor_limits(self._cgroup_loc)
            self._cgroup_checked = now
        return read_cgroup(self._cgroup_loc, self._ancestors, self._cache.read)

    def _psi(self, now: float) -> Psi | None:
        # PSI averages move slowly; the kernel recommends polling no faster than 1 s.
        t, value = self._last_psi
        if now - t >= 1.0 or t == 0.0:
            value = read_psi(self.psi_path, self._cache.read)
            self._last_psi = (now, value)
        return value

    def take(self, profile: bool = False) -> Sample:
        """Take one sample; ``profile`` adds USS/PSS, per-child smaps and an object count."""
        start = time.perf_counter()
        now = time.monotonic()
        st = read_stat(self.pid, self.proc_root, self._cache)
        rss = st.rss_bytes if st else None
        uss = pss = swap = None
        children = self._walk()
        child_memory: dict[int, dict[str, int]] = {}
        if profile:
            roll = read_smaps_rollup(self.pid, self.proc_root)
            if roll:
                rss, uss, pss, swap = roll["rss"], roll["uss"], roll["pss"], roll["swap"]
            child_memory = self._child_memory(children)
        fds, threads = self._apps_fds_threads(self._count_fds(now, profile), st.num_threads if st else None)
        process = ProcessMemory(
            pid=self.pid,
            rss=rss,
            uss=uss,
            pss=pss,
            swap=swap,
            threads=threads,
            fds=fds,
            cpu_seconds=(st.utime_ticks + st.stime_ticks) / clock_ticks() if st else None,
            vms=st.vsize_bytes if st else None,
            start_time=self._start_time(st),
        )
        cgroup = self._cgroup(now, profile)
        heap = python_heap(deep=profile) if self.with_python else PythonHeap(0, (0, 0, 0), (), (), (), 0, 0)
        caches = self._cache_metrics()
        extra = self._collect(profile)
        return Sample(
            time=time.time(),
            monotonic=now,
            profile=profile,
            process=process,
            system=read_meminfo(self.proc_root, self._cache.read),
            cgroup=cgroup,
            psi=self._psi(now),
            python=heap,
            children=children,
            child_memory=child_memory,
            caches=caches,
            extra=extra,
            seconds=time.perf_counter() - start,
        )

    def _walk(self) -> tuple[ChildInfo, ...]:
        """The descendants, from the natural tree and the registered extra roots."""
        roots = registry.walk_roots()
        if roots or self.walker.extra_roots:
            self.walker.extra_roots = set(roots)
        return tuple(self.walker.walk())

    def _child_memory(self, children: tuple[ChildInfo, ...]) -> dict[int, dict[str, int]]:
        """USS/PSS/swap of each live child (profile ticks: smaps_rollup costs ~10 us/MiB)."""
        out = {}
        for c in children:
            if c.state != "Z":
                r = read_smaps_rollup(c.pid, self.proc_root)
                if r:
                    out[c.pid] = r
        return out

    def _count_fds(self, now: float, profile: bool) -> int | None:
        # Counting fds lists /proc/PID/fd (~30 us): every 5 s is enough for a trend.
        if profile or now - self._fds_at >= 5.0:
            self._fds = count_fds(self.pid, self.proc_root)
            self._fds_at = now
        return self._fds

    def _apps_fds_threads(self, fds: int | None, threads: int | None) -> tuple[int | None, int | None]:
        """memdiag's own sockets and threads (the control channel) are not the app's."""
        if self.pid == os.getpid() and self.proc_root == "/proc":
            if fds is not None:
                fds = max(0, fds - len(registry.own_fds() | held_fds()))
            if threads is not None:
                threads = max(1, threads - registry.own_threads())
        return fds, threads

    def _cache_metrics(self) -> tuple[dict[str, Any], ...]:
        caches = []
        for cache in registry.caches():
            try:
                m = dict(cache.metrics())
                m.setdefault("name", getattr(cache, "name", type(cache).__name__))
                caches.append(m)
            except Exception as exc:  # a broken cache must not break sampling
                self.collector_errors[f"cache:{getattr(cache, 'name', '?')}"] = repr(exc)[:200]
        return tuple(caches)

    def _collect(self, profile: bool) -> dict[str, Any]:
        """The registered collectors' results; a failing one is noted and left out."""
        extra: dict[str, Any] = {}
        for name, fn in registry.collectors().items():
            try:
                value = fn(profile)
            except Exception as exc:
                self.collector_errors[name] = repr(exc)[:200]
                continue
            if value is not None:
                extra[name] = value
        return extra

    def _start_time(self, st: ProcStat | None) -> float | None:
        """The process's start time (epoch seconds): read once, it never changes."""
        if st is None:
            return None
        known = self._started
        if known is None or known[0] != self.pid:
            known = (self.pid, st.start_time(self.proc_root))
            self._started = known
        return known[1]

    def reset_after_fork(self) -> None:
        self.pid = os.getpid()
        self.walker.reset()
        self._cache.close()
        self._cache = PreadCache(32)
        self._cgroup_checked = 0.0

    def close(self) -> None:
        self.walker.close()
        self._cache.close()
