"""``memdiag watch`` drawn with rich (when it is installed and stdout is a terminal).

The same data as the plain view (:mod:`._watch`): a header with the pressure level, a
table of memory against each limit with bars coloured by how full they are, the
pressure reasons, and the plain profile text below; for a whole server
(``--server``), one column per process with a bar of each one's share of the RSS. rich's ``Live`` redraws in place
without clearing the screen (no flicker).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["available", "frame", "server_frame"]

_LEVEL_STYLE = {"ok": "bold green", "warning": "bold yellow", "critical": "bold red"}


def available() -> bool:
    try:
        import rich.live  # noqa: F401
    except ImportError:
        return False
    return True


def _limit_rows(d: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    proc = d.get("process") or {}
    ch = d.get("children") or {}
    cg = d.get("cgroup") or {}
    sysm = d.get("system") or {}
    return [
        ("process RSS", proc.get("rss_bytes"), proc.get("threshold_bytes")),
        ("children RSS", ch.get("rss_bytes"), ch.get("threshold_bytes")),
        ("cgroup working set", cg.get("working_set_bytes"), cg.get("limit_bytes")),
        ("system", sysm.get("used_bytes"), sysm.get("total_bytes")),
    ]


def _header(label: str, level: str, interval: float) -> Any:
    """The panel at the top of every frame: what is watched, the time and the pressure level."""
    import time

    from rich.panel import Panel
    from rich.text import Text

    head = Text.assemble(
        ("memdiag watch ", "bold"),
        (label, "cyan"),
        f"  {time.strftime('%H:%M:%S')}  pressure ",
        (level.upper(), _LEVEL_STYLE.get(level, "bold")),
        (f"   every {interval:g}s, Ctrl-C to stop", "dim"),
    )
    return Panel(head, expand=True)


def _table(columns: list[tuple[str, Any]]) -> Any:
    """A borderless table of ``(heading, justify)`` columns, as both frames draw them."""
    from rich.table import Table

    table = Table(box=None, expand=False, pad_edge=False, show_edge=False)
    for name, justify in columns:
        table.add_column(name, justify=justify)
    return table


def frame(d: Mapping[str, Any], label: str, interval: float, profile_text: str) -> Any:
    """One frame as a rich renderable."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.text import Text

    from ..units import human_bytes

    pressure = d.get("pressure") or {}
    head = _header(label, str(pressure.get("level") or "unknown"), interval)
    limits = _table([("MEMORY", "left"), ("USED", "right"), ("LIMIT", "right"), ("", "left"), ("%", "right")])
    for name, used, limit in _limit_rows(d):
        if not limit:
            continue
        ratio = (used or 0) / limit
        colour = "red" if ratio >= 0.9 else "yellow" if ratio >= 0.7 else "green"
        limits.add_row(
            name,
            human_bytes(used),
            human_bytes(limit),
            ProgressBar(total=1.0, completed=min(1.0, ratio), width=30, complete_style=colour, finished_style=colour),
            f"{100 * ratio:.1f}%",
        )
    reasons = [
        Text.assemble((f"{r.get('level')}: ", _LEVEL_STYLE.get(str(r.get("level")), "")), str(r.get("signal")))
        for r in pressure.get("reasons") or []
    ]
    parts: list[Any] = [head, limits]
    if reasons:
        parts.append(Group(*reasons))
    parts.append(Text.from_ansi(profile_text))
    return Group(*parts)


def server_frame(d: Mapping[str, Any], interval: float, title: str, heads: list[str], rows: list[list[Any]]) -> Any:
    """A pre-fork server's frame: a header, and the table of :func:`memdiag.cli._watch.server_rows`
    (``heads``, ``rows``: a column per process) with a bar of each one's share of the RSS."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.text import Text

    head = _header(title, str(d.get("pressure") or "unknown"), interval)
    grid = _table([(name, "right" if i else "left") for i, name in enumerate(heads)])
    members = [m for m in d.get("members") or [] if isinstance(m, Mapping)]
    total_rss = (d.get("total") or {}).get("rss_bytes") or 0
    for row in rows:
        grid.add_row(*(Text.from_ansi(str("-" if c is None else c)) for c in row))
        if row[0] == "RSS" and total_rss:  # each process's share of the server's RSS
            bars = [
                ProgressBar(total=1.0, completed=min(1.0, (m.get("rss_bytes") or 0) / total_rss), width=12)
                for m in members
            ]
            grid.add_row("share", *bars, "")
    return Group(head, grid)
