"""The process rungs of the cleanup ladder and the owned-process pressure signal.

* ``zombies`` (order 40): reap zombie children through their owners
  (:func:`memdiag.processes.reap.reap_zombies`), counted per stage.
* ``owned_children`` (order 60, emergencies only): terminate owned processes over their
  memory limit (their own, else ``child_limit_mb``) and owned processes marked
  ``expendable``; recycle the idle workers of memory-aware pools. Only when
  ``terminate_policy`` is "owned"; never a process outside the tree.

The Node.js GC rung (order 50) lives in :mod:`memdiag.processes.node`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ..config import MemoryConfig, active_config
from ..probes.process import read_statm_rss
from ..registry import CleanupContext, SignalReading
from .ownership import is_descendant, owner_of, registry
from .reap import reap_zombies
from .terminate import stop_entries

if TYPE_CHECKING:
    from ..sample import Sample

__all__ = ["owned_children_rung", "owned_limit_signal", "zombies_rung"]


def zombies_rung(ctx: CleanupContext) -> dict[str, Any]:
    res = reap_zombies(dry_run=ctx.dry_run)
    return {"count": res["count"], "detail": res["detail"]}


def _limit(entry_limit: int | None, cfg: MemoryConfig) -> int | None:
    if entry_limit is not None:
        return entry_limit
    return cfg.child_limit_bytes


def owned_children_rung(ctx: CleanupContext) -> dict[str, Any]:
    # The configuration of the ladder running this rung (the active one when called bare).
    cfg = ctx.config or active_config()
    if cfg.terminate_policy != "owned":
        return {"count": 0, "detail": f"terminate_policy is {cfg.terminate_policy!r}: nothing terminated"}
    victims = []
    freed = 0
    for e in registry.entries():
        if e.kind == "pool":
            continue  # its pool recycles it between tasks (below), never mid-task
        rss = read_statm_rss(e.pid)
        if rss is None or not e.is_same_process() or not is_descendant(e.pid):
            continue
        limit = _limit(e.memory_limit_bytes, cfg)
        if (limit is not None and rss > limit) or e.expendable:
            victims.append(e)
            freed += rss
    pool_count = pool_bytes = 0
    pool_mod = sys.modules.get("memdiag.processes.pool")
    if pool_mod is not None:
        pool_count, pool_bytes = pool_mod.recycle_idle_workers(dry_run=ctx.dry_run)
    names = ", ".join(f"{e.pid} ({e.role})" for e in victims) or "none"
    if ctx.dry_run:
        return {
            "would_free_bytes": freed + pool_bytes,
            "scope": "children",
            "count": len(victims) + pool_count,
            "detail": f"would terminate: {names}; would recycle {pool_count} idle pool workers",
        }
    results = stop_entries(victims, config=cfg) if victims else []
    done = [r for r in results if r["exited"]]
    return {
        "freed_bytes": freed + pool_bytes,
        "scope": "children",  # the children's RSS, measured before they went
        "count": len(done) + pool_count,
        "detail": f"terminated: {names}; recycled {pool_count} idle pool workers",
    }


def owned_limit_signal(sample: Sample, cfg: MemoryConfig) -> list[SignalReading]:
    """The owned child nearest its own memory limit (only children given one)."""
    worst: tuple[float, SignalReading] | None = None
    for c in sample.children:
        if c.state == "Z":
            continue
        e = owner_of(c.pid, c.start_ticks)
        if e is None or e.memory_limit_bytes is None:
            continue
        limit = float(e.memory_limit_bytes)
        ratio = c.rss_bytes / limit
        if worst is None or ratio > worst[0]:
            r = SignalReading(
                "owned_child_limit",
                float(c.rss_bytes),
                limit * cfg.warning_ratio,
                limit,
                "bytes",
                f"pid {c.pid} ({e.role or c.name})",
            )
            worst = (ratio, r)
    return [worst[1]] if worst else []
