"""System and container memory: /proc/meminfo, PSI, cgroup v2 and v1.

Inside a container the host's ``MemAvailable`` is not the process's limit: the cgroup's
is. :func:`detect_cgroup` finds the memory cgroup of a process from ``/proc/PID/cgroup``
and ``/proc/PID/mountinfo``; :func:`read_cgroup` reads its limit, usage, working set
(usage minus inactive file pages, as the kubelet computes it), event counters and PSI.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .._record import record
from ._io import parse_kv, read_bytes, read_int

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

Reader = Callable[[str], "bytes | None"]


def _int(data: bytes | None) -> int | None:
    if data is None:
        return None
    try:
        return int(data.strip())
    except ValueError:
        return None


__all__ = [
    "CgroupLocation",
    "CgroupMemory",
    "Psi",
    "SystemMemory",
    "ancestor_limits",
    "detect_cgroup",
    "read_cgroup",
    "read_meminfo",
    "read_psi",
]

_MEMINFO_KEYS = ("MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapTotal", "SwapFree")
_V2_STAT_KEYS = ("anon", "file", "inactive_file")
_V1_STAT_KEYS = (
    "hierarchical_memory_limit",
    "total_inactive_file",
    "inactive_file",
    "total_rss",
    "rss",
    "total_cache",
    "cache",
    "total_swap",
    "swap",
)

# cgroup v1 reports "no limit" as a huge page-aligned number (LONG_MAX rounded down).
_V1_UNLIMITED = 1 << 62


@record
class SystemMemory:
    total: int
    available: int
    free: int
    swap_total: int
    swap_free: int

    @property
    def used(self) -> int:
        return max(0, self.total - self.available)

    @property
    def percent(self) -> float:
        return round(100.0 * self.used / self.total, 2) if self.total else 0.0


@record
class Psi:
    """Pressure stall information: share of wall time (%) some/all tasks stalled on memory."""

    some_avg10: float
    some_avg60: float
    some_avg300: float
    some_total_us: int
    full_avg10: float | None
    full_avg60: float | None
    full_avg300: float | None
    full_total_us: int | None


@record
class CgroupLocation:
    """Where a process's memory cgroup lives: its version and directory."""

    version: int
    path: str  # the cgroup path as /proc/PID/cgroup shows it
    directory: str  # the directory to read files from
    mount: str  # the controller's mount point (the top we may walk up to)
    psi_file: str | None  # a memory.pressure file for this cgroup, if any


@record
class CgroupMemory:
    version: int
    path: str
    limit: int | None  # effective hard limit (the smallest up the tree); None: unlimited
    high: int | None  # v2 memory.high throttle point; None: unset
    usage: int | None
    working_set: int | None
    inactive_file: int | None
    anon: int | None
    file: int | None
    swap: int | None
    events: dict[str, int]
    psi: Psi | None

    @property
    def usage_ratio(self) -> float | None:
        if self.limit and self.working_set is not None:
            return self.working_set / self.limit
        return None


def read_meminfo(proc_root: str = "/proc", reader: Reader = read_bytes) -> SystemMemory | None:
    """System RAM from ``/proc/meminfo``; ``None`` if unreadable."""
    info = parse_kv(reader(f"{proc_root}/meminfo"), _MEMINFO_KEYS)
    if "MemTotal" not in info:
        return None
    available = info.get("MemAvailable")
    if available is None:  # kernels before 3.14
        available = info.get("MemFree", 0) + info.get("Cached", 0) + info.get("Buffers", 0)
    return SystemMemory(
        total=info["MemTotal"],
        available=available,
        free=info.get("MemFree", 0),
        swap_total=info.get("SwapTotal", 0),
        swap_free=info.get("SwapFree", 0),
    )


def read_psi(path: str, reader: Reader = read_bytes) -> Psi | None:
    """Parse a PSI file (``/proc/pressure/memory`` or a cgroup's ``memory.pressure``)."""
    data = reader(path)
    if not data:
        return None
    rows: dict[str, dict[str, float]] = {}
    for line in data.decode("ascii", "replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        kv = {}
        for item in parts[1:]:
            key, _, val = item.partition("=")
            try:
                kv[key] = float(val)
            except ValueError:
                continue
        rows[parts[0]] = kv
    some = rows.get("some")
    if not some or "avg10" not in some:
        return None
    full = rows.get("full")
    return Psi(
        some_avg10=some.get("avg10", 0.0),
        some_avg60=some.get("avg60", 0.0),
        some_avg300=some.get("avg300", 0.0),
        some_total_us=int(some.get("total", 0)),
        full_avg10=full.get("avg10") if full else None,
        full_avg60=full.get("avg60") if full else None,
        full_avg300=full.get("avg300") if full else None,
        full_total_us=int(full["total"]) if full and "total" in full else None,
    )


def _mounts(proc_root: str, pid: int | str) -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fstype, super options) for cgroup mounts."""
    data = read_bytes(f"{proc_root}/{pid}/mountinfo")
    out: list[tuple[str, str, str, set[str]]] = []
    if not data:
        return out
    for line in data.decode("utf-8", "replace").splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lparts = left.split()
        rparts = right.split()
        if len(lparts) < 5 or len(rparts) < 3:
            continue
        fstype = rparts[0]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        opts = set(rparts[2].split(",")) | set(lparts[5].split(",") if len(lparts) > 5 else [])
        out.append((lparts[3], lparts[4].replace("\\040", " "), fstype, opts))
    return out


def _join(mount_point: str, mount_root: str, cg_path: str) -> str:
    """The directory of ``cg_path`` under a mount whose root is ``mount_root``."""
    rel = cg_path
    if mount_root not in ("/", "") and (cg_path == mount_root or cg_path.startswith(mount_root + "/")):
        rel = cg_path[len(mount_root) :]
    return os.path.join(mount_point, rel.lstrip("/"))


def _existing(directory: str, mount_point: str, marker: str) -> str:
    """Walk up from ``directory`` to the first that has ``marker`` (cgroup namespaces
    and bind mounts can hide the leading part of the path)."""
    d = directory
    while True:
        if os.path.exists(os.path.join(d, marker)):
            return d
        if os.path.normpath(d) == os.path.normpath(mount_point) or d in ("/", ""):
            return mount_point
        d = os.path.dirname(d)


def detect_cgroup(
    pid: int | str = "self", proc_root: str = "/proc", cgroup_root: str | None = None
) -> CgroupLocation | None:
    """Find the memory cgroup of ``pid``: v2 if the memory controller is on the unified
    hierarchy, else v1's memory controller. ``None`` when there is no memory cgroup.

    Args:
        pid: the process, ``"self"`` by default.
        proc_root: where ``/proc`` is (a recorded tree in tests).
        cgroup_root: replaces the mount points found in mountinfo with
            ``cgroup_root`` (v2) or ``cgroup_root/memory`` (v1): for recorded trees, and for
            hosts where /proc's mount table does not match this process's view.
    """
    data = read_bytes(f"{proc_root}/{pid}/cgroup")
    if not data:
        return None
    v1_path = v2_path = None
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    mounts = _mounts(proc_root, pid)
    v2_mount = next(((root, mp) for root, mp, fs, _ in mounts if fs == "cgroup2"), None)
    v1_mount = next(((root, mp) for root, mp, fs, opts in mounts if fs == "cgroup" and "memory" in opts), None)
    if cgroup_root is not None:
        v2_mount = ("/", cgroup_root) if v2_path is not None else None
        v1_mount = None
        if v1_path is not None:
            v1_dir = os.path.join(cgroup_root, "memory")
            v1_mount = ("/", v1_dir if os.path.isdir(v1_dir) else cgroup_root)

    v2_dir = None
    if v2_path is not None and v2_mount is not None:
        v2_dir = _existing(_join(v2_mount[1], v2_mount[0], v2_path), v2_mount[1], "cgroup.procs")
    v2_has_memory = False
    if v2_dir is not None:
        ctrl = read_bytes(os.path.join(v2_mount[1], "cgroup.controllers"))  # type: ignore[index]
        v2_has_memory = bool(ctrl and b"memory" in ctrl.split())
    v2_psi = os.path.join(v2_dir, "memory.pressure") if v2_dir else None
    if v2_psi and not os.path.exists(v2_psi):
        v2_psi = None

    if v1_path is not None and v1_mount is not None:
        v1_dir = _existing(_join(v1_mount[1], v1_mount[0], v1_path), v1_mount[1], "memory.usage_in_bytes")
        if os.path.exists(os.path.join(v1_dir, "memory.usage_in_bytes")):
            return CgroupLocation(1, v1_path, v1_dir, v1_mount[1], v2_psi)
    if v2_dir is not None and v2_has_memory:
        return CgroupLocation(2, v2_path or "/", v2_dir, v2_mount[1], v2_psi)  # type: ignore[index]
    return None


def _v2_limit(directory: str, mount: str, name: str) -> int | None:
    """The smallest ``name`` (memory.max / memory.high) from ``directory`` up to the mount."""
    best = None
    d = directory
    mount = os.path.normpath(mount)
    for _ in range(64):
        value = read_int(os.path.join(d, name))
        if value is not None and (best is None or value < best):
            best = value
        if os.path.normpath(d) == mount or d in ("/", ""):
            break
        d = os.path.dirname(d)
    return best


def ancestor_limits(loc: CgroupLocation | None) -> tuple[int | None, int | None]:
    """v2: the smallest ``memory.max`` and ``memory.high`` of the cgroup's ancestors.

    A limit set on a parent (a Kubernetes pod, a systemd slice) binds the child too. These
    change rarely: the sampler reads them on profile ticks and passes them to
    :func:`read_cgroup`, so a cheap tick reads only the cgroup's own files.
    """
    if loc is None or loc.version != 2 or os.path.normpath(loc.directory) == os.path.normpath(loc.mount):
        return None, None
    parent = os.path.dirname(loc.directory)
    return _v2_limit(parent, loc.mount, "memory.max"), _v2_limit(parent, loc.mount, "memory.high")


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def read_cgroup(
    loc: CgroupLocation | None,
    ancestors: tuple[int | None, int | None] | None = None,
    reader: Reader = read_bytes,
) -> CgroupMemory | None:
    """Read the memory figures of a cgroup found by :func:`detect_cgroup`.

    Args:
        loc: the cgroup; ``None`` gives ``None``.
        ancestors: v2 only: ``(max, high)`` of the ancestors from :func:`ancestor_limits`;
            ``None`` reads them now. (v1 gets the hierarchy's limit from
            ``hierarchical_memory_limit`` for free.)
        reader: reads a file's bytes or gives ``None``; the sampler passes a
            :class:`~memdiag.probes._io.PreadCache` so the files stay open between ticks.
    """

    if loc is None:
        return None
    psi = read_psi(loc.psi_file, reader) if loc.psi_file else None
    if loc.version == 2:
        stat, figures = _v2_figures(loc, ancestors, reader)
    else:
        stat, figures = _v1_figures(loc.directory, reader)
    usage, inactive = figures["usage"], figures["inactive_file"]
    working_set = None
    if usage is not None:
        working_set = max(0, usage - (inactive or 0))
    if usage is None and figures["limit"] is None and not stat:
        return None
    return CgroupMemory(version=loc.version, path=loc.path, working_set=working_set, psi=psi, **figures)


def _v2_figures(
    loc: CgroupLocation, ancestors: tuple[int | None, int | None] | None, reader: Reader
) -> tuple[dict[str, int], dict[str, Any]]:
    """``(memory.stat, figures)`` of a v2 cgroup; the limits are the smallest up the tree."""
    d = loc.directory
    stat = parse_kv(reader(os.path.join(d, "memory.stat")), _V2_STAT_KEYS)
    usage = _int(reader(os.path.join(d, "memory.current")))
    up_max, up_high = ancestors if ancestors is not None else ancestor_limits(loc)
    return stat, {
        "usage": usage,
        "limit": _min(_int(reader(os.path.join(d, "memory.max"))), up_max),
        "high": _min(_int(reader(os.path.join(d, "memory.high"))), up_high),
        "events": parse_kv(reader(os.path.join(d, "memory.events"))),
        "inactive_file": stat.get("inactive_file"),
        "swap": _int(reader(os.path.join(d, "memory.swap.current"))),
        "anon": stat.get("anon"),
        "file": stat.get("file"),
    }


def _v1_figures(d: str, reader: Reader) -> tuple[dict[str, int], dict[str, Any]]:
    """``(memory.stat, figures)`` of a v1 memory cgroup: hierarchical totals where given,
    the limit from the hierarchy, no ``high``, failures and OOM kills as events."""
    stat = parse_kv(reader(os.path.join(d, "memory.stat")), _V1_STAT_KEYS)
    usage = _int(reader(os.path.join(d, "memory.usage_in_bytes")))
    limit = _int(reader(os.path.join(d, "memory.limit_in_bytes")))
    hier = stat.get("hierarchical_memory_limit")
    if hier is not None and (limit is None or hier < limit):
        limit = hier
    if limit is not None and limit >= _V1_UNLIMITED:
        limit = None
    events: dict[str, int] = {}
    failcnt = _int(reader(os.path.join(d, "memory.failcnt")))
    if failcnt is not None:
        events["max"] = failcnt
    oom = parse_kv(reader(os.path.join(d, "memory.oom_control")))
    if "oom_kill" in oom:
        events["oom_kill"] = oom["oom_kill"]
    if "under_oom" in oom:
        events["under_oom"] = oom["under_oom"]
    return stat, {
        "usage": usage,
        "limit": limit,
        "high": None,
        "events": events,
        "inactive_file": stat.get("total_inactive_file", stat.get("inactive_file")),
        "swap": stat.get("total_swap", stat.get("swap")),
        "anon": stat.get("total_rss", stat.get("rss")),
        "file": stat.get("total_cache", stat.get("cache")),
    }
