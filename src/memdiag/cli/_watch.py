"""``memdiag watch``: a refreshing view of one target until Ctrl-C (or ``--count`` frames)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

import click

from ._format import human_bytes, level_text, percent, style
from ._render import render_profile
from ._target import Target, TargetError

__all__ = ["bar", "member_head", "server_rows", "server_title", "suspect_cell", "watch_loop"]

_CLEAR = "\x1b[H\x1b[2J"
_CHILDREN_EVERY = 5.0  # seconds between subprocess lists (a diagnostics call) for a service


def bar(used: float | None, limit: float | None, width: int = 30) -> str:
    """``[##########--------------------]  33.3%`` (coloured by how full it is)."""
    if not used or not limit:
        return "-"
    ratio = used / limit
    filled = max(0, min(width, round(width * ratio)))
    colour = "red" if ratio >= 0.9 else "yellow" if ratio >= 0.7 else "green"
    return "[" + style("#" * filled, colour) + "-" * (width - filled) + f"] {percent(100 * ratio):>6}"


def _limits(d: Mapping[str, Any]) -> str:
    from ._format import table

    rows = []
    proc = d.get("process") or {}
    if proc.get("threshold_bytes"):
        rows.append(
            [
                "process RSS",
                human_bytes(proc.get("rss_bytes")),
                human_bytes(proc["threshold_bytes"]),
                bar(proc.get("rss_bytes"), proc["threshold_bytes"]),
            ]
        )
    ch = d.get("children") or {}
    if ch.get("threshold_bytes"):
        rows.append(
            [
                "children RSS",
                human_bytes(ch.get("rss_bytes")),
                human_bytes(ch["threshold_bytes"]),
                bar(ch.get("rss_bytes"), ch["threshold_bytes"]),
            ]
        )
    cg = d.get("cgroup") or {}
    if cg.get("limit_bytes"):
        rows.append(
            [
                "cgroup",
                human_bytes(cg.get("working_set_bytes")),
                human_bytes(cg["limit_bytes"]),
                bar(cg.get("working_set_bytes"), cg["limit_bytes"]),
            ]
        )
    sysm = d.get("system") or {}
    if sysm.get("total_bytes"):
        rows.append(
            [
                "system",
                human_bytes(sysm.get("used_bytes")),
                human_bytes(sysm["total_bytes"]),
                bar(sysm.get("used_bytes"), sysm["total_bytes"]),
            ]
        )
    return table(rows, ["MEMORY", "USED", "LIMIT", ""], right=(1, 2))


def _short(text: str, width: int = 28) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def member_head(m: Mapping[str, Any]) -> str:
    """A member's column title: ``master`` or ``worker 1``."""
    role = str(m.get("role") or "process")
    return f"worker {m.get('slot')}" if role == "worker" else role


def suspect_cell(m: Mapping[str, Any]) -> str:
    """A member's top leak suspect in a few words (``-`` where leak detection is off)."""
    top = m.get("top_suspect")
    if m.get("suspects") is None:
        return "-"
    if not top:
        return "none"
    where = f" {_short(str(top['file']).rsplit('/', 1)[-1], 20)}:{top.get('line')}" if top.get("file") else ""
    more = f" +{m['suspects'] - 1}" if (m.get("suspects") or 0) > 1 else ""
    return f"{str(top.get('kind') or 'suspect').replace('_', ' ')}{where}{more}"


def server_rows(d: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The server view side by side: one column per process (master, workers) and the total."""
    members = [m for m in d.get("members") or [] if isinstance(m, Mapping)]
    total = d.get("total") or {}

    def line(label: str, cell: Any, total_cell: Any = "") -> list[Any]:
        return [label, *(cell(m) for m in members), total_cell]

    def level(m: Mapping[str, Any]) -> str:
        return level_text(m["pressure"]) if m.get("pressure") else style(m.get("error") or "no agent", "yellow")

    def fill(m: Mapping[str, Any]) -> str:
        return percent(100 * m["cache_fill"], 0) if isinstance(m.get("cache_fill"), (int, float)) else "-"

    rows = [
        line("pid", lambda m: m.get("pid"), f"{total.get('processes', 0)} processes"),
        line("RSS", lambda m: human_bytes(m.get("rss_bytes")), human_bytes(total.get("rss_bytes"))),
        line("USS", lambda m: human_bytes(m.get("uss_bytes")), human_bytes(total.get("uss_bytes"))),
        line("PSS", lambda m: human_bytes(m.get("pss_bytes")), human_bytes(total.get("pss_bytes"))),
        line("threads", lambda m: m.get("threads"), total.get("threads")),
        line("children", lambda m: m.get("children"), total.get("children")),
        line("pressure", level, level_text(d.get("pressure"))),
        line("cache fill", fill, "-"),
        line("leak suspect", suspect_cell, ""),
    ]
    return ["", *(member_head(m) for m in members), "total"], rows


def _server_text(d: Mapping[str, Any]) -> str:
    from ._format import table

    heads, rows = server_rows(d)
    return table(rows, heads, right=tuple(range(1, len(heads))))


def server_title(d: Mapping[str, Any]) -> str:
    """``server 1234 (2 workers)``."""
    server = d.get("server") or {}
    workers = (d.get("total") or {}).get("workers")
    return f"server {server.get('pid', '?')} ({workers} worker{'' if workers == 1 else 's'})"


class _Source:
    """Fetches one frame's data for a target (``server``: its whole server's view)."""

    def __init__(self, target: Target, server: bool = False) -> None:
        self.target = target
        self.server = server
        self._children: list[Any] = []
        self._children_at = 0.0

    def frame(self) -> dict[str, Any]:
        t = self.target
        if self.server:
            assert t.client is not None
            return dict(t.client.get("/api/memory/server").body or {})
        if t.kind == "service":
            assert t.client is not None
            d = dict(t.client.get("/api/memory/profile").body or {})
            now = time.monotonic()
            if now - self._children_at >= _CHILDREN_EVERY:
                self._children = list((t.client.get("/api/memory/diagnostics").body or {}).get("subprocesses") or [])
                self._children_at = now
            d["children"] = {**(d.get("children") or {}), "processes": self._children}
            return d
        from ._outside import machine_view, process_view

        if t.kind == "process":
            assert t.pid is not None
            view = process_view(t.pid)
            if view is None:
                raise TargetError(f"process {t.pid} exited")
            return view
        return machine_view()


def _plain_frame(source: _Source, d: Mapping[str, Any], interval: float) -> str:
    if source.server:
        label, level, body = server_title(d), d.get("pressure"), [_server_text(d)]
    else:
        label, level = source.target.label, (d.get("pressure") or {}).get("level")
        body = [_limits(d), "", render_profile(d)]
    head = (
        f"memdiag watch: {label}  {time.strftime('%H:%M:%S')}  pressure {level_text(level)}  "
        f"(every {interval:g}s; Ctrl-C to stop)"
    )
    return "\n".join([style(head, bold=True), "", *body])


def watch_loop(
    target: Target, *, interval: float, count: int | None, plain: bool = False, server: bool = False
) -> int:
    """Draw frames every ``interval`` seconds; returns the exit status (0).

    On a terminal with rich installed (and not ``plain``) the frames are drawn by rich in
    place; otherwise as plain text (cleared between frames on a terminal, one after
    another with ``--- frame N ---`` headings in a pipe). ``server``: the whole pre-fork
    server ``target`` belongs to, one column per process.
    """
    source = _Source(target, server)
    tty = sys.stdout.isatty()
    if tty and not plain:
        from . import _watch_rich

        if _watch_rich.available():
            return _rich_loop(source, target, interval, count)
    n = 0
    while count is None or n < count:
        started = time.monotonic()
        d = source.frame()
        n += 1
        text = _plain_frame(source, d, interval)
        if tty:
            click.echo(_CLEAR + text)
        else:
            click.echo(("\n" if n > 1 else "") + f"--- frame {n} ---\n" + text)
        if count is not None and n >= count:
            break
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
    return 0


def _rich_loop(source: _Source, target: Target, interval: float, count: int | None) -> int:
    from rich.live import Live

    from ._watch_rich import frame, server_frame

    n = 0
    with Live(auto_refresh=False, screen=False, transient=False) as live:
        while count is None or n < count:
            started = time.monotonic()
            d = source.frame()
            n += 1
            if source.server:
                live.update(server_frame(d, interval, server_title(d), *server_rows(d)), refresh=True)
            else:
                live.update(frame(d, target.label, interval, render_profile(d)), refresh=True)
            if count is not None and n >= count:
                break
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    return 0
