"""Resource counts by creating line: fds, threads, asyncio tasks, child processes, zombies.

Every ``heap_snapshot_seconds`` the fd table, the live threads, the pending asyncio tasks
and the live children are counted by the site that created them (see :mod:`.origins`;
tasks by their coroutine until their count grows, then by their creating line);
memdiag's own are counted apart and never shown as the application's. A site whose
count keeps rising (the same sustained-growth test as the heap lines, at least
``MIN_RISE`` more over the span) is a leak named at its line.
"""

from __future__ import annotations

import sys
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from . import origins
from .live import HORIZON_SECONDS, RETAIN_SECONDS, growth_test, prune

__all__ = ["KINDS", "MIN_RISE", "ResourceSites"]

# kind -> (unit, advice)
KINDS: dict[str, tuple[str, str]] = {
    "fds": ("file descriptors", "close what this line opens (use `with` blocks)"),
    "threads": ("threads", "threads started here never finish: join them or use a bounded pool"),
    "asyncio_tasks": ("tasks", "tasks created here are never awaited or cancelled"),
    "child_processes": ("processes", "children started here never exit: wait for them or stop them"),
    "zombies": ("zombies", "children started here exit and are never waited for: call wait() or poll()"),
}
MIN_RISE = 3
MAX_SITES = 200


def _pending_tasks() -> list[Any]:
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return []
    registry = getattr(asyncio.tasks, "_all_tasks", None)
    for _ in range(3):
        try:
            tasks = list(registry) if registry is not None else []
            return [t for t in tasks if not t.done()]
        except RuntimeError:  # changed size meanwhile (another thread's loop)
            continue
    return []


class ResourceSites:
    """Per-site resource counts over time, and the application's totals (memdiag's left out)."""

    def __init__(self, keep: int = 128) -> None:
        self.keep = keep
        self._series: dict[tuple[str, origins.Site | None], deque[tuple[float, int]]] = {}
        self.totals: dict[str, deque[tuple[float, float]]] = {k: deque(maxlen=4096) for k in KINDS}
        # the totals are read over leak_window_seconds (the detector sets this to cover it)
        self.retain_seconds = RETAIN_SECONDS
        self.own: dict[str, int] = {}
        self._targets: dict[origins.Site | None, Counter[str]] = {}
        self.tasks_followed_at: float | None = None  # when the pending tasks' growth turned the Task hook on
        self._replaced: dict[origins.Site, origins.Site] = {}  # creating line -> the coroutine it renamed

    def sample(self, now: float, child_pids: Iterable[int] | None, zombie_pids: Iterable[int] | None = None) -> None:
        """Count every kind by site now (a few hundred microseconds for a few hundred fds);
        ``child_pids`` are the live children, ``zombie_pids`` those that exited unwaited."""
        counts: dict[str, Counter[origins.Site | None]] = {}
        fds = origins.fd_table()
        c: Counter[origins.Site | None] = Counter()
        targets: dict[origins.Site | None, Counter[str]] = {}
        for _fd, target, site in fds:
            c[site] += 1
            if site != origins.OWN:
                targets.setdefault(site, Counter())[origins.fd_kind(target)] += 1
        counts["fds"] = c
        self._targets = targets
        counts["threads"], _ = origins.threads_by_site()
        counts["asyncio_tasks"] = origins.tasks_by_site(_pending_tasks())
        self._carry_task_series(origins.task_aliases())
        if child_pids is not None:
            counts["child_processes"] = origins.children_by_site(child_pids)
        if zombie_pids is not None:
            counts["zombies"] = origins.children_by_site(zombie_pids)
        for kind, cnt in counts.items():
            own = cnt.pop(origins.OWN, 0)
            self.own[kind] = own
            self.totals[kind].append((now, float(sum(cnt.values()))))
            prune(self.totals[kind], now - self.retain_seconds)
            for site, n in cnt.items():
                if site is None:
                    continue
                key = (kind, site)
                ser = self._series.get(key)
                if ser is None:
                    if len(self._series) >= MAX_SITES:
                        continue
                    ser = self._series[key] = deque(maxlen=self.keep)
                ser.append((now, n))
                prune(ser, now - RETAIN_SECONDS)
            for key, ser in self._series.items():
                if key[0] == kind and key[1] not in cnt:
                    ser.append((now, 0))
                    prune(ser, now - RETAIN_SECONDS)
        for key in [k for k, s in self._series.items() if len(s) > 8 and not any(n for _, n in s)]:
            del self._series[key]  # nothing alive from there for a while
        self._follow_tasks_if_growing(now)

    def _carry_task_series(self, aliases: dict[origins.Site, origins.Site]) -> None:
        """A coroutine's tasks that gained their creating line (the Task hook went in) keep
        their count's history: the coroutine's series becomes the line's, so a leak found
        at its coroutine is named at its creating line at the next sample, not a growth
        test later."""
        for coro_site, line in aliases.items():
            if len(self._replaced) < MAX_SITES:
                self._replaced[line] = coro_site
            old = self._series.pop(("asyncio_tasks", coro_site), None)
            if old is None:
                continue
            new = self._series.get(("asyncio_tasks", line))
            if new is not None:  # both counted already: add them up, sample by sample
                both: Counter[float] = Counter()
                for t, n in (*old, *new):
                    both[t] += n
                old = deque(sorted(both.items()), maxlen=old.maxlen)
            self._series[("asyncio_tasks", line)] = old

    def _follow_tasks_if_growing(self, now: float, horizon: float = HORIZON_SECONDS) -> None:
        """Turn the Task hook on (origins.follow_tasks) once the application's pending
        tasks grow steadily (the growth test, as for a suspect): from then on new tasks
        carry their creating line. A server's in-flight requests (a step when load comes,
        transients) never pass the test, so their tasks cost nothing more."""
        if origins.tasks_followed() or "asyncio" not in sys.modules:
            return
        series = [self.totals["asyncio_tasks"]]
        # ... or one coroutine's tasks do, under the noise of the others (a service whose
        # requests each run a task): that is a verdict at the coroutine already, and the hook
        # names its creating line at the next sample.
        series += [ser for (kind, site), ser in self._series.items() if kind == "asyncio_tasks" and site is not None]
        for ser in series:
            pts = [p for p in ser if p[0] >= now - horizon]
            if len(pts) < 8 or pts[-1][1] - pts[0][1] < MIN_RISE:
                continue
            if growth_test([float(p[0]) for p in pts], [float(p[1]) for p in pts], 0.5, 1.0) is not None:
                self.tasks_followed_at = now
                origins.follow_tasks()
                return

    def suspects(self, now: float, horizon: float = HORIZON_SECONDS) -> list[dict[str, Any]]:
        """Sites whose live count keeps rising."""
        out = []
        for (kind, site), ser in self._series.items():
            pts = [p for p in ser if p[0] >= now - horizon]
            if len(pts) < 8 or site is None or pts[-1][1] - pts[0][1] < MIN_RISE:
                continue
            xs = [float(p[0]) for p in pts]
            g = growth_test(xs, [float(p[1]) for p in pts], 0.5, 1.0)
            if g is None:
                continue
            unit, advice = KINDS[kind]
            evidence: dict[str, Any] = {"unit": unit, "live": pts[-1][1], "rise": pts[-1][1] - pts[0][1],
                                        "span_seconds": round(g["span_seconds"], 1), "z": round(g["z"], 3)}
            if kind == "fds":
                evidence["targets"] = dict(self._targets.get(site, Counter()).most_common(5))
            coro = self._replaced.get(site) if kind == "asyncio_tasks" else None
            if coro is not None:  # the same tasks' verdict at their coroutine, before the hook
                evidence["replaces"] = [f"{kind}:{coro[0]}:{coro[1]}"]
            out.append(
                {
                    "id": f"{kind}:{site[0]}:{site[1]}",
                    "kind": kind,
                    "file": site[0],
                    "line": site[1],
                    "traceback": [f"{site[0]}:{site[1]}"],
                    "growth_bytes_per_min": None,
                    "growth_per_min": round(g["slope_per_min"], 2),
                    "confidence": round(min(1.0, 0.5 + 0.5 * g["confidence"]), 3),
                    "classified_by": "origin",
                    "evidence": evidence,
                    "suggestion": f"{unit} created at {site[0]}:{site[1]} pile up: {advice}",
                }
            )
        return out

    def report(self) -> dict[str, Any]:
        return {
            "own": dict(self.own),
            "application": {k: (v[-1][1] if v else None) for k, v in self.totals.items()},
            "hooks_installed": origins.installed(),
            "task_sites": "creating line" if origins.tasks_followed() else "coroutine (until tasks grow)",
        }

    def clear(self) -> None:
        self._series.clear()
        self._replaced.clear()
        for v in self.totals.values():
            v.clear()
