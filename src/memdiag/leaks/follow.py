"""Following the containers a tracing window named: do they keep growing?

A tracing window sees seconds; a cache warming up and a leak look alike in it (a
container growing with items allocated at one line). What tells them apart is what
happens next: a cache reaches its size and stops, a leak goes on. After a window, the
few containers it named are found again every ``interval`` seconds by identity in
``gc.get_objects()`` (no reference is held, so memdiag never keeps one alive) and their
lengths recorded. A container that grew over the last confirmation period is a leak's
anchor; one that stopped, or was freed, is not.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from ..probes.python import exclusive_gil, tracked_objects
from .census import CONTAINER_TYPES, type_name

__all__ = ["ContainerFollower"]

MAX_FOLLOWED = 5


class ContainerFollower:
    """The lengths over time of the containers recent tracing windows named."""

    def __init__(self) -> None:
        self._items: dict[int, dict[str, Any]] = {}
        self._sampled_at = 0.0
        self.last_seconds: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, container: dict[str, Any], site: dict[str, Any] | None, window: dict[str, Any]) -> None:
        """Follow a container from a window's ``growing_containers`` (with its site, if any)."""
        oid = container.get("object_id")
        if oid is None or container.get("file") is None:
            return
        t_end = float(window.get("ended_at") or time.time())
        item = self._items.get(oid)
        if item is None or item["type"] != container["type"]:
            if len(self._items) >= MAX_FOLLOWED:
                return
            item = {"type": container["type"], "lens": deque(maxlen=256), "since": t_end}
            self._items[oid] = item
        item.update(container=container, site=site, window_id=window.get("id"))
        item["lens"].append((t_end, int(container["len_end"])))

    def sample(self, now: float, interval: float) -> None:
        """Find the followed containers again and record their lengths (at most every ``interval`` s)."""
        if not self._items or now - self._sampled_at < interval:
            return
        self._sampled_at = now
        t0 = time.perf_counter()
        wanted = self._items
        seen: dict[int, tuple[str, int]] = {}
        types = CONTAINER_TYPES
        with exclusive_gil():  # the fallback's safety; finalizers stay off (see tracked_objects)
            for o in tracked_objects()[0]:
                if type(o) in types and id(o) in wanted:
                    seen[id(o)] = (type_name(type(o)), len(o))
            o = None
        for oid in list(wanted):
            got = seen.get(oid)
            if got is None or got[0] != wanted[oid]["type"]:
                del wanted[oid]  # freed (or its id reused): not a leak's anchor any more
            else:
                wanted[oid]["lens"].append((now, got[1]))
        self.last_seconds = time.perf_counter() - t0

    def growing(self, now: float, confirm: float) -> list[dict[str, Any]]:
        """Containers followed for at least ``confirm`` s that grew over the last ``confirm`` s."""
        out = []
        for oid, item in list(self._items.items()):
            lens = item["lens"]
            if now - item["since"] < confirm or len(lens) < 2:
                continue
            t_last, n_last = lens[-1]
            ref = next(((t, n) for t, n in reversed(lens) if t <= t_last - confirm), lens[0])
            if n_last <= ref[1]:
                if now - item["since"] >= 2 * confirm:
                    del self._items[oid]  # stopped growing: a warm-up that levelled off
                continue
            t0, n0 = lens[0]
            out.append(
                {
                    **item,
                    "object_id": oid,
                    "followed_seconds": round(t_last - t0, 1),
                    "items_per_min": round((n_last - n0) / (t_last - t0) * 60.0, 1) if t_last > t0 else None,
                    "len": n_last,
                }
            )
        return out

    def report(self) -> list[dict[str, Any]]:
        return [
            {
                "type": i["type"],
                "holder": i["container"].get("holder"),
                "file": i["container"].get("file"),
                "line": i["container"].get("line"),
                "len": i["lens"][-1][1],
                "since": i["since"],
            }
            for i in self._items.values()
        ]

    def clear(self) -> None:
        self._items.clear()
