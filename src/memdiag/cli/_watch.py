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

__all__ = ["bar", "watch_loop"]

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


class _Source:
    """Fetches one frame's data for a target."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._children: list[Any] = []
        self._children_at = 0.0

    def frame(self) -> dict[str, Any]:
        t = self.target
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


def watch_loop(target: Target, *, interval: float, count: int | None, plain: bool = False) -> int:
    """Draw frames every ``interval`` seconds; returns the exit status (0).

    On a terminal with rich installed (and not ``plain``) the frames are drawn by rich in
    place; otherwise as plain text (cleared between frames on a terminal, one after
    another with ``--- frame N ---`` headings in a pipe).
    """
    source = _Source(target)
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
        level = (d.get("pressure") or {}).get("level")
        head = (
            f"memdiag watch: {target.label}  {time.strftime('%H:%M:%S')}  pressure {level_text(level)}  "
            f"(every {interval:g}s; Ctrl-C to stop)"
        )
        text = "\n".join([style(head, bold=True), "", _limits(d), "", render_profile(d)])
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

    from ._watch_rich import frame

    n = 0
    with Live(auto_refresh=False, screen=False, transient=False) as live:
        while count is None or n < count:
            started = time.monotonic()
            d = source.frame()
            n += 1
            live.update(frame(d, target.label, interval, render_profile(d)), refresh=True)
            if count is not None and n >= count:
                break
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    return 0
