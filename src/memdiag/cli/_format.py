"""Small formatting helpers for people: sizes, durations, aligned tables, colour, a spinner.

Colour is used only when stdout is a terminal and ``NO_COLOR`` is unset
(https://no-color.org); the spinner draws on stderr only when stderr is a terminal, and
only once a wait has lasted more than 0.3 s, so quick commands and pipes stay clean.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ..units import human_bytes

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "colour_enabled",
    "human_bytes",
    "human_duration",
    "level_text",
    "percent",
    "spinner",
    "style",
    "table",
]

_LEVEL_COLOURS = {"ok": "green", "warning": "yellow", "critical": "red"}
_ANSI = {"black": 30, "red": 31, "green": 32, "yellow": 33, "blue": 34, "magenta": 35, "cyan": 36, "white": 37}


def human_duration(seconds: float | None) -> str:
    """``272`` -> ``"4m 32s"``; ``0.25`` -> ``"0.25s"``; ``None`` -> ``"-"``."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2g}s" if seconds < 1 else f"{seconds:.1f}s"
    s = round(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {s}s"
    return f"{s}s"


def percent(value: float | None, digits: int = 1) -> str:
    """A percentage already in 0..100; ``None`` -> ``"-"``."""
    return "-" if value is None else f"{value:.{digits}f}%"


def colour_enabled(stream: Any = None) -> bool:
    """True when ``stream`` (stdout by default) is a terminal and ``NO_COLOR`` is unset."""
    if os.environ.get("NO_COLOR"):
        return False
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def style(text: str, fg: str | None = None, *, bold: bool = False) -> str:
    """``text`` in colour when colour is enabled, else unchanged."""
    if not colour_enabled() or (fg is None and not bold):
        return text
    # The codes click.style(text, fg=fg, bold=bold) writes, without importing click.
    colour = f"\x1b[{_ANSI[fg]}m" if fg else ""
    return f"{colour}\x1b[{1 if bold else 22}m{text}\x1b[0m"


def level_text(level: str | None) -> str:
    """A pressure level for people: upper case, coloured green/yellow/red when enabled."""
    if not level:
        return "-"
    return style(level.upper(), _LEVEL_COLOURS.get(level), bold=level != "ok")


def _visible_len(text: str) -> int:
    """Length without ANSI colour codes (so coloured cells still align)."""
    out, i = 0, 0
    while i < len(text):
        if text[i] == "\x1b":
            end = text.find("m", i)
            if end != -1:
                i = end + 1
                continue
        out += 1
        i += 1
    return out


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str] | None = None, *, right: Sequence[int] = ()) -> str:
    """An aligned plain-text table.

    Args:
        rows: cells (anything; ``None`` is shown as ``-``).
        headers: column titles, or ``None`` for a key/value list.
        right: indexes of columns aligned right (numbers, sizes).
    """
    cells = [["-" if c is None else str(c) for c in row] for row in rows]
    if headers:
        cells.insert(0, [style(h, bold=True) for h in headers])
    if not cells:
        return ""
    ncols = max(len(r) for r in cells)
    widths = [max((_visible_len(r[i]) for r in cells if i < len(r)), default=0) for i in range(ncols)]
    lines = []
    for row in cells:
        parts = []
        for i, cell in enumerate(row):
            pad = " " * (widths[i] - _visible_len(cell))
            last = i == len(row) - 1
            parts.append(pad + cell if i in right else (cell if last else cell + pad))
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


@contextmanager
def spinner(message: str, *, delay: float = 0.3, stream: Any = None) -> Iterator[None]:
    """Show ``message`` with a spinner on stderr while the block runs longer than ``delay``.

    Draws nothing when stderr is not a terminal (pipes, CI logs) or the block is quick.
    """
    stream = sys.stderr if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        yield
        return
    import threading  # a terminal only: pipes and --help do not pay for it

    done = threading.Event()
    drawn = False

    def spin() -> None:
        nonlocal drawn
        if done.wait(delay):
            return
        frames = "|/-\\"
        start = time.monotonic()
        i = 0
        while not done.is_set():
            elapsed = time.monotonic() - start + delay
            stream.write(f"\r{frames[i % 4]} {message} ({elapsed:.1f}s)")
            stream.flush()
            drawn = True
            i += 1
            done.wait(0.1)

    t = threading.Thread(target=spin, name="memdiag-spinner", daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()
        if drawn:
            stream.write("\r\x1b[K")
            stream.flush()
