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

from .. import runtime
from ..pressure import LEVELS
from ..probes.process import read_stat
from ..workers import identity
from .client import UnixHTTPConnection

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
    pid: int, method: str, path: str, query: dict[str, str], body: bytes, timeout: float = 10.0
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send one request to member ``pid``'s control channel; ``(status, headers, body)``.

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
        "error": None,
    }
    if entry is None:  # a master that runs no memdiag: what /proc shows
        st = read_stat(pid)
        row["rss_bytes"] = st.rss_bytes if st else None
        row["threads"] = st.num_threads if st else None
        return row
    try:
        prof = _member_profile(entry, diag)
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

    ``total[k]`` is the sum of ``members[i][k]`` over the members that reported ``k``;
    ``pressure`` is the worst member's level.
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
