"""A pre-fork server seen whole: its members, one member's answer, the aggregate.

Any process of a server answers for the others: the API's ``?pid=N`` forwards the
request to worker N over its control channel (the same user, so the peer check passes),
and ``GET /api/memory/server`` collects every member's profile and adds them up. The
members are the runtime entries that name the same server (see :mod:`memdiag.workers`);
a master without memdiag in it is still counted, from ``/proc``.
"""

from __future__ import annotations

import http.client
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from .. import registry, runtime
from ..pressure import LEVELS
from ..probes.process import read_stat
from ..workers import identity
from .client import CLIENT_HEADER, UnixHTTPConnection

if TYPE_CHECKING:
    from ..service import MemoryDiagnostics

__all__ = ["NotAMember", "forward", "members", "server_report"]

_RANK = {name: i for i, name in enumerate(LEVELS)}


class NotAMember(LookupError):
    """The PID asked about is not a process of this server."""


def members() -> list[runtime.ServiceEntry]:
    """The registered processes of this process's server (just this one outside a server)."""
    ident = identity()
    entries = runtime.list_services()
    if ident is None:
        return [e for e in entries if e.pid == os.getpid()]
    return [
        e
        for e in entries
        if e.server and e.server.get("pid") == ident.server_pid and e.server.get("start_ticks") == ident.server_ticks
    ]


def forward(
    pid: int,
    method: str,
    path: str,
    query: dict[str, str],
    body: bytes,
    timeout: float = 10.0,
    *,
    client: str | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send one request to member ``pid``'s control channel; ``(status, headers, body)``.

    ``client``: the original client's address, passed on so that the target's own rate
    limit counts it (its limiter decides for requests to it, whoever forwards them).

    Raises:
        NotAMember: ``pid`` is not a registered process of this server.
        OSError: it did not answer.
    """
    entry = next((e for e in members() if e.pid == pid), None)
    if entry is None or not entry.socket:
        raise NotAMember(pid)
    rest = {k: v for k, v in query.items() if k != "pid"}
    target = path + (f"?{urlencode(rest)}" if rest else "")
    conn = UnixHTTPConnection(entry.socket, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body else {}
        if client:
            headers[CLIENT_HEADER] = client[:200]
        conn.request(method, target, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        kept = [(k, v) for k, v in resp.getheaders() if k.lower() in ("content-type", "retry-after", "allow")]
        return resp.status, [*kept, ("Cache-Control", "no-store"), ("X-Memdiag-Pid", str(pid))], data
    except http.client.HTTPException as exc:
        raise OSError(f"worker {pid} answered badly: {exc}") from None
    finally:
        conn.close()


def _member_profile(entry: runtime.ServiceEntry, diag: MemoryDiagnostics) -> dict[str, Any]:
    if entry.pid == os.getpid():
        return diag.profile()
    status, _, body = forward(entry.pid, "GET", "/api/memory/profile", {}, b"", timeout=5.0)
    if status != 200:
        raise OSError(f"HTTP {status}")
    data: dict[str, Any] = json.loads(body)
    return data


def _member_suspects(entry: runtime.ServiceEntry, diag: MemoryDiagnostics) -> list[dict[str, Any]] | None:
    """The member's leak suspects, best first; ``None`` where leak detection is not on."""
    if entry.pid == os.getpid():
        section = registry.sections().get("leaks")  # registered while leak detection is on
        report = section(diag) if section is not None else None
    else:
        status, _, body = forward(entry.pid, "GET", "/api/memory/leaks", {}, b"", timeout=5.0)
        report = json.loads(body) if status == 200 else None
    if not isinstance(report, dict) or report.get("enabled") is False:
        return None
    return [s for s in report.get("suspects") or [] if isinstance(s, dict)]


def _suspect_summary(suspects: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    if not suspects:
        return None
    top = suspects[0]
    keys = ("kind", "file", "line", "growth_bytes_per_min", "growth_per_min", "confidence")
    return {k: top.get(k) for k in keys}


def _cache_fill(caches: Any) -> float | None:
    """The fullest registered cache's ``fill_ratio`` (a cache's fuller of bytes and entries)."""
    fills = [c.get("fill_ratio") for c in caches or [] if isinstance(c, dict)]
    numbers = [f for f in fills if isinstance(f, (int, float))]
    return max(numbers) if numbers else None


def _row(entry: runtime.ServiceEntry | None, pid: int, diag: MemoryDiagnostics) -> dict[str, Any]:
    server = (entry.server if entry else None) or {}
    row: dict[str, Any] = {
        "pid": pid,
        "role": server.get("role", "master" if entry is None else None),
        "slot": server.get("slot"),
        "key": server.get("key"),
        "agent": entry is not None,
        "rss_bytes": None,
        "uss_bytes": None,
        "pss_bytes": None,
        "threads": None,
        "fds": None,
        "children": None,
        "children_rss_bytes": None,
        "pressure": None,
        "caches": None,
        "cache_fill": None,
        "suspects": None,
        "top_suspect": None,
        "error": None,
    }
    if entry is None:  # a master that runs no memdiag: what /proc shows
        st = read_stat(pid)
        row["rss_bytes"] = st.rss_bytes if st else None
        row["threads"] = st.num_threads if st else None
        return row
    try:
        prof = _member_profile(entry, diag)
        suspects = _member_suspects(entry, diag)
    except (OSError, ValueError, NotAMember) as exc:
        row["error"] = f"not answering: {exc}"[:200]
        return row
    proc = prof.get("process") or {}
    children = prof.get("children") or {}
    row.update(
        rss_bytes=proc.get("rss_bytes"),
        uss_bytes=proc.get("uss_bytes"),
        pss_bytes=proc.get("pss_bytes"),
        threads=proc.get("threads"),
        fds=proc.get("fds"),
        children=children.get("count"),
        children_rss_bytes=children.get("rss_bytes"),
        pressure=(prof.get("pressure") or {}).get("level"),
        caches=len(prof.get("caches") or []),
        cache_fill=_cache_fill(prof.get("caches")),
        suspects=len(suspects) if suspects is not None else None,
        top_suspect=_suspect_summary(suspects),
    )
    return row


def _not_twice(rows: list[dict[str, Any]]) -> None:
    """A master's children are its workers: count them once, as members, not again as children."""
    workers = [r for r in rows if r["role"] == "worker"]
    for r in rows:
        if r["role"] == "master" and r["agent"]:
            if r["children"] is not None:
                r["children"] = max(0, r["children"] - len(workers))
            if r["children_rss_bytes"] is not None:
                worker_rss = sum(w["rss_bytes"] or 0 for w in workers)
                r["children_rss_bytes"] = max(0, r["children_rss_bytes"] - worker_rss)


_SUMMED = ("rss_bytes", "uss_bytes", "pss_bytes", "threads", "fds", "children", "children_rss_bytes")


def server_report(diag: MemoryDiagnostics) -> dict[str, Any]:
    """Every process of the server (master and workers) and their sum.

    Each member: ``pid``, ``role``, ``slot``, ``key``, ``agent``, RSS/USS/PSS, threads,
    fds, children, ``pressure`` (its level), ``caches`` and ``cache_fill`` (the fullest
    cache's fill ratio), ``suspects`` (leak suspects; ``None`` where leak detection is
    off) and ``top_suspect`` (the best one: kind, file, line, growth, confidence), and
    ``error`` when it did not answer. ``total[k]`` is the sum of ``members[i][k]`` over
    the members that reported ``k``; ``pressure`` is the worst member's level.
    """
    ident = identity()
    entries = members()
    targets: list[tuple[runtime.ServiceEntry | None, int]] = [(e, e.pid) for e in entries]
    if ident is not None and not any(e.pid == ident.server_pid for e in entries) and read_stat(ident.server_pid):
        targets.append((None, ident.server_pid))
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(targets)))) as pool:
        rows = list(pool.map(lambda t: _row(t[0], t[1], diag), targets))
    rows.sort(key=lambda r: (r["role"] != "master", r["slot"] if r["slot"] is not None else 1 << 30, r["pid"]))
    _not_twice(rows)
    total: dict[str, Any] = {"processes": len(rows), "workers": sum(1 for r in rows if r["role"] == "worker")}
    for key in _SUMMED:
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        total[key] = sum(values) if values else None
    levels = [r["pressure"] for r in rows if r.get("pressure") in _RANK]
    return {
        "server": ident.to_dict() if ident else None,
        "answered_by": os.getpid(),
        "members": rows,
        "total": total,
        "pressure": max(levels, key=_RANK.__getitem__) if levels else None,
    }
