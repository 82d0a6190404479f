"""The process tree as a report: groups, ownership, zombies, appear/exit events.

:class:`TreeObserver` sees every sample the monitor takes (a registered sample
observer, :func:`memdiag.registry.register_observer`) and turns consecutive
``Sample.children`` into events: a descendant appeared, exited, left the tree
(re-parented away), or was adopted (re-parented to us under subreaper mode). In
subreaper mode it also reaps adopted orphans once they exit. It costs a dict
diff per tick (~20 us for 100 descendants).

A descendant that starts and exits between two ticks is never seen by the walker; owned
processes are recorded by the ownership registry whatever their lifetime.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from .._logging import get_logger
from . import reap
from .ownership import add_extra_root, owner_of, prune_extra_roots, read_identity, registry, waitpid_exact
from .subreaper import is_child_subreaper, subreaper_mode

if TYPE_CHECKING:
    from ..sample import Sample

__all__ = ["TreeObserver", "add_extra_root", "decorate_subprocesses", "observer", "processes_section"]

log = get_logger("memdiag.processes")


class TreeObserver:
    """Turns successive samples of the tree into events; reaps adopted orphans."""

    def __init__(self, max_events: int = 200) -> None:
        self._lock = threading.Lock()
        self._known: dict[tuple[int, int], list[Any]] = {}  # key -> [ppid, name, first_seen, peak_rss]
        self._last = 0.0
        self.adopted = reap.adopted  # one set: the zombie rung reaps only these
        self.events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self.counts = {"appeared": 0, "exited": 0, "left": 0, "adopted": 0, "reaped_adopted": 0}

    def observe(self, sample: Sample) -> None:
        """Feed one sample (older or repeated samples, from a second monitor, are ignored)."""
        with self._lock:
            if sample.monotonic <= self._last:
                return
            self._last = sample.monotonic
            self._observe(sample)
        prune_extra_roots()

    def _observe(self, sample: Sample) -> None:
        me = os.getpid()
        now = sample.time
        known = self._known
        current = {}
        zombies = set()
        for c in sample.children:
            key = (c.pid, c.start_ticks)
            current[key] = c
            rec = known.get(key)
            if rec is None:
                known[key] = [c.ppid, c.name, now, c.rss_bytes]
                self._event(now, "appeared", c.pid, c.name, ppid=c.ppid, depth=c.depth)
            else:
                if rec[0] != c.ppid:
                    if c.ppid == me:
                        self.adopted.add(key)
                        self._event(now, "adopted", c.pid, c.name, previous_ppid=rec[0])
                    rec[0] = c.ppid
                if c.rss_bytes > rec[3]:
                    rec[3] = c.rss_bytes
            if c.state == "Z":
                zombies.add(key)
                reap.note_zombie(c.pid, c.start_ticks)
        for key in known.keys() - current.keys():
            _, name, first, peak = known.pop(key)
            self.adopted.discard(key)
            pid, start = key
            st = read_identity(pid)
            if st is not None and st.start_ticks == start and st.state != "Z":
                self._event(now, "left", pid, name, ppid=st.ppid, lifetime_seconds=round(now - first, 3))
                continue
            extra: dict[str, Any] = {"lifetime_seconds": round(now - first, 3), "peak_rss_bytes": peak}
            for d in reversed(registry.exited):
                if d["pid"] == pid and d["start_ticks"] == start:
                    extra["returncode"] = d["returncode"]
                    extra["role"] = d["role"]
                    break
            self._event(now, "exited", pid, name, **extra)
        reap.forget_zombies(zombies)
        if subreaper_mode():
            self._reap_adopted(zombies & self.adopted, current, now)

    def _reap_adopted(self, keys: set[tuple[int, int]], current: dict[Any, Any], now: float) -> None:
        me = os.getpid()
        for key in keys:
            c = current[key]
            if c.ppid != me or owner_of(c.pid, c.start_ticks) is not None:
                continue
            st = read_identity(c.pid)
            if st is None or st.start_ticks != c.start_ticks or st.state != "Z" or st.ppid != me:
                continue
            rc = waitpid_exact(c.pid)
            if rc is not None:
                self.counts["reaped_adopted"] += 1
                self.adopted.discard(key)
                self._event(now, "reaped", c.pid, c.name, returncode=rc, how="subreaper")

    def _event(self, now: float, kind: str, pid: int, name: str, **fields: Any) -> None:
        if kind in self.counts:
            self.counts[kind] += 1
        self.events.append({"time": now, "event": kind, "pid": pid, "name": name, **fields})

    def recent(self, n: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)[-n:]

    def reset(self) -> None:
        """After fork: the child's tree is its own."""
        self._lock = threading.Lock()
        self._known = {}
        self.adopted.clear()
        self.events.clear()
        self._last = 0.0


observer = TreeObserver()


def _reset_after_fork() -> None:
    """A forked child's tree is its own."""
    observer.reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


# -- reports ------------------------------------------------------------------------------


def decorate_subprocesses(items: list[dict[str, Any]]) -> None:
    """Add ownership, role, limits, Node.js heaps and zombie parents to ``subprocesses()``."""
    by_pid = {it["pid"]: it for it in items}
    node_heaps = _node_heaps()
    for it in items:
        entry = owner_of(it["pid"])
        if entry is not None and not entry.is_same_process():
            entry = None  # the PID now names a successor
        it["owned"] = entry is not None
        it["role"] = entry.role if entry else None
        it["group"] = entry.group if entry else None
        it["kind"] = entry.kind if entry else None
        it["memory_limit_bytes"] = entry.memory_limit_bytes if entry else None
        it["node"] = node_heaps.get(it["pid"])
        if it.get("zombie"):
            parent = by_pid.get(it["ppid"])
            it["parent"] = {
                "pid": it["ppid"],
                "name": parent["name"] if parent else ("this process" if it["ppid"] == os.getpid() else None),
                "owned": bool(parent and owner_of(it["ppid"]) is not None),
            }


def _node_heaps() -> dict[int, dict[str, Any]]:
    mod = sys.modules.get("memdiag.processes.node")
    return mod.heaps() if mod is not None else {}


def _pools() -> list[dict[str, Any]]:
    mod = sys.modules.get("memdiag.processes.pool")
    return mod.pool_stats() if mod is not None else []


def processes_section(diag: Any) -> dict[str, Any]:
    """The ``processes`` section of ``diagnostics()``."""
    s = diag.last_sample
    if s is None:
        s, _ = diag.tick(profile=False)
    deep = diag.last_profile.child_memory if diag.last_profile is not None else {}
    cfg = diag.config
    groups, own_z, foreign_z, owned_n = _group_children(s.children, deep)
    threshold = cfg.subprocess_threshold_bytes
    total = s.children_rss
    return {
        "totals": {
            "descendants": len(s.children),
            "live": len(s.children) - s.zombies,
            "zombies": s.zombies,
            "owned": owned_n,
            "rss_bytes": total,
            "threshold_bytes": threshold,
            "percent_of_threshold": round(100.0 * total / threshold, 2),
            "child_limit_bytes": cfg.child_limit_bytes,
        },
        "groups": sorted(groups, key=lambda g: -g["rss_bytes"]),
        "zombies": {"own": own_z, "foreign": foreign_z},
        "owned": [e.to_dict() for e in registry.entries()],
        "recently_exited_owned": list(registry.exited)[-20:],
        "events": observer.recent(50),
        "event_counts": dict(observer.counts),
        "reaped": {**reap.totals, "adopted": observer.counts["reaped_adopted"]},
        "unowned_reaped": list(reap.reaped_events)[-20:],
        "subreaper": is_child_subreaper(),
        "pools": _pools(),
        "node": list(_node_heaps().values()),
        "sampled_at": s.time,
    }


def _group_children(
    children: Any, deep: dict[int, dict[str, int]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], int]:
    """``(groups, own zombies, foreign zombies, owned count)`` of the descendants: one group
    per name and role, live memory (USS/PSS from the profile tick's ``deep``) summed."""
    me = os.getpid()
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    own_z, foreign_z = [], []
    names = {c.pid: c.name for c in children}
    owned_n = 0
    for c in children:
        entry = owner_of(c.pid, c.start_ticks)
        owned_n += entry is not None
        role = entry.role if entry and entry.role else ("owned" if entry else "unowned")
        g = groups.setdefault((c.name, role), _new_group(c.name, role))
        g["count"] += 1
        g["owned"] += entry is not None
        if len(g["pids"]) < 20:
            g["pids"].append(c.pid)
        if c.state == "Z":
            g["zombies"] += 1
            (own_z if c.ppid == me else foreign_z).append(_zombie(c, entry is not None, names, me))
            continue
        g["live"] += 1
        g["rss_bytes"] += c.rss_bytes
        mem = deep.get(c.pid)
        if mem:
            g["uss_bytes"] += mem.get("uss", 0)
            g["pss_bytes"] += mem.get("pss", 0)
    return list(groups.values()), own_z, foreign_z, owned_n


def _new_group(name: str, role: str) -> dict[str, Any]:
    return {
        "name": name,
        "role": role,
        "count": 0,
        "live": 0,
        "zombies": 0,
        "owned": 0,
        "rss_bytes": 0,
        "uss_bytes": 0,
        "pss_bytes": 0,
        "pids": [],
    }


def _zombie(c: Any, owned: bool, names: dict[int, str], me: int) -> dict[str, Any]:
    """A zombie descendant; with its parent when that is not this process."""
    z: dict[str, Any] = {
        "pid": c.pid,
        "name": c.name,
        "owned": owned,
        "age_seconds": round(reap.zombie_age(c.pid, c.start_ticks), 3),
    }
    if c.ppid != me:
        z["parent"] = {"pid": c.ppid, "name": names.get(c.ppid), "owned": owner_of(c.ppid) is not None}
    return z
