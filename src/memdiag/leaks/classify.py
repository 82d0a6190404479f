"""Turn signals into suspects: what kind of leak, where, how fast, how sure.

Pure functions over trends and window results; no I/O. A suspect is a plain dict::

    {"id", "kind", "file", "line", "growth_bytes_per_min", "growth_per_min",
     "confidence", "classified_by", "evidence", "suggestion", ...}

Kinds: ``python_objects`` (a Python allocation site; ``file``/``line`` once a tracing
window has run), ``native`` (RSS grows, Python allocations do not explain it),
``allocator_retention`` (malloc keeps much freed memory), ``uncollectable``
(``gc.garbage`` grows), and resources: ``fds``, ``threads``, ``asyncio_tasks``,
``child_processes``, ``zombies``.

Confidence is a heuristic in 0..1, documented in ``docs/leaks.md``: how strong and how
long the trend is, whether a tracing window confirmed it (a site that grew in both
halves of the window, into a container that kept growing), and how much of the RSS
growth the named site explains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..stats import Trend, theil_sen, thin

__all__ = [
    "RESOURCES",
    "decelerating",
    "followed_suspect",
    "memory_suspects",
    "resource_suspect",
    "retention_suspect",
    "trend_strength",
    "uncollectable_suspect",
]

# kind -> (history column or own series, minimum rise over the window, unit, advice)
RESOURCES: dict[str, tuple[str, float, str, str]] = {
    "fds": ("fds", 10, "file descriptors", "files, sockets or pipes opened and never closed; use `with` blocks"),
    "threads": ("threads", 5, "threads", "threads started and never finished; use a bounded pool"),
    "asyncio_tasks": ("asyncio_tasks", 20, "tasks", "tasks created and never awaited or cancelled"),
    "child_processes": ("children", 3, "processes", "child processes started and never stopped"),
    "zombies": ("zombies", 2, "zombies", "child processes that exited and were never waited for (Popen.wait/poll)"),
}


def trend_strength(t: Trend, window_seconds: float) -> float:
    """0..1: how clear (Mann-Kendall z) and how long (share of the window) a trend is."""
    return max(0.0, min(1.0, abs(t.z) / 5.0)) * max(0.0, min(1.0, t.span_seconds / window_seconds))


def decelerating(xs: Sequence[float], ys: Sequence[float]) -> bool:
    """True if the second half's slope is under half the first half's: a warm-up levelling off."""
    pts = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
    if len(pts) < 12:
        return False
    half = len(pts) // 2
    a = thin([p[0] for p in pts[:half]], [p[1] for p in pts[:half]], 45)
    b = thin([p[0] for p in pts[half:]], [p[1] for p in pts[half:]], 45)
    s1, _ = theil_sen(*a)
    s2, _ = theil_sen(*b)
    return s1 > 0 and s2 < 0.5 * s1


def _round(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def memory_suspects(
    rss: Trend,
    window_seconds: float,
    heap: Trend | None,
    window: dict[str, Any] | None,
    floor_per_min: float,
    malloc_in_use: Trend | None,
    growing_types: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Suspects for a process whose RSS grows: one primary (id ``memory``) plus other sites.

    Args:
        rss: the RSS trend that passed the growth test.
        heap: the trend of Python's allocated blocks, if any.
        window: the result of a tracing window run during this growth, if any.
        floor_per_min: the growth floor (bytes/min).
        malloc_in_use: the trend of malloc's bytes in use, if glibc tells.
        growing_types: the census's growing types.
    """
    rss_rate = rss.slope_per_second * 60.0
    strength = trend_strength(rss, window_seconds)
    heap_growing = heap is not None and heap.growing and not heap.plateau
    evidence = _memory_evidence(rss, heap, heap_growing, malloc_in_use, growing_types)
    base = {
        "id": "memory",
        "file": None,
        "line": None,
        "traceback": None,
        "growth_bytes_per_min": _round(rss_rate),
        "growth_per_min": None,
    }
    if window is None or window.get("error") or "growing_sites" not in window:
        return [_tentative_suspect(base, evidence, heap_growing, strength, window)]
    traced_rate = float(window.get("traced_growth_bytes_per_min") or 0.0)
    explained = traced_rate / rss_rate if rss_rate > 0 else 0.0
    evidence = {**evidence, **_window_evidence(window, traced_rate, explained)}
    python_first, picked = _pick_sites(window["growing_sites"], floor_per_min, rss_rate, explained)
    out: list[dict[str, Any]] = []
    if not python_first:
        out.append(_native_suspect(base, evidence, strength, explained))
    for s in picked:
        out.append(_site_suspect(base, evidence, s, strength, rss_rate, further=bool(out)))
    return out


def _memory_evidence(
    rss: Trend,
    heap: Trend | None,
    heap_growing: bool,
    malloc_in_use: Trend | None,
    growing_types: list[dict[str, Any]],
) -> dict[str, Any]:
    """The cheap signals every memory suspect carries as evidence."""
    return {
        "rss_growth_bytes_per_min": _round(rss.slope_per_second * 60.0),
        "rss_trend": rss.to_dict(),
        "heap_blocks_per_min": _round(heap.slope_per_second * 60.0) if heap else None,
        "heap_growing": heap_growing,
        "malloc_in_use_bytes_per_min": _round(malloc_in_use.slope_per_second * 60.0) if malloc_in_use else None,
        "growing_types": [t["type"] for t in growing_types[:5]],
    }


def _tentative_suspect(
    base: dict[str, Any],
    evidence: dict[str, Any],
    heap_growing: bool,
    strength: float,
    window: dict[str, Any] | None,
) -> dict[str, Any]:
    """Cheap signals only (no usable tracing window): a tentative kind, no site yet."""
    return {
        **base,
        "kind": "python_objects" if heap_growing else "native",
        "confidence": round(0.2 + 0.3 * strength, 3),
        "classified_by": "trend",
        "evidence": {**evidence, "window": (window or {}).get("error") or "no allocation-tracing window yet"},
        "suggestion": "an allocation-tracing window will name the site (memdiag profile --allocations)",
    }


def _window_evidence(window: dict[str, Any], traced_rate: float, explained: float) -> dict[str, Any]:
    """What a tracing window adds to the evidence: its growth and the share it explains."""
    return {
        "window_id": window.get("id"),
        "window_seconds": window.get("measured_seconds"),
        "traced_growth_bytes_per_min": _round(traced_rate),
        "explained_share": round(explained, 3),
        "types": window.get("types", [])[:5],
    }


def _pick_sites(
    sites: list[dict[str, Any]], floor_per_min: float, rss_rate: float, explained: float
) -> tuple[bool, list[dict[str, Any]]]:
    """``(python_first, picked)``: whether Python allocations explain the growth, and the
    sites to name (the suspects themselves, or anchored sites following a native verdict)."""
    # A site anchored in a growing container is a leak's signature. Without one, a site
    # must grow steadily, above the floor, and no faster than the whole process: an LRU
    # cache's turnover looks like growth to tracemalloc (the entries it evicts were
    # allocated before tracing began), usually at many times the RSS growth.
    anchored = [s for s in sites if s["container"] is not None and s["growth_bytes_per_min"] >= floor_per_min / 2]
    steady = [
        s
        for s in sites
        if s["container"] is None and s["consistent"] and floor_per_min <= s["growth_bytes_per_min"] <= 1.5 * rss_rate
    ]
    # Python allocations explain the growth: the sites are the suspects. Otherwise the
    # growth is native, and anchored sites (a real but smaller leak) follow it.
    python_first = explained >= 0.3 and bool(anchored or steady)
    return python_first, ((anchored or steady)[:3] if python_first else anchored[:2])


def _native_suspect(
    base: dict[str, Any], evidence: dict[str, Any], strength: float, explained: float
) -> dict[str, Any]:
    """RSS grows and the traced Python allocations do not explain it."""
    conf = 0.4 + 0.4 * strength + 0.2 * max(0.0, 1.0 - explained)
    return {
        **base,
        "id": "native",
        "kind": "native",
        "confidence": round(min(1.0, conf), 3),
        "classified_by": "tracing",
        "evidence": evidence,
        "suggestion": (
            "RSS grows but Python allocations do not explain it: look at C extensions, ctypes/cffi "
            "buffers, or native libraries (memray --native, heaptrack, valgrind)"
        ),
    }


def _site_suspect(
    base: dict[str, Any],
    evidence: dict[str, Any],
    s: dict[str, Any],
    strength: float,
    rss_rate: float,
    *,
    further: bool,
) -> dict[str, Any]:
    """A Python allocation site the window named; ``further``: a suspect precedes it."""
    share = s["growth_bytes_per_min"] / rss_rate if rss_rate > 0 else 0.0
    conf = (0.5 if s["container"] else 0.3) + 0.25 * strength + (0.15 if s["consistent"] else 0.0)
    conf += 0.1 * min(1.0, share)
    if further:
        conf *= 0.8  # a further site shares the growth: less sure each one is the leak
    return {
        **base,
        "id": f"python_objects:{s['file']}:{s['line']}",
        "kind": "python_objects",
        "file": s["file"],
        "line": s["line"],
        "traceback": s["traceback"],
        "growth_bytes_per_min": s["growth_bytes_per_min"],
        "confidence": round(min(1.0, conf), 3),
        "classified_by": "tracing",
        "evidence": {
            **evidence,
            "site_growth_bytes": s["growth_bytes"],
            "site_blocks_growth": s["count_growth"],
            "consistent": s["consistent"],
            "container": s["container"],
        },
        "suggestion": _python_advice(s),
    }


def followed_suspect(item: dict[str, Any], rss_rate: float | None, window_seconds: float) -> dict[str, Any]:
    """A Python-objects suspect whose container kept growing after the window that named it."""
    c = item["container"]
    site = item.get("site") or {}
    rate = site.get("growth_bytes_per_min")
    share = rate / rss_rate if rate and rss_rate and rss_rate > 0 else 0.0
    followed = min(1.0, item["followed_seconds"] / window_seconds)
    conf = 0.4 + (0.15 if site.get("consistent", True) else 0.0) + 0.25 * followed + 0.2 * min(1.0, share)
    where = {"file": c["file"], "line": c["line"], "container": {k: c.get(k) for k in ("type", "holder")}}
    return {
        "id": f"python_objects:{c['file']}:{c['line']}",
        "kind": "python_objects",
        "file": c["file"],
        "line": c["line"],
        "traceback": site.get("traceback"),
        "growth_bytes_per_min": rate,
        "growth_per_min": item["items_per_min"],
        "confidence": round(min(1.0, conf), 3),
        "classified_by": "tracing",
        "evidence": {
            "window_id": item.get("window_id"),
            "container": {
                **where["container"],
                "len": item["len"],
                "items_per_min": item["items_per_min"],
                "followed_seconds": item["followed_seconds"],
                "site_share": c.get("site_share"),
            },
            "site_growth_bytes_per_min": rate,
            "rss_growth_bytes_per_min": _round(rss_rate) if rss_rate is not None else None,
            "explained_share": round(share, 3),
            "consistent": site.get("consistent"),
        },
        "suggestion": _python_advice({**where, "container": where["container"]}),
    }


def _python_advice(site: dict[str, Any]) -> str:
    c = site.get("container")
    where = f"{site['file']}:{site['line']}"
    if c:
        holder = f" held by {c['holder']}" if c.get("holder") else ""
        return (
            f"objects allocated at {where} accumulate in a {c['type']}{holder} that keeps growing: "
            "bound it or remove entries"
        )
    return f"objects allocated at {where} stay alive: check what keeps references to them"


def resource_suspect(
    kind: str, t: Trend, first: float, last: float, window_seconds: float, min_span: float
) -> dict[str, Any] | None:
    """A resource-leak suspect if the count keeps rising (not a pool that filled up)."""
    _, min_rise, unit, advice = RESOURCES[kind]
    rise = last - first
    if not (
        t.growing
        and not t.plateau
        and t.span_seconds >= min_span
        and rise >= min_rise
        and t.slope_per_second * t.span_seconds >= min_rise * 0.5
    ):
        return None
    strength = trend_strength(t, window_seconds)
    return {
        "id": kind,
        "kind": kind,
        "file": None,
        "line": None,
        "traceback": None,
        "growth_bytes_per_min": None,
        "growth_per_min": round(t.slope_per_second * 60.0, 2),
        "confidence": round(min(1.0, 0.4 + 0.6 * strength), 3),
        "classified_by": "trend",
        "evidence": {"unit": unit, "first": first, "last": last, "rise": rise, "trend": t.to_dict()},
        "suggestion": advice,
    }


def uncollectable_suspect(
    count: int, first: int, t: Trend | None, types: list[tuple[str, int]]
) -> dict[str, Any] | None:
    """``gc.garbage`` holds objects and their number rose during the window."""
    if count <= 0 or count <= first:
        return None
    return {
        "id": "uncollectable",
        "kind": "uncollectable",
        "file": None,
        "line": None,
        "traceback": None,
        "growth_bytes_per_min": None,
        "growth_per_min": round(t.slope_per_second * 60.0, 2) if t is not None else None,
        "confidence": 0.9 if t is not None and t.growing else 0.6,
        "classified_by": "gc",
        "evidence": {
            "gc_garbage": count,
            "at_window_start": first,
            "types": [{"type": n, "count": c} for n, c in types],
        },
        "suggestion": (
            "objects the collector could not free are kept in gc.garbage: break the cycles or fix "
            "the finalizers (gc.DEBUG_SAVEALL left on?)"
        ),
    }


RETENTION_MIN_BYTES = 64 * 1024 * 1024
RETENTION_MIN_SHARE = 0.25


def retention_suspect(free: int, in_use: int, rss: int | None, growth_per_min: float | None) -> dict[str, Any] | None:
    """malloc keeps a large share of RSS as free memory (fragmentation or arenas per thread)."""
    if not rss or free < max(RETENTION_MIN_BYTES, RETENTION_MIN_SHARE * rss):
        return None
    share = free / rss
    return {
        "id": "allocator_retention",
        "kind": "allocator_retention",
        "file": None,
        "line": None,
        "traceback": None,
        "growth_bytes_per_min": _round(growth_per_min),
        "growth_per_min": None,
        "confidence": round(min(1.0, 0.5 + share), 3),
        "classified_by": "malloc",
        "evidence": {
            "malloc_free_bytes": free,
            "malloc_in_use_bytes": in_use,
            "rss_bytes": rss,
            "free_share_of_rss": round(share, 3),
        },
        "suggestion": (
            "freed memory stays in malloc's arenas: run `memdiag cleanup` (calls malloc_trim(0)); "
            "with many threads set MALLOC_ARENA_MAX=2 in the service's environment"
        ),
    }
