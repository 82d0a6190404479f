"""Which processes the service owns, and how to name one without a PID-reuse race.

A process is *owned* when it was started through memdiag (:class:`memdiag.Popen`,
:func:`memdiag.spawn_node`, :class:`memdiag.MemoryAwarePool`) or handed to
:func:`track`. Only owned processes in this service's own tree are ever signalled.

A PID alone does not name a process: once reaped, the number is free for the next fork.
Each entry keeps the process's identity, ``(pid, start_ticks)`` (the start time from
``/proc/PID/stat``), and, where the kernel has them (Linux 5.3+), a *pidfd*: a descriptor
that refers to that one process, so ``pidfd_send_signal`` can never reach a successor
that got the same number.

Without pidfd (kernels before 5.3, or a Python without ``os.pidfd_open``), the start
ticks are not enough: they count 1/100 s, and a PID reused within one tick has the same
identity (issue 16, reproduced with ``ns_last_pid``). The entry then keeps a descriptor on
the ``/proc/PID`` directory instead: it stays bound to that one process, and every lookup
through it fails with ``ESRCH`` once the process is reaped, even if the number was handed
out again. It is checked immediately before each ``kill``; what is left is the
microseconds between that check and the ``kill`` system call, against a reaping in another
thread (documented in SECURITY.md).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import weakref
from collections import deque
from typing import Any

from .. import registry as _core_registry
from .._logging import get_logger
from .._record import field, mutable_record
from ..probes._io import read_bytes
from ..probes.process import ProcStat, parse_stat
from ..units import MIB

__all__ = [
    "OwnedProcess",
    "add_extra_root",
    "is_descendant",
    "owned_processes",
    "owner_of",
    "prune_extra_roots",
    "read_identity",
    "registry",
    "track",
]

log = get_logger("memdiag.processes")


def read_identity(pid: int, proc_root: str = "/proc") -> ProcStat | None:
    """The process's ``/proc/PID/stat`` (state, parent, start ticks), or ``None`` if gone."""
    return parse_stat(pid, read_bytes(f"{proc_root}/{pid}/stat", 4096))


def is_descendant(pid: int, root: int | None = None, proc_root: str = "/proc") -> bool:
    """True if ``pid`` is ``root`` (default: this process) or one of its descendants now."""
    root = os.getpid() if root is None else root
    cur = pid
    for _ in range(64):  # deeper trees than this are not ours to judge
        if cur == root:
            return True
        if cur <= 1:
            return False
        st = read_identity(cur, proc_root)
        if st is None:
            return False
        cur = st.ppid
    return False


def _pidfd_open(pid: int) -> int:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return -1
    try:
        return int(opener(pid))
    except OSError:  # ENOSYS on old kernels, ESRCH if already reaped
        return -1


def _kill(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _procfd_open(pid: int, proc_root: str = "/proc") -> int:
    """A descriptor on ``/proc/PID`` (the identity handle where there is no pidfd), or -1."""
    try:
        return os.open(f"{proc_root}/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return -1


def _procfd_start_ticks(procfd: int) -> int | None:
    """The start ticks of the process ``procfd`` was opened on; None once it is reaped."""
    try:
        fd = os.open("stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=procfd)
    except OSError:  # ESRCH: that process is gone, whoever has the number now
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    st = parse_stat(0, data)
    return st.start_ticks if st is not None else None


@mutable_record(eq=False)
class OwnedProcess:
    """One owned process: its identity, its owner object and how it may be signalled.

    Attributes:
        pid: the process ID.
        start_ticks: start time in clock ticks since boot; with ``pid``, the identity.
        kind: how it became owned: "popen", "multiprocessing", "pid", "pool", "node".
        role: a free label for grouping in reports ("worker", "node", "ffmpeg", ...).
        group: a second label (the pool or service part it belongs to).
        process_group: it leads its own process group, which is signalled as a unit.
        memory_limit_bytes: its own RSS limit (``None``: the config's ``child_limit_mb``).
        expendable: the owned-children rung may terminate it in an emergency even when
            it is under its limit.
        started_at: epoch seconds when memdiag started or adopted it.
        returncode: its exit status once reaped (negative: killed by that signal).
    """

    pid: int
    start_ticks: int | None
    kind: str
    role: str | None = None
    group: str | None = None
    process_group: bool = False
    memory_limit_bytes: int | None = None
    expendable: bool = False
    started_at: float = field(default_factory=time.time)
    returncode: int | None = None
    _owner: weakref.ref[Any] | None = field(default=None, repr=False)
    _pidfd: int = field(default=-1, repr=False)
    _procfd: int = field(default=-1, repr=False)  # /proc/PID, only where there is no pidfd
    # Guards the descriptors: close() from one thread while another signals through them
    # must never close a number twice (it may already name someone else's socket).
    _fd_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def owner(self) -> Any:
        """The object that reaps it (a ``Popen`` or ``multiprocessing.Process``), if alive."""
        return self._owner() if self._owner is not None else None

    @property
    def identity(self) -> tuple[int, int | None]:
        return (self.pid, self.start_ticks)

    @property
    def has_pidfd(self) -> bool:
        return self._pidfd >= 0

    @property
    def handle(self) -> str:
        """How it is named when signalled: "pidfd", "procfd" or "start_ticks" (weakest)."""
        return "pidfd" if self._pidfd >= 0 else "procfd" if self._procfd >= 0 else "start_ticks"

    def is_same_process(self, proc_root: str = "/proc") -> bool:
        """True while ``pid`` still names this process (alive or a zombie, not a successor)."""
        if proc_root == "/proc":
            with self._fd_lock:
                if self._procfd >= 0:
                    ticks = _procfd_start_ticks(self._procfd)
                    return ticks is not None and (self.start_ticks is None or ticks == self.start_ticks)
        st = read_identity(self.pid, proc_root)
        return st is not None and (self.start_ticks is None or st.start_ticks == self.start_ticks)

    def send_signal(self, sig: int) -> bool:
        """Signal exactly this process; False if it is gone (never a reused PID).

        Uses the pidfd where there is one. Without one, the identity is verified through
        the ``/proc/PID`` descriptor (bound to this process, not to the number)
        immediately before ``kill``.
        """
        with self._fd_lock:
            if self._pidfd >= 0:
                try:
                    signal.pidfd_send_signal(self._pidfd, sig)
                    return True
                except ProcessLookupError:
                    return False
            if self._procfd >= 0:
                ticks = _procfd_start_ticks(self._procfd)
                if ticks is None or (self.start_ticks is not None and ticks != self.start_ticks):
                    return False
                return _kill(self.pid, sig)
        if not self.is_same_process():
            return False
        return _kill(self.pid, sig)

    def signal_group(self, sig: int) -> bool:
        """Signal its whole process group, only while the leader is provably this process.

        The group ID is the leader's PID; while the leader is unreaped (checked through the
        pidfd, or the identity) that ID cannot name anyone else's group.
        """
        if not self.send_signal(0):
            return False
        try:
            os.killpg(self.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def poll(self) -> int | None:
        """Reap it through its owner if it has exited; its return code, else ``None``.

        Never calls ``waitpid(-1)``: a ``Popen`` owner reaps with ``poll()`` (so its
        ``returncode`` stays right), a ``multiprocessing`` owner with ``is_alive()``,
        and an entry with no owner object by its exact PID, only if it is our child.
        """
        if self.returncode is not None:
            return self.returncode
        owner = self.owner
        if owner is not None:
            if hasattr(owner, "poll"):
                rc = owner.poll()
            else:
                owner.is_alive()  # multiprocessing reaps here
                rc = owner.exitcode
            if rc is not None:
                self.returncode = rc
            return rc
        st = read_identity(self.pid)
        if st is None or (self.start_ticks is not None and st.start_ticks != self.start_ticks):
            # Gone (reaped elsewhere, or it was never our child): no status to be had.
            self.returncode = self.returncode if self.returncode is not None else _UNKNOWN
            return self.returncode
        if st.state == "Z" and st.ppid == os.getpid():
            rc = waitpid_exact(self.pid)
            if rc is not None:
                self.returncode = rc
            return rc
        return None

    def close(self) -> None:
        with self._fd_lock:
            fds, self._pidfd, self._procfd = (self._pidfd, self._procfd), -1, -1
        for fd in fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "kind": self.kind,
            "role": self.role,
            "group": self.group,
            "process_group": self.process_group,
            "memory_limit_bytes": self.memory_limit_bytes,
            "expendable": self.expendable,
            "started_at": self.started_at,
            "returncode": None if self.returncode == _UNKNOWN else self.returncode,
            "pidfd": self.has_pidfd,
            "handle": self.handle,
        }


# The return code recorded for an owned process that vanished without us seeing its
# status (someone else reaped it). Never shown as a number: to_dict() gives None.
_UNKNOWN = -(1 << 30)


def waitpid_exact(pid: int) -> int | None:
    """Reap one child by its exact PID without blocking; its return code, else ``None``.

    The status is converted like ``Popen.returncode``: the exit code, or ``-signal``.
    """
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if got == 0:
        return None
    return os.waitstatus_to_exitcode(status)


class _Registry:
    """The process-wide table of owned processes, keyed by PID (one live process each)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[int, OwnedProcess] = {}
        self.exited: deque[dict[str, Any]] = deque(maxlen=100)
        self.counts = {"owned_total": 0, "exited": 0}

    def add(self, entry: OwnedProcess) -> OwnedProcess:
        with self._lock:
            old = self._live.get(entry.pid)
            if old is not None and old is not entry:
                old.close()  # a stale entry for a reused PID
            self._live[entry.pid] = entry
            self.counts["owned_total"] += 1
        return entry

    def get(self, pid: int, start_ticks: int | None = None) -> OwnedProcess | None:
        """The live entry for exactly this process (``start_ticks`` checked when given)."""
        e = self._live.get(pid)
        if e is None:
            return None
        if start_ticks is not None and e.start_ticks is not None and e.start_ticks != start_ticks:
            return None
        return e

    def entries(self) -> list[OwnedProcess]:
        with self._lock:
            return list(self._live.values())

    def finish(self, entry: OwnedProcess) -> None:
        """Forget an entry whose process has been reaped (or vanished), keeping its status."""
        with self._lock:
            if self._live.get(entry.pid) is entry:
                del self._live[entry.pid]
            else:
                return
            self.counts["exited"] += 1
        d = entry.to_dict()
        d["exited_at"] = time.time()
        entry.close()
        self.exited.append(d)

    def refresh(self) -> int:
        """Poll every entry (reaping through owners); forget the finished. Returns how many."""
        done = 0
        for e in self.entries():
            try:
                rc = e.poll()
            except Exception as exc:  # an owner object in a strange state: leave it
                log.debug("polling owned pid %d failed: %r", e.pid, exc)
                continue
            if rc is not None:
                self.finish(e)
                done += 1
        return done

    def _after_fork_in_child(self) -> None:
        # The child owns none of its parent's children (it cannot reap them).
        self._lock = threading.Lock()
        for e in self._live.values():
            e.close()
        self._live = {}
        self.exited.clear()


registry = _Registry()

_extra_roots: set[int] = set()  # the walk roots added for tracked outsiders
_roots_lock = threading.Lock()


def add_extra_root(pid: int) -> None:
    """Have every monitor's walker also follow ``pid`` (a tracked process outside our tree)."""
    with _roots_lock:
        _extra_roots.add(pid)
    _core_registry.add_walk_root(pid)


def prune_extra_roots() -> None:
    """Drop the walk roots whose processes are no longer tracked (ended or forgotten)."""
    if not _extra_roots:
        return
    live = {e.pid for e in registry.entries()}
    with _roots_lock:
        gone = _extra_roots - live
        _extra_roots.difference_update(gone)
    for pid in gone:
        _core_registry.discard_walk_root(pid)


def _after_fork_in_child() -> None:
    """A forked child owns none of its parent's children or tracked outsiders."""
    global _roots_lock
    registry._after_fork_in_child()
    _roots_lock = threading.Lock()
    for pid in list(_extra_roots):
        _core_registry.discard_walk_root(pid)
    _extra_roots.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def owned_processes() -> list[OwnedProcess]:
    """The live owned processes (not yet reaped), oldest first."""
    return registry.entries()


def owner_of(pid: int, start_ticks: int | None = None) -> OwnedProcess | None:
    """The owned entry for this exact process, or ``None`` if it is not owned."""
    return registry.get(pid, start_ticks)


def track(
    target: Any,
    *,
    role: str | None = None,
    group: str | None = None,
    memory_limit_mb: float | None = None,
    expendable: bool = False,
    kind: str | None = None,
) -> OwnedProcess:
    """Take ownership of a process started some other way.

    Owned processes are shown as owned in reports, reaped through their owner object,
    and may be terminated by memdiag (explicitly, or by the owned-children cleanup rung
    when over their limit), per ``terminate_policy``. A process outside this service's
    tree may be tracked for reports but is never signalled.

    Args:
        target: a ``subprocess.Popen``, a started ``multiprocessing.Process``, or a PID.
        role: a label for grouping in reports.
        group: a second label (e.g. the pool or component).
        memory_limit_mb: this process's own RSS limit.
        expendable: may be terminated in an emergency even under its limit.
        kind: overrides the recorded kind ("pool", "node", ...).

    Returns:
        The :class:`OwnedProcess` entry.

    Raises:
        ProcessLookupError: the process does not exist (or was already reaped).
        ValueError: ``target`` is not a Popen, a started Process or a PID.
    """
    pid, owner, k = _identify(target)
    existing = registry.get(pid)
    st, pidfd, procfd = _identity_and_handles(pid, existing)
    if st is None:
        raise ProcessLookupError(f"no process {pid}")
    if existing is not None and existing.start_ticks == st.start_ticks:
        return _relabel(existing, owner, role, group, memory_limit_mb, expendable)
    entry = OwnedProcess(
        pid=pid,
        start_ticks=st.start_ticks,
        kind=kind or k,
        role=role,
        group=group,
        process_group=st.pgrp == pid,
        memory_limit_bytes=int(memory_limit_mb * MIB) if memory_limit_mb is not None else None,
        expendable=expendable,
        _owner=weakref.ref(owner) if owner is not None else None,
        _pidfd=pidfd,
        _procfd=procfd,
    )
    registry.add(entry)
    if not is_descendant(pid):
        # Outside our tree: the walker must be told where to look, and we never signal it.
        add_extra_root(pid)
    return entry


def _identify(target: Any) -> tuple[int, Any, str]:
    """``(pid, owner object or None, kind)`` of what :func:`track` was given."""
    if isinstance(target, int) and not isinstance(target, bool):
        return target, None, "pid"
    if hasattr(target, "poll") and isinstance(getattr(target, "pid", None), int):
        return target.pid, target, "popen"
    if hasattr(target, "is_alive") and hasattr(target, "exitcode"):
        if target.pid is None:
            raise ValueError("track(): the multiprocessing.Process has not been started")
        return int(target.pid), target, "multiprocessing"
    raise ValueError(f"track() takes a Popen, a multiprocessing.Process or a PID, not {type(target).__name__}")


def _identity_and_handles(pid: int, existing: OwnedProcess | None) -> tuple[ProcStat | None, int, int]:
    """``(identity, pidfd, procfd)`` of ``pid``; no handles (-1) when the process is gone
    or is the ``existing`` entry already."""
    # Open the pidfd first, then read the identity: if the PID was reused before the
    # open, the identity read afterwards is the successor's, and so is the pidfd.
    # Without pidfd, the /proc/PID descriptor plays its part (opened before the read too).
    pidfd = _pidfd_open(pid)
    procfd = _procfd_open(pid) if pidfd < 0 else -1
    st = read_identity(pid)
    if st is None or (existing is not None and existing.start_ticks == st.start_ticks):
        for fd in (pidfd, procfd):
            if fd >= 0:
                os.close(fd)
        return st, -1, -1
    return st, pidfd, procfd


def _relabel(
    existing: OwnedProcess,
    owner: Any,
    role: str | None,
    group: str | None,
    memory_limit_mb: float | None,
    expendable: bool,
) -> OwnedProcess:
    """Re-tracking updates the labels; the first owner object wins."""
    existing.role = role or existing.role
    existing.group = group or existing.group
    if memory_limit_mb is not None:
        existing.memory_limit_bytes = int(memory_limit_mb * MIB)
    existing.expendable = existing.expendable or expendable
    if existing._owner is None and owner is not None:
        existing._owner = weakref.ref(owner)
    return existing
