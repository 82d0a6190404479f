"""What can be seen of a process, or of the machine, from outside (no agent inside).

``profile --pid N`` on a process without memdiag reads its ``/proc`` files: RSS, USS,
PSS and swap (``smaps_rollup``), its descendants and zombies, its cgroup and the
system's memory and PSI. It cannot see the Python heap, caches, or any pressure
history: the report says so in ``unavailable``. Pressure is judged from this one
reading against the local configuration (``pressure.instant`` is true).

With no target at all, the machine view shows system memory, this shell's cgroup, PSI,
and the largest processes (read from ``/proc``, as the process view is).

The process view is built by the same function as :meth:`memdiag.MemoryDiagnostics.profile`
(:func:`memdiag.reports.profile`), so scripts can read either.
"""

from __future__ import annotations

import os
import time

from .. import reports
from ..config import MemoryConfig, load_config
from ..errors import ConfigError
from ..probes.process import (
    clock_ticks,
    count_fds,
    pids,
    read_cmdline,
    read_real_uid,
    read_smaps_rollup,
    read_stat,
    read_statm_rss,
)
from ..probes.python import PythonHeap
from ..probes.system import ancestor_limits, detect_cgroup, read_cgroup, read_meminfo, read_psi
from ..probes.tree import ChildWalker
from ..sample import ProcessMemory, Sample

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["machine_view", "process_view"]

_NO_HEAP = PythonHeap(0, (0, 0, 0), (), (), (), 0, 0)
_MAX_CHILD_SMAPS = 256  # smaps_rollup per child costs ~10 us/MiB: bound a huge tree

UNAVAILABLE_OUTSIDE = {
    "python": "the Python heap (objects, gc, allocation sites) is visible only to an agent inside the process",
    "caches": "cache metrics are visible only to an agent inside the process",
    "pressure_history": "pressure history, trends and leak analysis need a running monitor",
    "cleanup": "cleanup needs an agent: memdiag.start(http=True) in the process, or `memdiag run`",
}


def _config() -> MemoryConfig:
    """The local configuration (file + env) for thresholds; defaults if it is broken."""
    try:
        return load_config()
    except ConfigError:
        return MemoryConfig()


def _cmdline(pid: int) -> list[str] | None:
    from ..redact import redact_argv  # the process view's alone: the machine view shows no command line

    args = read_cmdline(pid)
    return None if args is None else redact_argv(args)


def _system_and_psi(pid: int | str) -> tuple[Sample, dict[str, Any]]:
    """A :class:`Sample` for ``pid`` without its process figures filled in (helper)."""
    loc = detect_cgroup(pid)
    cgroup = read_cgroup(loc, ancestor_limits(loc)) if loc else None
    sample = Sample(
        time=time.time(),
        monotonic=time.monotonic(),
        profile=True,
        process=ProcessMemory(pid=0, rss=None),
        system=read_meminfo(),
        cgroup=cgroup,
        psi=read_psi("/proc/pressure/memory"),
        python=_NO_HEAP,
        children=(),
    )
    return sample, sample.to_dict()


def process_view(pid: int, *, children_detail: bool = True) -> dict[str, Any] | None:
    """Everything visible about ``pid`` from outside; ``None`` if it is gone.

    Args:
        pid: the process.
        children_detail: include one row per descendant (``children.processes``).
    """
    st = read_stat(pid)
    if st is None:
        return None
    cfg = _config()
    roll = read_smaps_rollup(pid)
    walker = ChildWalker(pid)
    try:
        kids = walker.walk(full=True)
    finally:
        walker.close()
    child_mem: dict[int, dict[str, int]] = {}
    for c in kids[:_MAX_CHILD_SMAPS]:
        if c.state != "Z":
            r = read_smaps_rollup(c.pid)
            if r:
                child_mem[c.pid] = r
    base, _ = _system_and_psi(pid)
    rss = roll["rss"] if roll else st.rss_bytes
    process = ProcessMemory(
        pid=pid,
        rss=rss,
        uss=roll["uss"] if roll else None,
        pss=roll["pss"] if roll else None,
        swap=roll["swap"] if roll else None,
        threads=st.num_threads,
        fds=count_fds(pid),
        cpu_seconds=(st.utime_ticks + st.stime_ticks) / clock_ticks(),
    )
    sample = Sample(
        time=base.time,
        monotonic=base.monotonic,
        profile=True,
        process=process,
        system=base.system,
        cgroup=base.cgroup,
        psi=base.psi,
        python=_NO_HEAP,
        children=tuple(kids),
        child_memory=child_mem,
    )
    unavailable = dict(UNAVAILABLE_OUTSIDE)
    if roll is None:
        unavailable["uss_pss"] = f"/proc/{pid}/smaps_rollup is not readable (another user's process, or an old kernel)"
    doc = reports.profile(sample, cfg, reports.instant_pressure(sample, cfg), deep=sample, agent=False)
    doc["process"].update(name=st.name, state=st.state, cmdline=_cmdline(pid), start_time=st.start_time())
    if children_detail:
        doc["children"]["processes"] = reports.subprocesses(sample, child_mem, decorate=False)
    return {"view": "outside", "agent": False, **doc, "unavailable": unavailable}


def largest_processes(limit: int = 10) -> list[dict[str, Any]]:
    """The ``limit`` processes with the most RSS on the machine: psutil's ``process_iter``
    rows (RSS from ``statm``), read from ``/proc`` without importing psutil; the name and
    user of those ``limit`` only."""
    rss = ((read_statm_rss(pid), pid) for pid in pids())
    rows = []
    for size, pid in sorted(((r, p) for r, p in rss if r is not None), key=lambda rp: -rp[0]):
        st = read_stat(pid)
        if st is not None:  # gone meanwhile
            rows.append({"pid": pid, "name": _full_name(pid, st.name), "user": _user(pid), "rss_bytes": size})
        if len(rows) == limit:
            break
    return rows


def _full_name(pid: int, name: str) -> str:
    """The kernel's 15-byte ``comm``, completed from the command line as psutil's ``name()``."""
    if len(name) < 15:
        return name
    args = read_cmdline(pid)
    if args and len(args) == 1 and " " in args[0]:  # a process that rewrote its title
        args = args[0].split()
    full = os.path.basename(args[0]) if args else ""
    return full if full.startswith(name) else name


def _user(pid: int) -> str | None:
    """The name of the process's real user (its number when it has no name)."""
    import pwd

    uid = read_real_uid(pid)
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def machine_view(top: int = 10) -> dict[str, Any]:
    """System memory, this shell's cgroup, PSI and the largest processes."""
    base, bd = _system_and_psi("self")
    return {
        "view": "machine",
        "agent": False,
        "timestamp": base.time,
        "system": bd["system"],
        "cgroup": bd["cgroup"],
        "psi": bd["psi"],
        "top_processes": largest_processes(top),
        "pressure": reports.instant_pressure(base, _config()),
        "unavailable": {
            "services": "no memdiag service is registered for this user (start one with "
            "memdiag.start(http=True) or `memdiag run`); --pid N shows a process from outside",
        },
    }
