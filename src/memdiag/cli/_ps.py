"""``memdiag ps``: the services of this user that announced themselves, with live figures."""

from __future__ import annotations

from ..probes.process import read_stat
from ..runtime import ServiceEntry, list_services
from ._client import ApiError
from ._target import client_for

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["service_rows"]


def _row(entry: ServiceEntry, timeout: float) -> dict[str, Any]:
    st = read_stat(entry.pid)
    row: dict[str, Any] = {
        **entry.to_dict(),
        "rss_bytes": st.rss_bytes if st else None,
        "pressure": None,
        "threshold_bytes": None,
        "children": None,
        "error": None,
    }
    row["role"] = (entry.server or {}).get("role")
    row["slot"] = (entry.server or {}).get("slot")
    row["server_pid"] = (entry.server or {}).get("pid")
    if not entry.reachable:
        row["error"] = "no API"
        return row
    try:
        status = client_for(entry, None, timeout).get("/api/memory/status").body or {}
    except ApiError as exc:
        row["error"] = "not answering" if exc.unreachable else f"HTTP {exc.status}"
        return row
    row["pressure"] = status.get("status")
    row["threshold_bytes"] = status.get("threshold_bytes")
    row["children"] = status.get("children")
    if status.get("rss_bytes") is not None:
        row["rss_bytes"] = status["rss_bytes"]
    return row


def service_rows(timeout: float = 1.0) -> list[dict[str, Any]]:
    """One dict per live registered service (stale entries are pruned), in PID order.

    Keys: ``pid``, ``name``, ``url``, ``version``, ``started_at``, ``rss_bytes``,
    ``pressure`` (``ok``/``warning``/``critical``, ``None`` if it did not answer),
    ``threshold_bytes``, ``children``, ``error``, ``socket`` (its control channel), and
    for a pre-fork server's processes ``server``, ``role`` (``master``/``worker``),
    ``slot`` (the worker's index, stable across recycling) and ``server_pid``.
    """
    entries = list_services()
    if len(entries) <= 1:  # one service (the common case): no thread pool to start
        return _with_masters([_row(e, timeout) for e in entries])
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, len(entries))) as pool:
        rows = list(pool.map(lambda e: _row(e, timeout), entries))
    return _with_masters(rows)


def _with_masters(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the master of every pre-fork server whose workers run memdiag but it does not
    (gunicorn without --preload): seen from /proc, so ``ps`` shows the whole server."""
    listed = {r["pid"] for r in rows}
    for server_pid in sorted({r["server_pid"] for r in rows if r.get("role") == "worker"} - listed):
        st = read_stat(server_pid)
        if st is None:
            continue
        rows.append(
            {
                "pid": server_pid,
                "url": None,
                "socket": None,
                "version": None,
                "name": st.name,
                "started_at": None,
                "server": None,
                "role": "master",
                "slot": None,
                "server_pid": server_pid,
                "rss_bytes": st.rss_bytes,
                "pressure": None,
                "threshold_bytes": None,
                "children": None,
                "error": "no agent",
            }
        )
    rows.sort(key=lambda r: (r.get("server_pid") or r["pid"], r.get("role") != "master", r.get("slot") or 0, r["pid"]))
    return rows
