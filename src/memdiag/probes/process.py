"""Per-process figures from /proc/PID: stat, statm, smaps_rollup."""

from __future__ import annotations

import os
from functools import lru_cache

from .._record import tuple_record
from ._io import PreadCache, parse_kv, read_bytes

__all__ = [
    "ProcStat",
    "boot_time",
    "clock_ticks",
    "count_fds",
    "page_size",
    "parse_stat",
    "pids",
    "read_cmdline",
    "read_real_uid",
    "read_smaps_rollup",
    "read_stat",
    "read_statm_rss",
]


@lru_cache(maxsize=1)
def page_size() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4096


@lru_cache(maxsize=1)
def clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


@lru_cache(maxsize=4)
def boot_time(proc_root: str = "/proc") -> float | None:
    """System boot time (epoch seconds) from ``/proc/stat``'s ``btime``."""
    data = read_bytes(f"{proc_root}/stat")
    if not data:
        return None
    for line in data.splitlines():
        if line.startswith(b"btime "):
            try:
                return float(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


@tuple_record
class ProcStat:
    """The fields of ``/proc/PID/stat`` memdiag uses.

    ``start_ticks`` is the start time in clock ticks since boot: with ``pid`` it
    identifies a process for its whole life (a reused PID has a different start).
    A NamedTuple, not a dataclass: the CLI reads this file at every start, and
    ``dataclasses`` (with ``inspect``) costs several milliseconds to import.
    """

    pid: int
    name: str
    state: str
    ppid: int
    pgrp: int
    num_threads: int
    start_ticks: int
    rss_bytes: int
    utime_ticks: int
    stime_ticks: int
    vsize_bytes: int = 0

    @property
    def zombie(self) -> bool:
        return self.state == "Z"

    def start_time(self, proc_root: str = "/proc") -> float | None:
        """Start time in epoch seconds, comparable with psutil's ``create_time()``."""
        bt = boot_time(proc_root)
        return None if bt is None else bt + self.start_ticks / clock_ticks()


def parse_stat(pid: int, data: bytes | None) -> ProcStat | None:
    """Parse one ``/proc/PID/stat`` line; ``None`` if it is missing or malformed."""
    if not data:
        return None
    try:
        lpar = data.index(b"(")
        rpar = data.rindex(b")")
        name = data[lpar + 1 : rpar].decode("utf-8", "replace")
        rest = data[rpar + 2 :].split()
        return ProcStat(
            pid=pid,
            name=name,
            state=rest[0].decode("ascii", "replace"),
            ppid=int(rest[1]),
            pgrp=int(rest[2]),
            num_threads=int(rest[17]),
            start_ticks=int(rest[19]),
            rss_bytes=int(rest[21]) * page_size(),
            utime_ticks=int(rest[11]),
            stime_ticks=int(rest[12]),
            vsize_bytes=int(rest[20]),
        )
    except (ValueError, IndexError):
        return None


def read_stat(pid: int, proc_root: str = "/proc", cache: PreadCache | None = None) -> ProcStat | None:
    """``/proc/PID/stat`` parsed, or ``None`` if the process is gone or unreadable."""
    path = f"{proc_root}/{pid}/stat"
    data = cache.read(path) if cache is not None else read_bytes(path, 4096)
    return parse_stat(pid, data)


def pids(proc_root: str = "/proc") -> list[int]:
    """Every process id on the machine, ascending."""
    try:
        return sorted(int(n) for n in os.listdir(proc_root) if n.isdigit())
    except OSError:
        return []


def read_real_uid(pid: int | str, proc_root: str = "/proc") -> int | None:
    """The real user id of ``pid`` (the first ``Uid:`` figure of ``/proc/PID/status``)."""
    data = read_bytes(f"{proc_root}/{pid}/status", 4096)
    start = data.find(b"\nUid:") if data else -1
    if data is None or start < 0:
        return None
    try:
        return int(data[start + 5 :].split(None, 1)[0])
    except (IndexError, ValueError):
        return None


def own_threads_cpu(prefix: str = "memdiag-") -> dict[str, float]:
    """CPU seconds (user + system) of this process's running threads whose name starts with
    ``prefix``, by name (threads of one name summed), from ``/proc/self/task/TID/stat``.
    A thread that has ended is not counted; an unreadable entry is skipped."""
    import threading  # the probes layer reads, it never starts threads: imported on use

    out: dict[str, float] = {}
    for t in threading.enumerate():
        tid = t.native_id
        if tid is None or not t.name.startswith(prefix):
            continue
        st = parse_stat(tid, read_bytes(f"/proc/self/task/{tid}/stat", 4096))
        if st is not None:
            out[t.name] = out.get(t.name, 0.0) + (st.utime_ticks + st.stime_ticks) / clock_ticks()
    return out


def read_statm_rss(pid: int | str = "self", proc_root: str = "/proc", cache: PreadCache | None = None) -> int | None:
    """Resident set size in bytes from ``/proc/PID/statm`` (about 10 us, any size)."""
    path = f"{proc_root}/{pid}/statm"
    data = cache.read(path, 256) if cache is not None else read_bytes(path, 256)
    if not data:
        return None
    try:
        return int(data.split()[1]) * page_size()
    except (IndexError, ValueError):
        return None


def read_smaps_rollup(pid: int | str = "self", proc_root: str = "/proc") -> dict[str, int] | None:
    """USS, PSS, RSS and swap in bytes from ``/proc/PID/smaps_rollup``.

    Costs about 10 us per MiB resident and takes the target's mmap lock: call it on
    profile ticks, not every tick. ``None`` where the file is missing (old kernels,
    other users' processes) or the process is gone.
    """
    fields = parse_kv(read_bytes(f"{proc_root}/{pid}/smaps_rollup"))
    if "Rss" not in fields:
        return None
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0) + fields.get("Private_Hugetlb", 0)
    return {
        "rss": fields["Rss"],
        "pss": fields.get("Pss", 0),
        "uss": uss,
        "swap": fields.get("Swap", 0),
        "anonymous": fields.get("Anonymous", 0),
    }


def read_cmdline(pid: int | str, proc_root: str = "/proc", limit: int = 65536) -> list[str] | None:
    """The arguments of ``pid`` (``/proc/PID/cmdline``, at most ``limit`` bytes), decoded
    leniently; ``None`` if it cannot be read. A zombie or a kernel thread has ``[]``.

    Not redacted: a report shows it through :func:`memdiag.redact.redact_argv`.
    """
    data = read_bytes(f"{proc_root}/{pid}/cmdline", limit)
    if data is None:
        return None
    return [a.decode("utf-8", "replace") for a in data.split(b"\0") if a]


def count_fds(pid: int | str = "self", proc_root: str = "/proc") -> int | None:
    """Number of open file descriptors, or ``None`` if ``/proc/PID/fd`` is unreadable.

    Listing this process's own table opens a descriptor for the listing, which the listing
    shows: it is not counted."""
    try:
        n = len(os.listdir(f"{proc_root}/{pid}/fd"))
    except OSError:
        return None
    if proc_root == "/proc" and (pid == "self" or pid == os.getpid()):
        n -= 1
    return n
