"""Reaping zombies without stealing anyone's exit status.

Only a parent can reap its child, and ``os.waitpid(-1)`` would take statuses that
``subprocess.Popen`` or ``multiprocessing`` are waiting for (``Popen.returncode`` then
reads 0). So zombie children are reaped in this order, each stage counted:

1. ``owned``: memdiag's own entries, through their owner object (``Popen.poll()``,
   ``Process.is_alive()``);
2. ``multiprocessing``: ``multiprocessing.active_children()`` (if it is in use);
3. ``popen_objects``: any other live ``subprocess.Popen`` for that PID, found with one
   ``gc.get_objects()`` pass, through its own ``poll()``;
4. ``unowned``: by exact PID with ``waitpid(pid, WNOHANG)``, only an *adopted orphan*
   that no object owns: a process first seen under another parent and re-parented to us
   (subreaper mode, or PID 1 of a namespace). Nobody else can ever wait for it; the status
   is kept in the events.

Children this process created itself with ``os.fork``, ``os.posix_spawn`` or C code are
never reaped here, however old: the application may ``waitpid`` them later and would get
``ECHILD``. They are counted as ``left_to_application``. (An orphan that was born and
re-parented between two ticks was never seen under its first parent; it is left alone too:
when in doubt, memdiag does not take a status.)

Stages 3 and 4 act only on a zombie that has been one for ``min_age`` seconds: an owner
that reaps at all (asyncio's child watcher, a thread in ``wait()``) does so within
milliseconds, and must not find its child already gone. Zombies whose parent is another
process in the tree cannot be reaped from here; they are reported with their parent.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .._logging import get_logger
from ..probes._io import read_bytes
from ..probes.process import ProcStat
from .ownership import read_identity, registry, waitpid_exact

if TYPE_CHECKING:
    import subprocess

__all__ = ["ZOMBIE_MIN_AGE", "direct_zombies", "reap_zombies", "zombie_age"]

log = get_logger("memdiag.processes")

ZOMBIE_MIN_AGE = 1.0  # seconds a zombie must have been one before a non-owner reaps it

_lock = threading.Lock()
_zombie_since: dict[tuple[int, int], float] = {}  # (pid, start_ticks) -> monotonic first seen
reaped_events: deque[dict[str, Any]] = deque(maxlen=100)
# (pid, start_ticks) of children first seen under another parent and re-parented to us
# (kept by :class:`memdiag.processes.groups.TreeObserver`): the only ones stage 4 reaps.
adopted: set[tuple[int, int]] = set()
totals = {"owned": 0, "multiprocessing": 0, "popen_objects": 0, "unowned": 0}


def note_zombie(pid: int, start_ticks: int, now: float | None = None) -> float:
    """Remember when this zombie was first seen; returns that time."""
    key = (pid, start_ticks)
    with _lock:
        return _zombie_since.setdefault(key, time.monotonic() if now is None else now)


def forget_zombies(keep: set[tuple[int, int]]) -> None:
    """Drop the first-seen times of zombies that are gone."""
    with _lock:
        for key in list(_zombie_since):
            if key not in keep:
                del _zombie_since[key]


def zombie_age(pid: int, start_ticks: int) -> float:
    """Seconds since memdiag first saw this zombie (0 if just now)."""
    return max(0.0, time.monotonic() - note_zombie(pid, start_ticks))


def direct_zombies() -> list[ProcStat]:
    """This process's children that are zombies now."""
    me = os.getpid()
    try:
        tids = os.listdir(f"/proc/{me}/task")
    except OSError:
        return []
    out: list[ProcStat] = []
    for tid in tids:
        for kid in (read_bytes(f"/proc/{me}/task/{tid}/children", 65536) or b"").split():
            st = read_identity(int(kid))
            if st is not None and st.state == "Z" and st.ppid == me:
                out.append(st)
    return out


def _still_zombie(st: ProcStat) -> bool:
    cur = read_identity(st.pid)
    return cur is not None and cur.state == "Z" and cur.start_ticks == st.start_ticks and cur.ppid == os.getpid()


def reap_zombies(*, min_age: float = ZOMBIE_MIN_AGE, dry_run: bool = False) -> dict[str, Any]:
    """Reap this process's zombie children, each through its owner where it has one.

    Args:
        min_age: seconds a zombie must have been one before a non-owner (stages 3, 4)
            reaps it.
        dry_run: only count what would be reaped.

    Returns:
        ``{"count", "by_stage": {...}, "waiting": n, "left_to_application": n, "detail"}``;
        ``waiting`` counts zombies left because they are younger than ``min_age``,
        ``left_to_application`` the application's own raw children (never reaped here).
    """
    zombies = direct_zombies()
    for z in zombies:
        note_zombie(z.pid, z.start_ticks)
    if dry_run:
        return _would_reap(zombies, min_age)
    by_stage = dict.fromkeys(totals, 0)
    left = _reap_through_owners(zombies, by_stage)
    old = [z for z in left if zombie_age(z.pid, z.start_ticks) >= min_age]
    waiting = len(left) - len(old)
    if old:
        old = _reap_through_popen_objects(old, by_stage)
    mine = _reap_adopted(old, by_stage)
    with _lock:
        for k, v in by_stage.items():
            totals[k] += v
    n = sum(by_stage.values())
    return {
        "count": n,
        "by_stage": by_stage,
        "waiting": waiting,
        "left_to_application": len(mine),
        "detail": f"reaped {n} zombie children"
        + (f"; {waiting} younger than {min_age:g}s left to their owners" if waiting else "")
        + (f"; {len(mine)} raw children of the application left for it to wait for" if mine else ""),
    }


def _would_reap(zombies: list[ProcStat], min_age: float) -> dict[str, Any]:
    """The dry run: owned zombies and those old enough for a non-owner."""
    owned = [z for z in zombies if registry.get(z.pid, z.start_ticks) is not None]
    old = [z for z in zombies if z not in owned and zombie_age(z.pid, z.start_ticks) >= min_age]
    n = len(owned) + len(old)
    return {
        "count": n,
        "by_stage": dict.fromkeys(totals, 0),
        "waiting": len(zombies) - n,
        "left_to_application": 0,
        "detail": f"would reap up to {n} zombie children",
    }


def _settle(left: list[ProcStat], by_stage: dict[str, int], stage: str) -> list[ProcStat]:
    """The zombies still left after ``stage``; the others are counted to it."""
    remaining = [z for z in left if _still_zombie(z)]
    by_stage[stage] += len(left) - len(remaining)
    return remaining


def _reap_through_owners(zombies: list[ProcStat], by_stage: dict[str, int]) -> list[ProcStat]:
    """Stages 1 and 2, at any age: memdiag's own entries and multiprocessing's children."""
    left = list(zombies)
    # 1. memdiag's own entries, through their owners.
    if left:
        registry.refresh()
        left = _settle(left, by_stage, "owned")
    # 2. multiprocessing reaps its own when asked for its live children.
    if left and "multiprocessing" in sys.modules:
        import multiprocessing

        multiprocessing.active_children()
        left = _settle(left, by_stage, "multiprocessing")
    return left


def _reap_through_popen_objects(old: list[ProcStat], by_stage: dict[str, int]) -> list[ProcStat]:
    """Stage 3: Popen objects memdiag did not create: let each reap its own child."""
    pids = {z.pid for z in old}
    for obj in _popen_objects(pids):
        try:
            obj.poll()
        except Exception as exc:
            log.debug("Popen(%d).poll() failed: %r", obj.pid, exc)
    return _settle(old, by_stage, "popen_objects")


def _reap_adopted(old: list[ProcStat], by_stage: dict[str, int]) -> list[ProcStat]:
    """Stage 4: adopted orphans no object owns, by exact PID, keeping the status.

    Returns the application's own raw children (fork, posix_spawn, C): its to wait for.
    """
    mine = [z for z in old if (z.pid, z.start_ticks) not in adopted]
    for z in old:
        if z in mine or not _still_zombie(z):
            continue
        rc = waitpid_exact(z.pid)
        if rc is not None:
            by_stage["unowned"] += 1
            reaped_events.append(
                {"time": time.time(), "pid": z.pid, "name": z.name, "returncode": rc, "how": "waitpid"}
            )
            log.info("reaped unowned zombie child %d (%s), exit status %d", z.pid, z.name, rc)
    return mine


def _popen_objects(pids: set[int]) -> list[subprocess.Popen[Any]]:
    """Live ``Popen`` objects for these PIDs that have not seen their exit yet.

    One ``gc.get_objects()`` pass (~15 ms per million objects); only run when an old
    zombie child is left after the cheaper stages.
    """
    from ..probes.python import exclusive_gil, tracked_objects

    sp = sys.modules.get("subprocess")  # not imported: no Popen object exists
    if sp is None:
        return []
    with exclusive_gil():  # other threads must not run while the list holds references
        found = [
            obj
            for obj in tracked_objects()[0]
            if isinstance(obj, sp.Popen) and obj.pid in pids and obj.returncode is None
        ]
    return found
