"""``memdiag ps``: the services of this user that announced themselves, with live figures."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..probes.process import read_stat
from ..runtime import ServiceEntry, list_services
from ._client import ApiError
from ._target import client_for

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
    if not entries:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(entries))) as pool:
        return list(pool.map(lambda e: _row(e, timeout), entries))
