"""History: a fixed-size in-memory ring of sample summaries, trends, and a SQLite store.

The ring keeps a handful of numbers per sample in ``array('d')`` columns, not the
samples themselves: 3600 samples cost about 0.6 MB whatever the number of children,
so the monitor's own memory stays flat when its history is full. The optional
:class:`HistoryStore` aggregates samples into one row per ``history_db_interval``
(mean and max) in a SQLite file, prunes rows past the retention, and survives restarts.
"""

from __future__ import annotations

import math
import os
import threading
import time
from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .sample import Sample
from .stats import Trend, trend

if TYPE_CHECKING:
    import sqlite3

__all__ = ["COLUMNS", "History", "HistoryStore", "summarize"]

NAN = float("nan")

# name -> how a Sample gives it
COLUMNS: tuple[str, ...] = (
    "time",
    "rss",
    "uss",
    "pss",
    "system_available",
    "system_used_ratio",
    "cgroup_usage",
    "cgroup_working_set",
    "cgroup_limit",
    "psi_some_avg10",
    "psi_full_avg10",
    "heap_blocks",
    "gc_objects",
    "children",
    "children_rss",
    "zombies",
    "cache_bytes",
    "fds",
    "threads",
    "level",
    "tick_seconds",
)
_LEVEL = {"ok": 0.0, "warning": 1.0, "critical": 2.0}


def _n(x: float | int | None) -> float:
    return NAN if x is None else float(x)


def summarize(sample: Sample, level: str = "ok") -> tuple[float, ...]:
    """The numbers of one sample that history keeps, in :data:`COLUMNS` order."""
    p, s, cg = sample.process, sample.system, sample.cgroup
    psi = cg.psi if cg is not None and cg.psi is not None else sample.psi
    return (
        sample.time,
        _n(p.rss),
        _n(p.uss),
        _n(p.pss),
        _n(s.available if s else None),
        (s.used / s.total) if s and s.total else NAN,
        _n(cg.usage if cg else None),
        _n(cg.working_set if cg else None),
        _n(cg.limit if cg else None),
        _n(psi.some_avg10 if psi else None),
        _n(psi.full_avg10 if psi else None),
        float(sample.python.allocated_blocks),
        _n(sample.python.objects),
        float(len(sample.children)),
        float(sample.children_rss),
        float(sample.zombies),
        float(sample.cache_bytes),
        _n(p.fds),
        _n(p.threads),
        _LEVEL.get(level, 0.0),
        sample.seconds,
    )


class History:
    """A thread-safe ring of sample summaries with a fixed capacity.

    Args:
        capacity: samples kept; the oldest is overwritten.
    """

    def __init__(self, capacity: int = 3600) -> None:
        if capacity < 2:
            raise ValueError("history capacity must be >= 2")
        self.capacity = capacity
        self._cols = [array("d", [NAN]) * capacity for _ in COLUMNS]
        self._next = 0
        self._len = 0
        self._lock = threading.Lock()

    def append(self, sample: Sample, level: str = "ok") -> None:
        row = summarize(sample, level)
        with self._lock:
            i = self._next
            for col, value in zip(self._cols, row):
                col[i] = value
            self._next = (i + 1) % self.capacity
            self._len = min(self._len + 1, self.capacity)

    def __len__(self) -> int:
        return self._len

    def _order(self, last: int | None) -> list[int]:
        n = self._len if last is None else min(last, self._len)
        start = (self._next - n) % self.capacity
        return [(start + k) % self.capacity for k in range(n)]

    def series(
        self, name: str, *, since: float | None = None, last: int | None = None
    ) -> tuple[list[float], list[float]]:
        """``(times, values)`` of one column, oldest first."""
        ci = COLUMNS.index(name)
        with self._lock:
            idx = self._order(last)
            t = self._cols[0]
            c = self._cols[ci]
            xs = [t[i] for i in idx]
            ys = [c[i] for i in idx]
        if since is not None:
            keep = [k for k, x in enumerate(xs) if x >= since]
            xs = [xs[k] for k in keep]
            ys = [ys[k] for k in keep]
        return xs, ys

    def rows(
        self, *, last: int | None = None, since: float | None = None, columns: Sequence[str] | None = None
    ) -> list[dict[str, float | None]]:
        """Rows as dicts (NaN becomes None), oldest first."""
        names = list(columns) if columns else list(COLUMNS)
        cis = [COLUMNS.index(n) for n in names]
        if "time" not in names:
            names.insert(0, "time")
            cis.insert(0, 0)
        with self._lock:
            idx = self._order(last)
            data = [[self._cols[ci][i] for ci in cis] for i in idx]
        out = []
        for values in data:
            if since is not None and values[0] < since:
                continue
            out.append({n: (None if math.isnan(v) else v) for n, v in zip(names, values)})
        return out

    def trend(self, name: str, window_seconds: float | None = None, max_points: int = 120) -> Trend | None:
        """A robust trend of one column over the last ``window_seconds`` (all if None)."""
        since = time.time() - window_seconds if window_seconds else None
        xs, ys = self.series(name, since=since)
        return trend(xs, ys, max_points=max_points)

    def memory_bytes(self) -> int:
        """What the ring itself occupies."""
        return sum(c.buffer_info()[1] * c.itemsize for c in self._cols)

    def clear(self) -> None:
        with self._lock:
            for col in self._cols:
                for i in range(self.capacity):
                    col[i] = NAN
            self._next = self._len = 0


class HistoryStore:
    """Long-term history in a SQLite file: one aggregated row per interval.

    Rows hold the mean and max of every :data:`COLUMNS` value over ``interval`` seconds.
    Writes happen on the monitor thread, at most once per interval, in one short
    transaction; rows older than ``retention_days`` are pruned hourly. Any SQLite error
    is remembered in :attr:`last_error` and never raised into the host.
    """

    def __init__(self, path: str | os.PathLike[str], interval: float = 10.0, retention_days: float = 7.0) -> None:
        self.path = os.fspath(path)
        self.interval = interval
        self.retention = retention_days * 86400.0
        self.last_error: str | None = None
        self._pending: list[tuple[float, ...]] = []
        self._bucket_start: float | None = None
        self._pruned_at = 0.0
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        import sqlite3  # imported on first use: importing memdiag stays cheap

        if self._conn is None:
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=1.0, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            cols = ", ".join(f"{c}_mean REAL, {c}_max REAL" for c in COLUMNS[1:])
            conn.execute(f"CREATE TABLE IF NOT EXISTS samples (time REAL PRIMARY KEY, n INTEGER, {cols})")
            self._conn = conn
        return self._conn

    def add(self, sample: Sample, level: str = "ok") -> None:
        """Buffer one sample; flushes an aggregated row when the interval is over."""
        row = summarize(sample, level)
        with self._lock:
            if self._bucket_start is None:
                self._bucket_start = row[0]
            self._pending.append(row)
            if row[0] - self._bucket_start >= self.interval:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        rows, self._pending = self._pending, []
        self._bucket_start = None
        if not rows:
            return
        values: list[float | None] = [rows[-1][0], len(rows)]
        for ci in range(1, len(COLUMNS)):
            col = [r[ci] for r in rows if not math.isnan(r[ci])]
            values += [sum(col) / len(col), max(col)] if col else [None, None]
        try:
            conn = self._connect()
            marks = ", ".join("?" for _ in values)
            conn.execute(f"INSERT OR REPLACE INTO samples VALUES ({marks})", values)
            now = time.time()
            if now - self._pruned_at > 3600:
                conn.execute("DELETE FROM samples WHERE time < ?", (now - self.retention,))
                self._pruned_at = now
            self.last_error = None
        except (_sqlite_error(), OSError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"

    def query(
        self,
        since: float | None = None,
        until: float | None = None,
        columns: Sequence[str] = ("rss",),
        limit: int = 10000,
    ) -> list[dict[str, Any]]:
        """Stored rows in time order: ``time``, ``n`` and ``<col>_mean``/``<col>_max``."""
        bad = [c for c in columns if c not in COLUMNS[1:]]
        if bad:
            raise ValueError(f"unknown history column(s): {', '.join(bad)}")
        names = ["time", "n"] + [f"{c}_{a}" for c in columns for a in ("mean", "max")]
        sql = f"SELECT {', '.join(names)} FROM samples WHERE time >= ? AND time <= ? ORDER BY time LIMIT ?"
        with self._lock:
            try:
                cur = self._connect().execute(sql, (since or 0.0, until or 1e18, int(limit)))
                return [dict(zip(names, r)) for r in cur.fetchall()]
            except (_sqlite_error(), OSError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                return []

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            if self._conn is not None:
                try:
                    self._conn.close()
                except _sqlite_error():
                    pass
                self._conn = None


def _sqlite_error() -> type[Exception]:
    import sqlite3

    return sqlite3.Error
