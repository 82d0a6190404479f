"""History by default: the per-service SQLite file, its bounds and faults, and `memdiag history`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memdiag.config import MemoryConfig
from memdiag.history import (
    COLUMNS,
    DOWNSAMPLE_SECONDS,
    HistoryStore,
    default_history_path,
    history_path,
    service_name_from_argv,
)
from memdiag.service import MemoryDiagnostics

from .conftest import wait_for
from .test_pressure import make_sample

SERVICE = """
import sys, memdiag
memdiag.start(service_name="svc", sample_interval=0.05, profile_interval=1.0, history_db_interval=1.0,
              leak_detection=False)
print("ready", flush=True)
sys.stdin.read()          # runs until its stdin closes
"""


def test_history_is_on_by_default_in_the_state_dir(fast_config: MemoryConfig) -> None:
    state = os.environ["XDG_STATE_HOME"]
    assert service_name_from_argv(["/srv/app.py"]) == "app"
    assert service_name_from_argv(["/venv/lib/pkg/__main__.py"]) == "pkg"
    assert service_name_from_argv(["-c"]) == "python"
    assert default_history_path("my api/../x") == os.path.join(state, "memdiag", "my_api_.._x.sqlite")
    d = MemoryDiagnostics(fast_config.updated(service_name="orders"))
    try:
        assert d.store is not None and d.store.path == os.path.join(state, "memdiag", "orders.sqlite")
        for _ in range(3):
            d.tick()
        d.store.flush()
        assert HistoryStore(d.store.path, readonly=True).query(columns=["rss"])
        assert d.diagnostics()["history"]["store_mode"] == "sqlite"
    finally:
        d.close()
    assert history_path(fast_config.updated(history_persist=False)) is None
    assert history_path(fast_config.updated(history_db="~/h.sqlite")) == os.path.expanduser("~/h.sqlite")


def test_events_downsampling_and_the_size_bound(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite", interval=10, retention_days=7, max_bytes=1024 * 1024)
    t0 = time.time() - 2 * 86400  # two days ago: past the downsampling age
    for i in range(600):  # 100 minutes of 1 s samples -> 60 rows of 10 s
        store.add(make_sample(100 + i, t=t0 + i * 10 / 1))
    store.add_event("pressure", {"from": "ok", "to": "critical"}, at=t0 + 5)
    store.flush()
    before = store.query(columns=["rss"], limit=10**6)
    store.maintain()
    after = store.query(columns=["rss"], limit=10**6)
    assert len(after) < len(before) / 10  # 10 s rows became 5-minute rows
    assert sum(r["n"] for r in after) == sum(r["n"] for r in before)  # no sample lost in the merge
    assert max(r["rss_max"] for r in after) == max(r["rss_max"] for r in before)
    assert after[-1]["time"] - after[0]["time"] >= DOWNSAMPLE_SECONDS
    assert [e["data"]["to"] for e in store.events(kinds=["pressure"])] == ["critical"]
    # The bound: far more recent rows than 1 MiB holds; maintenance drops the oldest.
    now = time.time()
    width = 4 + 2 * (len(COLUMNS) - 1)
    with contextlib.closing(sqlite3.connect(store.path)) as conn:  # bulk rows, as months of writes would leave
        conn.executemany(
            f"INSERT INTO samples VALUES ({', '.join('?' * width)})",
            [(now - 20000 + i, 1, 1, 1.0) + (float(i),) * (width - 4) for i in range(20000)],
        )
        conn.commit()
        big = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
    store.maintain()
    assert big > 1024 * 1024 and store.size_bytes() <= 1024 * 1024 + 64 * 1024
    assert store.query(since=now - 60, columns=["rss"])  # the newest rows are the ones kept
    store.close()


def test_a_broken_file_falls_back_to_memory_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fast_config: MemoryConfig
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    d = MemoryDiagnostics(fast_config.updated(history_db=str(blocker / "h.sqlite"), history_db_interval=1.0))
    try:
        with caplog.at_level(logging.WARNING, logger="memdiag"):
            for _ in range(5):
                d.tick()
                d.store.flush()
        warnings = [r for r in caplog.records if "history file" in r.getMessage()]
        assert len(warnings) == 1 and "in memory only" in warnings[0].getMessage()
        report = d.diagnostics()["history"]
        assert report["store_mode"] == "memory" and report["store_error"]
        assert len(d.history) >= 5  # the ring goes on
    finally:
        d.close()


def test_a_version_1_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    cols = ", ".join(f"{c}_mean REAL, {c}_max REAL" for c in COLUMNS[1:])
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"CREATE TABLE samples (time REAL PRIMARY KEY, n INTEGER, {cols})")
        conn.execute("INSERT INTO samples (time, n, rss_mean, rss_max) VALUES (?, 3, 10.0, 12.0)", (time.time(),))
        conn.commit()
    store = HistoryStore(path, interval=1)
    store.add(make_sample(5, t=time.time()))
    store.flush()
    rows = store.query(columns=["rss"])
    assert [r["pid"] for r in rows] == [0, os.getpid()] and rows[0]["rss_max"] == 12.0
    store.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memdiag", "history", *args], capture_output=True, text=True, timeout=60
    )


def _rows_of(path: str, pid: int) -> bool:
    if not os.path.exists(path):
        return False
    try:
        return bool(HistoryStore(path, readonly=True).query(pid=pid, columns=["rss"]))
    except sqlite3.Error:
        return False


@pytest.mark.slow
def test_history_survives_a_restart_live_and_stopped(children: list) -> None:
    path = default_history_path("svc")
    first = subprocess.Popen([sys.executable, "-c", SERVICE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    children.append(first)
    assert first.stdout.readline().strip() == "ready"
    wait_for(lambda: _rows_of(path, first.pid), timeout=20, what="rows of the first run")
    first.kill()  # a crash: what reached the file must stay
    first.wait(10)
    second = subprocess.Popen([sys.executable, "-c", SERVICE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    children.append(second)
    assert second.stdout.readline().strip() == "ready"
    wait_for(lambda: _rows_of(path, second.pid), timeout=20, what="rows of the second run")
    live = _cli("svc", "--json", "--since", "10m")
    assert live.returncode == 0, live.stderr
    pids = {r["pid"] for r in json.loads(live.stdout)["rows"]}
    assert {first.pid, second.pid} <= pids  # samples from before the restart, while it runs
    second.stdin.close()
    assert second.wait(10) == 0
    stopped = _cli("--json", "--since", "10m")  # the only history file there is
    assert stopped.returncode == 0, stopped.stderr
    data = json.loads(stopped.stdout)
    assert data["file"] == path and {first.pid, second.pid} <= {r["pid"] for r in data["rows"]}
    assert all(r["rss_max"] > 0 for r in data["rows"])
    text = _cli("svc", "--since", "1h")
    assert text.returncode == 0 and "rss (max per row)" in text.stdout and "MiB" in text.stdout
    csv_out = _cli("svc", "--csv", "--since", "30m").stdout.splitlines()
    assert csv_out[0].startswith("time,pid,n,rss_mean,rss_max") and len(csv_out) == len(data["rows"]) + 1


def test_history_cli_errors_are_clear() -> None:
    r = _cli("nosuch", "--json")
    assert r.returncode == 1 and "no history for service 'nosuch'" in r.stderr
    r = _cli("--since", "soon")
    assert r.returncode == 2 and "not a duration" in r.stderr


def test_transitions_and_cleanups_reach_the_file(fast_config: MemoryConfig) -> None:
    d = MemoryDiagnostics(fast_config.updated(service_name="events", history_db_interval=1.0))
    try:
        d.tick()
        d.configure(memory_threshold_mb=1.0)  # RSS is far above 1 MiB: critical at once
        d.tick()
        d.cleanup(force=True)
        d.store.flush()
        events = HistoryStore(d.store.path, readonly=True).events()
    finally:
        d.close()
    kinds = [e["kind"] for e in events]
    assert "pressure" in kinds and "cleanup" in kinds, kinds
    pressure = next(e for e in events if e["kind"] == "pressure")
    assert pressure["data"]["to"] == "critical" and pressure["pid"] == os.getpid()
    assert next(e for e in events if e["kind"] == "cleanup")["data"]["reason"] == "forced"
    r = _cli("events", "--json", "--since", "5m")
    assert r.returncode == 0 and {e["kind"] for e in json.loads(r.stdout)["events"]} >= {"pressure", "cleanup"}


def test_the_files_descriptors_are_memdiags_own(fast_config: MemoryConfig) -> None:
    from memdiag import registry

    d = MemoryDiagnostics(fast_config.updated(service_name="fds", history_db_interval=1.0))
    try:
        d.tick()
        d.store.flush()
        real = os.path.realpath(d.store.path)
        db_fds = set()
        for n in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{n}").startswith(real):
                    db_fds.add(int(n))
            except FileNotFoundError:  # the listing's own descriptor, closed already
                pass
        assert db_fds and db_fds <= registry.own_fds()  # not counted as the application's
    finally:
        d.close()
    assert not db_fds & registry.own_fds()  # closed: forgotten
