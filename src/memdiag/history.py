"""History: a fixed-size in-memory ring of sample summaries, trends, and a SQLite store.

The ring keeps a handful of numbers per sample in ``array('d')`` columns, not the
samples themselves: 3600 samples cost about 0.6 MB whatever the number of children,
so the monitor's own memory stays flat when its history is full. :class:`HistoryStore`
(on by default, one file per service under the user's state directory) aggregates samples
into one row per ``history_db_interval`` (mean and max) in a SQLite file with the
pressure transitions, cleanups and leak verdicts beside them, downsamples and prunes it,
keeps it under ``history_max_mb``, and survives restarts.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import sys
import threading
import time
import weakref
from array import array
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._logging import get_logger
from .pressure import RANK
from .sample import Sample
from .stats import Trend, trend

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "COLUMNS",
    "History",
    "HistoryStore",
    "default_history_path",
    "history_path",
    "service_name_from_argv",
    "state_dir",
    "summarize",
]

log = get_logger("memdiag")

#: The history store's SQLite page cache (``PRAGMA cache_size``): rows are written once and
#: rarely read back, so a small cache holds what a write touches; it fills up to this over
#: the first minutes and is counted at this ceiling in ``own_cost``.
STORE_CACHE_BYTES = 128 * 1024

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
        float(RANK.get(level, 0)),
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
        self._appended = 0
        self._lock = threading.Lock()

    def append(self, sample: Sample, level: str = "ok") -> None:
        self._append_row(summarize(sample, level))

    def _append_row(self, row: Sequence[float]) -> None:
        with self._lock:
            i = self._next
            for col, value in zip(self._cols, row):
                col[i] = value
            self._next = (i + 1) % self.capacity
            self._len = min(self._len + 1, self.capacity)
            self._appended += 1

    def __len__(self) -> int:
        return self._len

    @property
    def appended(self) -> int:
        """Rows appended since the ring was made: changes with every append, even when
        the ring is full (a key for caching what is computed from it)."""
        return self._appended

    def resized(self, capacity: int) -> History:
        """A new ring of ``capacity`` holding this one's most recent rows, oldest first."""
        new = History(capacity)
        with self._lock:
            idx = self._order(capacity)
            rows = [[col[i] for col in self._cols] for i in idx]
        for row in rows:
            new._append_row(row)
        return new

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


# -- the SQLite store --------------------------------------------------------------------

#: Rows older than this are merged into :data:`DOWNSAMPLE_SECONDS` rows by maintenance.
DOWNSAMPLE_AFTER = 86400.0
DOWNSAMPLE_SECONDS = 300.0
#: Seconds between maintenance passes (retention, downsampling, the size bound).
MAINTENANCE_EVERY = 3600.0
#: Seconds a failed store waits before it tries its file again.
RETRY_AFTER = 60.0
#: Events kept at most (pressure transitions, cleanups, leak verdicts); the oldest go first.
MAX_EVENTS = 10000
_MAX_PENDING_EVENTS = 256
_SCHEMA_VERSION = 2
EVENT_KINDS = ("pressure", "cleanup", "leak")

_ABANDONED: list[Any] = []  # connections inherited over fork(): never closed in the child
_STORES: weakref.WeakSet[HistoryStore] = weakref.WeakSet()


def service_name_from_argv(argv: Sequence[str] | None = None) -> str:
    """The program's name as a service name: ``app.py`` -> ``app``; ``python -m pkg`` -> ``pkg``."""
    args = list(sys.argv if argv is None else argv)
    first = args[0] if args else ""
    if not first or first in ("-c", "-"):
        return "python"
    base = os.path.basename(first)
    if base == "__main__.py":  # python -m pkg: argv[0] is pkg/__main__.py
        base = os.path.basename(os.path.dirname(first)) or "python"
    stem, ext = os.path.splitext(base)
    return stem if ext in (".py", ".pyw", ".pyz") and stem else base


def safe_service_name(name: str) -> str:
    """``name`` with only ``[A-Za-z0-9._-]`` kept (others become ``_``), at most 64 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name.strip())[:64].lstrip(".")
    return cleaned or "python"


def state_dir() -> str:
    """memdiag's per-user state directory: ``$XDG_STATE_HOME/memdiag`` (``~/.local/state``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "memdiag")


def default_history_path(service_name: str | None = None) -> str:
    """Where a service's history file is by default: ``<state dir>/<service name>.sqlite``."""
    return os.path.join(state_dir(), safe_service_name(service_name or service_name_from_argv()) + ".sqlite")


def history_path(config: Any) -> str | None:
    """The history file a configuration asks for: ``history_db``, else the per-service
    default; ``None`` when ``history_persist`` is off."""
    if not config.history_persist:
        return None
    return os.path.expanduser(config.history_db) if config.history_db else default_history_path(config.service_name)


def _mean_max_sql() -> str:
    """Column aggregates for merging rows: weighted means and maxima."""
    parts = []
    for c in COLUMNS[1:]:
        parts.append(f"SUM({c}_mean * n) / SUM(CASE WHEN {c}_mean IS NULL THEN NULL ELSE n END)")
        parts.append(f"MAX({c}_max)")
    return ", ".join(parts)


class HistoryStore:
    """Long-term history in a SQLite file: one aggregated row per interval, plus events.

    Rows hold the mean and max of every :data:`COLUMNS` value over ``interval`` seconds,
    keyed by time and PID (the workers of a pre-fork server may share one file). Writes
    happen on the monitor thread, at most once per interval, in one short transaction
    (WAL). Maintenance, hourly: rows past ``retention_days`` are dropped, rows older than
    a day are merged into 5-minute rows, and the oldest rows go while the file is over
    ``max_bytes``. Events (pressure transitions, cleanups, leak verdicts) are buffered and
    written with the next row.

    Any SQLite or OS error is remembered in :attr:`last_error`, logged once as a warning,
    and never raised into the host: history is then kept in memory only (the ring), and
    the file is tried again every minute.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        interval: float = 10.0,
        retention_days: float = 7.0,
        max_bytes: int = 64 * 1024 * 1024,
        *,
        readonly: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self.interval = interval
        self.retention = retention_days * 86400.0
        self.max_bytes = max(int(max_bytes), 1024 * 1024)
        self.readonly = readonly
        self.last_error: str | None = None
        self.failures = 0
        self._warned = False
        self._retry_at = 0.0
        self._events: list[tuple[float, int, str, str]] = []
        self._reset_bucket()
        self._maintained_at = 0.0
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._own: frozenset[int] = frozenset()  # SQLite's descriptors, marked as memdiag's
        self._pid = os.getpid()
        _STORES.add(self)

    @property
    def mode(self) -> str:
        """``"sqlite"`` while the file works, ``"memory"`` after a failure."""
        return "memory" if self.last_error else "sqlite"

    # -- connection -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        import sqlite3  # imported on first use: importing memdiag stays cheap

        if self._conn is not None:
            return self._conn
        if self.readonly:
            if not os.path.exists(self.path):
                raise FileNotFoundError(f"no history file at {self.path}")
            import urllib.parse

            uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=1.0, check_same_thread=False, isolation_level=None)
        else:
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, mode=0o700, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=1.0, check_same_thread=False, isolation_level=None)
            try:
                self._prepare(conn)
            except BaseException:
                conn.close()
                raise
        self._conn = conn
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect on a new file
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA journal_size_limit={4 * 1024 * 1024}")
        conn.execute(f"PRAGMA cache_size=-{STORE_CACHE_BYTES // 1024}")  # negative: KiB
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version >= _SCHEMA_VERSION:
            return
        cols = ", ".join(f"{c}_mean REAL, {c}_max REAL" for c in COLUMNS[1:])
        conn.execute("BEGIN IMMEDIATE")
        try:
            old = [r[1] for r in conn.execute("PRAGMA table_info(samples)")]
            if old and "pid" not in old:  # version 1: one process per file, no span
                conn.execute("ALTER TABLE samples RENAME TO samples_v1")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS samples (time REAL NOT NULL, pid INTEGER NOT NULL, "
                f"n INTEGER, span REAL, {cols}, PRIMARY KEY (time, pid))"
            )
            if old and "pid" not in old:
                names = ", ".join(f"{c}_mean, {c}_max" for c in COLUMNS[1:])
                conn.execute(
                    f"INSERT OR IGNORE INTO samples (time, pid, n, span, {names}) "
                    f"SELECT time, 0, n, NULL, {names} FROM samples_v1"
                )
                conn.execute("DROP TABLE samples_v1")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS events (time REAL NOT NULL, pid INTEGER, kind TEXT NOT NULL, data TEXT)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS events_time ON events (time)")
            conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _mark_own_fds(self) -> None:
        """Mark the database, WAL and shared-memory descriptors as memdiag's own, so the
        application's fd count (and its leak verdicts) never include them."""
        from . import registry

        wanted = {os.path.realpath(self.path) + suffix for suffix in ("", "-wal", "-shm")}
        found = set()
        try:
            for name in os.listdir("/proc/self/fd"):
                try:
                    if os.readlink(f"/proc/self/fd/{name}") in wanted:
                        found.add(int(name))
                except OSError:
                    continue
        except OSError:
            return
        for fd in found:
            registry.own_fd(fd)
        self._own = frozenset(found)

    def _disown_fds(self) -> None:
        from . import registry

        for fd in self._own:
            registry.disown_fd(fd)
        self._own = frozenset()

    def _fault(self, exc: BaseException) -> None:
        """Remember a failure; say so once; retry the file later."""
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        self._retry_at = time.monotonic() + RETRY_AFTER
        if self._conn is not None:
            self._disown_fds()
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
        if not self._warned:
            self._warned = True
            log.warning(
                "memdiag history file %s is unusable (%s): history is kept in memory only, "
                "and the file is tried again every %d s",
                self.path,
                self.last_error,
                int(RETRY_AFTER),
            )

    # -- writing ----------------------------------------------------------------------
    def _reset_bucket(self) -> None:
        """The running sums of the row being built: a fixed size, whatever the interval."""
        k = len(COLUMNS) - 1
        self._n = 0
        self._first = self._last = 0.0
        self._sums = [0.0] * k
        self._counts = [0] * k
        self._maxes = [-math.inf] * k

    def add(self, sample: Sample, level: str = "ok") -> None:
        """Add one sample to the current row; writes the row when the interval is over."""
        row = summarize(sample, level)
        with self._lock:
            if self._n == 0:
                self._first = row[0]
            self._n += 1
            self._last = row[0]
            sums, counts, maxes = self._sums, self._counts, self._maxes
            for i in range(len(sums)):
                v = row[i + 1]
                if v == v:  # not NaN
                    sums[i] += v
                    counts[i] += 1
                    if v > maxes[i]:
                        maxes[i] = v
            if row[0] - self._first >= self.interval:
                self._flush_locked()

    def add_event(self, kind: str, data: Mapping[str, Any], at: float | None = None) -> None:
        """Buffer one event (``pressure``, ``cleanup`` or ``leak``); written with the next row."""
        import json
        try:
            text = json.dumps(data, default=str, separators=(",", ":"))[:20000]
        except (TypeError, ValueError) as exc:
            text = json.dumps({"error": f"not serialisable: {exc}"})
        with self._lock:
            if len(self._events) < _MAX_PENDING_EVENTS:
                self._events.append((time.time() if at is None else at, os.getpid(), kind, text))

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _row(self) -> list[float | int | None]:
        values: list[float | int | None] = [self._last, os.getpid(), self._n, self._last - self._first]
        for total, count, top in zip(self._sums, self._counts, self._maxes):
            values += [total / count, top] if count else [None, None]
        return values

    def _flush_locked(self) -> None:
        row = self._row() if self._n else None
        events, self._events = self._events, []
        self._reset_bucket()
        if (row is None and not events) or self.readonly:
            return
        if self.last_error is not None and time.monotonic() < self._retry_at:
            return  # failed recently: memory only (the ring) until the retry
        try:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if row is not None:
                    marks = ", ".join("?" for _ in row)
                    conn.execute(f"INSERT OR REPLACE INTO samples VALUES ({marks})", row)
                if events:
                    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", events)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if time.monotonic() - self._maintained_at > MAINTENANCE_EVERY or self._maintained_at == 0.0:
                self._maintain(conn)
            if not self._own:
                self._mark_own_fds()
            if self.last_error is not None:
                log.info("memdiag history file %s works again", self.path)
            self.last_error = None
        except (_sqlite_error(), OSError) as exc:
            self._fault(exc)

    def maintain(self) -> None:
        """Run retention, downsampling and the size bound now (normally hourly)."""
        with self._lock:
            try:
                self._maintain(self._connect())
            except (_sqlite_error(), OSError) as exc:
                self._fault(exc)

    def _maintain(self, conn: sqlite3.Connection) -> None:
        self._maintained_at = time.monotonic()
        now = time.time()
        conn.execute("DELETE FROM samples WHERE time < ?", (now - self.retention,))
        conn.execute("DELETE FROM events WHERE time < ?", (now - self.retention,))
        conn.execute(
            "DELETE FROM events WHERE rowid <= (SELECT rowid FROM events ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
            (MAX_EVENTS,),
        )
        self._downsample(conn, now - DOWNSAMPLE_AFTER)
        self._bound_size(conn)

    def _downsample(self, conn: sqlite3.Connection, cutoff: float) -> None:
        """Merge rows older than ``cutoff`` into one row per process and 5 minutes."""
        w = DOWNSAMPLE_SECONDS
        where = f"time < {cutoff!r} AND (span IS NULL OR span < {w!r})"
        (k,) = conn.execute(f"SELECT COUNT(*) FROM samples WHERE {where}").fetchone()
        if not k:
            return
        names = ", ".join(f"{c}_mean, {c}_max" for c in COLUMNS[1:])
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"CREATE TEMP TABLE merged AS SELECT MAX(time) AS time, pid, SUM(n) AS n, {w!r} AS span, "
                f"{_mean_max_sql()} FROM samples WHERE {where} GROUP BY pid, CAST(time / {w!r} AS INTEGER)"
            )
            conn.execute(f"DELETE FROM samples WHERE {where}")
            conn.execute(f"INSERT OR REPLACE INTO samples (time, pid, n, span, {names}) SELECT * FROM merged")
            conn.execute("DROP TABLE merged")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _bound_size(self, conn: sqlite3.Connection) -> None:
        """Drop the oldest rows while the data is over ``max_bytes``; give the pages back."""
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        for _ in range(8):
            pages, free = conn.execute("PRAGMA page_count").fetchone()[0], conn.execute("PRAGMA freelist_count").fetchone()[0]
            used = (pages - free) * page
            if used <= self.max_bytes:
                break
            (count,) = conn.execute("SELECT COUNT(*) FROM samples").fetchone()
            drop = max(1, int(count * (1.0 - 0.8 * self.max_bytes / used)))
            conn.execute(
                "DELETE FROM samples WHERE time <= (SELECT time FROM samples ORDER BY time LIMIT 1 OFFSET ?)",
                (min(drop, count) - 1,),
            )
            if count <= 1:
                conn.execute("DELETE FROM events")
                break
        conn.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page only
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def size_bytes(self) -> int:
        """The file's size on disk, its WAL included (0 when absent)."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return total

    # -- reading ----------------------------------------------------------------------
    def query(
        self,
        since: float | None = None,
        until: float | None = None,
        columns: Sequence[str] = ("rss",),
        limit: int = 10000,
        *,
        pid: int | None = None,
        max_points: int | None = None,
    ) -> list[dict[str, Any]]:
        """Stored rows in time order: ``time``, ``pid``, ``n`` and ``<col>_mean``/``<col>_max``.

        With ``max_points``, rows are merged into at most that many evenly spaced buckets
        (weighted means, maxima; ``pid`` is then the last row's).
        """
        bad = [c for c in columns if c not in COLUMNS[1:]]
        if bad:
            raise ValueError(f"unknown history column(s): {', '.join(bad)}")
        lo, hi = (since or 0.0), (until or 1e18)
        where = "time >= ? AND time <= ?" + (" AND pid = ?" if pid is not None else "")
        args: list[Any] = [lo, hi] + ([pid] if pid is not None else [])
        names = ["time", "pid", "n"] + [f"{c}_{a}" for c in columns for a in ("mean", "max")]
        if max_points:
            width = max((min(hi, time.time()) - lo) / max_points, 1e-3) if since else None
            aggs = []
            for c in columns:
                aggs += [f"SUM({c}_mean * n) / SUM(CASE WHEN {c}_mean IS NULL THEN NULL ELSE n END)", f"MAX({c}_max)"]
            group = f"CAST(time / {width!r} AS INTEGER)" if width else "time"
            sql = (
                f"SELECT MAX(time), MAX(pid), SUM(n), {', '.join(aggs)} FROM samples WHERE {where} "
                f"GROUP BY {group} ORDER BY 1 LIMIT ?"
            )
        else:
            sql = f"SELECT {', '.join(names)} FROM samples WHERE {where} ORDER BY time LIMIT ?"
        with self._lock:
            try:
                cur = self._connect().execute(sql, (*args, int(limit)))
                return [dict(zip(names, r)) for r in cur.fetchall()]
            except (_sqlite_error(), OSError) as exc:
                if self.readonly:
                    raise
                self._fault(exc)
                return []

    def events(self, since: float | None = None, kinds: Sequence[str] | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Stored events in time order: ``time``, ``pid``, ``kind`` and ``data`` (a dict)."""
        import json
        sql = "SELECT time, pid, kind, data FROM events WHERE time >= ?"
        args: list[Any] = [since or 0.0]
        if kinds:
            sql += f" AND kind IN ({', '.join('?' for _ in kinds)})"
            args += list(kinds)
        sql += " ORDER BY time LIMIT ?"
        with self._lock:
            try:
                rows = self._connect().execute(sql, (*args, int(limit))).fetchall()
            except (_sqlite_error(), OSError) as exc:
                if self.readonly:
                    raise
                self._fault(exc)
                return []
        out = []
        for t, p, kind, data in rows:
            try:
                parsed = json.loads(data) if data else None
            except ValueError:
                parsed = None
            out.append({"time": t, "pid": p, "kind": kind, "data": parsed})
        return out

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            if self._conn is not None:
                self._disown_fds()
                try:
                    self._conn.close()
                except _sqlite_error():
                    pass
                self._conn = None

    def _after_fork_in_child(self) -> None:
        # SQLite forbids using a connection across fork(); closing it in the child could
        # disturb the parent's WAL, so it is kept, unused, until the child exits.
        if self._conn is not None:
            _ABANDONED.append(self._conn)  # its descriptors stay open: still memdiag's own
            self._conn = None
        self._own = frozenset()
        self._lock = threading.Lock()
        self._events = []
        self._reset_bucket()


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _sqlite_error() -> type[Exception]:
    import sqlite3

    return sqlite3.Error


RELEASE_STEP_BYTES = 1 << 20  # a fall of "everything else" this large between two samples is a release


def growth_split(history: History, seconds: float = 30.0) -> dict[str, float]:
    """Where memory grew over the last ``seconds``: bytes per second of process RSS, of
    the registered caches, and of everything else (``rss - caches``). Empty when the ring
    holds under two samples of that span.

    ``other_growth_bytes_per_second`` is everything else's growth with its releases left
    out (each fall of :data:`RELEASE_STEP_BYTES` or more from one sample to the next: a
    cleanup rung, a collection): what keeps growing underneath. End to end, a cleanup
    that freed a leak's objects inside the span hid the leak (a negative rate) and the
    next escalation emptied a healthy cache."""
    t, rss = history.series("rss")
    _, cache = history.series("cache_bytes")
    if not t:
        return {}
    since = t[-1] - seconds
    pts = [(x, r, c if c == c else 0.0) for x, r, c in zip(t, rss, cache) if x >= since and r == r]
    if len(pts) < 2 or pts[-1][0] - pts[0][0] <= 0:
        return {}
    (t0, r0, c0), (t1, r1, c1) = pts[0], pts[-1]
    dt = t1 - t0
    other = [r - c for _, r, c in pts]
    released = sum(a - b for a, b in itertools.pairwise(other) if a - b >= RELEASE_STEP_BYTES)
    return {
        "rss_bytes_per_second": (r1 - r0) / dt,
        "cache_bytes_per_second": (c1 - c0) / dt,
        "other_bytes_per_second": (other[-1] - other[0]) / dt,
        "other_growth_bytes_per_second": (other[-1] - other[0] + released) / dt,
        "seconds": dt,
    }

