"""Object census: which types of GC-tracked objects there are, and which grow.

A census counts the objects the garbage collector tracks, by type (``gc.get_objects()``
plus a C-level count: ~30 ms per 600k objects). It runs on profile ticks and at the
edges of a tracing window. Beyond ``max_objects`` objects it counts an even sample and
scales up, so its cost stays bounded on huge heaps.

Only containers and instances are GC-tracked: a leak of ``bytes`` or ``str`` shows as the
``list``/``dict`` that holds them, which :func:`container_lengths` finds by its length.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from .._record import record
from ..probes.python import exclusive_gil, tracked_objects

__all__ = ["CONTAINER_TYPES", "CensusHistory", "container_lengths", "type_census", "type_name"]

# Containers whose length we follow; their subclasses are listed because the check is
# ``type(o) in CONTAINER_TYPES`` (an exact, fast test).
CONTAINER_TYPES: frozenset[type] = frozenset(
    {list, dict, set, collections.deque, collections.OrderedDict, collections.defaultdict}
)


def type_name(t: type) -> str:
    """``module.QualName`` of a type (``builtins.`` omitted)."""
    mod = getattr(t, "__module__", None) or "?"
    qual = getattr(t, "__qualname__", None) or getattr(t, "__name__", "?")
    return str(qual) if mod == "builtins" else f"{mod}.{qual}"


def type_census(objects: list[Any] | None = None, *, max_objects: int = 1_000_000) -> dict[type, int]:
    """Count GC-tracked objects by type.

    Args:
        objects: a ``gc.get_objects()`` list to reuse; taken here if ``None``.
        max_objects: above this many objects, count every k-th and scale by k.
    """
    if objects is None:
        # Counted in the same pass that takes the list, tuples under construction included
        # (see tracked_objects); exclusive_gil keeps finalizers off.
        with exclusive_gil():
            counts = tracked_objects(count=True)[1]
        return counts or {}
    return _count(objects, max_objects)


def _count(objs: list[Any], max_objects: int) -> dict[type, int]:
    step = max(1, -(-len(objs) // max_objects))
    counts = Counter(map(type, objs if step == 1 else objs[::step]))
    if step > 1:
        for t in counts:
            counts[t] *= step
    return dict(counts)


def container_lengths(objects: Iterable[Any], min_len: int) -> dict[int, tuple[type, int]]:
    """``{id: (type, len)}`` of the containers holding at least ``min_len`` items."""
    types = CONTAINER_TYPES
    return {id(o): (type(o), len(o)) for o in objects if type(o) in types and len(o) >= min_len}


@record
class _Census:
    time: float
    counts: dict[str, int]
    total: int
    seconds: float


class CensusHistory:
    """The last censuses (top types only), and which types keep growing.

    Args:
        keep: censuses kept.
        top: types kept per census (by count), plus every type already being followed.
    """

    def __init__(self, keep: int = 30, top: int = 40) -> None:
        self._ring: deque[_Census] = deque(maxlen=keep)
        self.top = top

    def take(self, objects: list[Any] | None = None) -> dict[str, int]:
        """Take a census now and remember it; returns ``{type name: count}``."""
        t0 = time.perf_counter()
        counts = type_census(objects)
        followed = set(self._ring[-1].counts) if self._ring else set()
        ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
        kept: dict[str, int] = {}
        for t, c in ranked[: self.top]:
            kept[type_name(t)] = c
        if followed:
            for t, c in counts.items():
                name = type_name(t) if c >= 100 else None  # naming every rare type is waste
                if name in followed:
                    kept[name] = c
        self._ring.append(_Census(time.time(), kept, sum(counts.values()), time.perf_counter() - t0))
        return kept

    def __len__(self) -> int:
        return len(self._ring)

    @property
    def last_seconds(self) -> float | None:
        return self._ring[-1].seconds if self._ring else None

    def report(self, limit: int = 20) -> list[dict[str, Any]]:
        """Types by growth since the oldest kept census, then by count.

        ``growing`` means the count rose at every one of the last three censuses (or all
        of them, if fewer) by at least 1% in total and by at least 100 objects.
        """
        if not self._ring:
            return []
        last = self._ring[-1]
        first = self._ring[0]
        span_min = (last.time - first.time) / 60.0
        recent = list(self._ring)[-4:]
        rows = []
        for name, count in last.counts.items():
            base = first.counts.get(name)
            delta = None if base is None else count - base
            path = [c.counts.get(name) for c in recent]
            steady = len(path) >= 3 and all(
                a is not None and b is not None and b > a for a, b in itertools.pairwise(path)
            )
            growing = bool(steady and delta is not None and delta >= max(100, 0.01 * count))
            rows.append(
                {
                    "type": name,
                    "count": count,
                    "delta": delta,
                    "per_min": round(delta / span_min, 1) if delta is not None and span_min > 0 else None,
                    "growing": growing,
                }
            )
        rows.sort(key=lambda r: (r["growing"], r["delta"] or 0, r["count"]), reverse=True)
        return rows[:limit]

    def growing_types(self) -> list[dict[str, Any]]:
        return [r for r in self.report(limit=1000) if r["growing"]]

    def clear(self) -> None:
        self._ring.clear()
