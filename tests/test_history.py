"""History ring, robust trend statistics and the SQLite store."""

from __future__ import annotations

import contextlib
import math
import random
import sqlite3
import time

import pytest

from memdiag.history import COLUMNS, History, HistoryStore
from memdiag.stats import mann_kendall, theil_sen, trend

from .test_pressure import make_sample


def test_ring_overwrites_oldest_and_keeps_order() -> None:
    h = History(5)
    for i in range(8):
        h.append(make_sample(10 + i, t=float(i)))
    xs, ys = h.series("rss")
    assert xs == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert ys == sorted(ys)
    assert len(h.rows()) == 5 and h.rows(last=2)[0]["time"] == 6.0
    assert h.rows()[0]["uss"] is None  # NaN becomes None


def test_memory_is_fixed_by_capacity() -> None:
    h = History(3600)
    before = h.memory_bytes()
    for i in range(5000):
        h.append(make_sample(1, t=float(i)))
    assert h.memory_bytes() == before
    assert before == 3600 * len(COLUMNS) * 8


def test_theil_sen_resists_outliers() -> None:
    xs = list(range(50))
    ys = [2.0 * x + 1 for x in xs]
    for i in (5, 17, 33):
        ys[i] = 1e6
    slope, intercept = theil_sen(xs, ys)
    assert slope == pytest.approx(2.0) and intercept == pytest.approx(1.0)


def test_mann_kendall_significance() -> None:
    rng = random.Random(1)
    up = [i + rng.gauss(0, 3) for i in range(60)]
    noise = [rng.gauss(0, 3) for _ in range(60)]
    assert mann_kendall(up)[1] < 1e-6
    assert mann_kendall(noise)[1] > 0.01


def test_trend_growth_plateau_and_projection() -> None:
    xs = [float(i) for i in range(120)]
    leak = [1000.0 + 10 * x for x in xs]
    t = trend(xs, leak)
    assert t is not None and t.growing and not t.plateau
    assert t.slope_per_second == pytest.approx(10.0)
    assert t.seconds_until(3000.0, leak[-1]) == pytest.approx((3000 - leak[-1]) / 10)
    warm = [min(1000.0 + 30 * x, 2500.0) for x in xs]  # warms up, then flat
    tw = trend(xs, warm)
    assert tw is not None and tw.plateau
    assert trend(xs[:3], leak[:3]) is None
    assert trend(xs, [math.nan] * 120) is None


def test_sqlite_store_aggregates_persists_and_survives_errors(tmp_path) -> None:
    path = tmp_path / "hist" / "memdiag.sqlite"
    store = HistoryStore(path, interval=10, retention_days=1)
    t0 = time.time() - 100
    for i in range(35):
        store.add(make_sample(100 + i, t=t0 + i))
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM samples").fetchone()
    assert n == 4  # three full 10 s buckets + the flushed remainder
    again = HistoryStore(path)
    rows = again.query(columns=["rss"])
    assert rows[0]["n"] == 11 and rows[0]["rss_max"] > rows[0]["rss_mean"]
    old = HistoryStore(path, interval=1, retention_days=0.5)
    old.add(make_sample(1, t=time.time() - 86400))
    old.add(make_sample(1, t=time.time()))
    old.close()  # pruning drops the row older than the retention
    assert all(r["time"] > time.time() - 43200 for r in HistoryStore(path).query())
    with pytest.raises(ValueError):
        again.query(columns=["nope"])
    again.close()
    broken = HistoryStore(tmp_path / "file-not-dir" / "x.sqlite")
    (tmp_path / "file-not-dir").write_text("a file where a directory should be")
    broken.add(make_sample(1, t=1.0))
    broken.flush()
    assert broken.last_error is not None  # recorded, never raised


def test_service_writes_the_store(diag, tmp_path) -> None:
    db = tmp_path / "h.sqlite"
    diag.configure(history_db=str(db), history_db_interval=1)
    for _ in range(3):
        diag.tick()
    diag.store.flush()
    assert HistoryStore(db).query(columns=["rss", "children"])
