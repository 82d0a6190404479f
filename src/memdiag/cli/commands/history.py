"""``memdiag history``: a service's stored history (its SQLite file), live or stopped.

The file is read directly, read-only, so a service that has stopped (or crashed, or was
restarted) shows the same history as a running one; a running service's newest rows
reach the file every ``history_db_interval`` (10 s by default).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import click

from ...units import human_bytes
from .._format import human_duration
from .._options import CONTEXT

__all__ = ["chart", "find_history_file", "history", "parse_since"]

_SINCE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_BYTE_COLUMNS = frozenset(
    {"rss", "uss", "pss", "system_available", "cgroup_usage", "cgroup_working_set", "cgroup_limit", "children_rss", "cache_bytes"}
)
_BLOCKS = " ▁▂▃▄▅▆▇█"


def parse_since(text: str) -> float:
    """``"1h"`` -> 3600.0; ``"1h30m"``, ``"90s"``, ``"2d"``, ``"45"`` (seconds)."""
    raw = text.strip().lower()
    pos, total = 0, 0.0
    while pos < len(raw):
        m = _SINCE.match(raw, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"{text!r} is not a duration (examples: 90s, 30m, 1h, 1h30m, 2d)")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
        while pos < len(raw) and raw[pos] == " ":
            pos += 1
    if not raw or total <= 0:
        raise ValueError(f"{text!r} is not a positive duration (examples: 90s, 30m, 1h, 2d)")
    return total


def find_history_file(name: str | None, db: str | None) -> str:
    """The history file to read: ``db``; the file of service ``name``; or the only one there is."""
    from ...history import default_history_path, safe_service_name, state_dir

    if db:
        path = os.path.expanduser(db)
        if not os.path.isfile(path):
            raise click.ClickException(f"no history file at {path}")
        return path
    if name:
        path = default_history_path(name)
        if not os.path.isfile(path):
            raise click.ClickException(f"no history for service {safe_service_name(name)!r}: {path} does not exist")
        return path
    directory = state_dir()
    try:
        files = sorted(f for f in os.listdir(directory) if f.endswith(".sqlite"))
    except OSError:
        files = []
    if not files:
        raise click.ClickException(
            f"no history files in {directory} (a service writes one unless history_persist is off)"
        )
    if len(files) > 1:
        names = ", ".join(f[: -len(".sqlite")] for f in files)
        raise click.ClickException(f"several services have history ({names}): name one, e.g. memdiag history NAME")
    return os.path.join(directory, files[0])


def _fmt(column: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column in _BYTE_COLUMNS:
        return human_bytes(value)
    return f"{value:.3g}" if isinstance(value, float) and not value.is_integer() else f"{int(value)}"


def chart(
    times: Sequence[float], values: Sequence[float | None], column: str, width: int = 72, height: int = 8
) -> str:
    """A block chart of ``column``'s ``values`` over ``times``: ``height`` rows, one
    character column per time slice (its maximum), sizes in binary units."""
    points = [(t, v) for t, v in zip(times, values) if v is not None and not math.isnan(v)]
    if not points:
        return f"{column}: no values in this range"
    t0, t1 = points[0][0], points[-1][0]
    slots: list[list[float]] = [[] for _ in range(width)]
    for t, v in points:
        k = 0 if t1 == t0 else min(width - 1, int((t - t0) / (t1 - t0) * width))
        slots[k].append(v)
    cols = [max(s) if s else None for s in slots]
    present = [c for c in cols if c is not None]
    lo, hi = min(present), max(present)
    span = (hi - lo) or (abs(hi) or 1.0)
    lines = [f"{column} (max per row)"]
    label_width = max(len(_fmt(column, hi)), len(_fmt(column, lo)))
    for row in range(height - 1, -1, -1):
        cells = []
        for c in cols:
            if c is None:
                cells.append(" ")
                continue
            level = (c - lo) / span * height - row  # how much of this row the value fills
            if level >= 1:
                cells.append(_BLOCKS[-1])
            elif level > 0 or row == 0:  # the bottom row always shows a value that is there
                cells.append(_BLOCKS[max(1, int(level * 8))])
            else:
                cells.append(" ")
        label = _fmt(column, hi) if row == height - 1 else _fmt(column, lo) if row == 0 else ""
        lines.append(f"{label:>{label_width}} ┤{''.join(cells)}")
    start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0))
    end = time.strftime("%H:%M:%S", time.localtime(t1))
    lines.append(f"{'':>{label_width}} └{'─' * width}")
    lines.append(f"{'':>{label_width}}  {start} .. {end} ({human_duration(t1 - t0)}, {len(points)} rows)")
    return "\n".join(lines)


def _read(path: str, since: float, pid: int | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from ...history import COLUMNS, HistoryStore

    store = HistoryStore(path, readonly=True)
    try:
        rows = store.query(since=since, columns=COLUMNS[1:], pid=pid, limit=1_000_000)
        events = store.events(since=since)
    except Exception as exc:  # sqlite3.Error, OSError: an unreadable or foreign file
        raise click.ClickException(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    finally:
        store.close()
    if pid is not None:
        events = [e for e in events if e["pid"] == pid]
    return rows, events


def _csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    from ...history import COLUMNS

    buf = io.StringIO()
    names = ["time", "pid", "n"] + [f"{c}_{a}" for c in COLUMNS[1:] for a in ("mean", "max")]
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k) for k in names})
    return buf.getvalue()


def _text(path: str, rows: list[dict[str, Any]], events: list[dict[str, Any]], column: str, since: float) -> str:
    times = [r["time"] for r in rows]
    pids = sorted({r["pid"] for r in rows})
    head = f"{path}: {len(rows)} rows since {human_duration(since)} ago, process(es) {', '.join(map(str, pids)) or '-'}"
    parts = [head, "", chart(times, [r.get(f"{column}_max") for r in rows], column)]
    if events:
        parts += ["", f"events ({len(events)}):"]
        for e in events[-20:]:
            when = time.strftime("%H:%M:%S", time.localtime(e["time"]))
            data = e.get("data") or {}
            if e["kind"] == "pressure":
                what = f"pressure {data.get('from')} -> {data.get('to')}"
            elif e["kind"] == "cleanup":
                what = f"cleanup ({data.get('reason')}) freed {human_bytes(data.get('freed_bytes'))}"
            else:
                suspect = data.get("suspect") or {}
                what = f"leak {data.get('event')}: {suspect.get('kind')} at {suspect.get('file')}:{suspect.get('line')}"
            parts.append(f"  {when}  pid {e['pid']}  {what}")
    return "\n".join(parts)


@click.command(context_settings=CONTEXT)
@click.argument("name", required=False)
@click.option("--since", "since_text", default="1h", show_default=True, help="How far back: 90s, 30m, 1h, 2d.")
@click.option("--db", default=None, metavar="PATH", help="Read this history file (default: the service's own).")
@click.option("--pid", type=int, default=None, metavar="N", help="Only the rows of process N (one worker).")
@click.option("--column", default="rss", show_default=True, help="What the chart shows (a history column).")
@click.option("--json", "as_json", is_flag=True, help="Print rows and events as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print rows as CSV.")
def history(
    name: str | None, since_text: str, db: str | None, pid: int | None, column: str, as_json: bool, as_csv: bool
) -> None:
    """Stored history of a service (running or stopped): a chart, or JSON/CSV rows.

    NAME is the service's name (its history file is <state dir>/NAME.sqlite); without
    it, the only history file there is.
    """
    from ...history import COLUMNS

    if as_json and as_csv:
        raise click.UsageError("--json and --csv exclude each other")
    if column not in COLUMNS[1:]:
        raise click.BadParameter(f"{column!r} is not one of {', '.join(COLUMNS[1:])}", param_hint="--column")
    try:
        seconds = parse_since(since_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    path = find_history_file(name, db)
    since = time.time() - seconds
    rows, events = _read(path, since, pid)
    if as_json:
        import json

        click.echo(json.dumps({"file": path, "since": since, "rows": rows, "events": events}, indent=2))
    elif as_csv:
        click.echo(_csv(rows), nl=False)
    else:
        click.echo(_text(path, rows, events, column, seconds))
