"""Leak alerts (callbacks, logs, a real webhook server) and the flight recorder."""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from memdiag import leaks
from memdiag.config import MemoryConfig
from memdiag.leaks.census import CensusHistory, type_census, type_name
from memdiag.leaks.classify import retention_suspect
from memdiag.leaks.flight import FlightRecorder
from memdiag.leaks.native import malloc_info
from memdiag.leaks.notify import Notifier
from memdiag.service import MemoryDiagnostics


class Hook:
    """A real HTTP server on 127.0.0.1 that records JSON POSTs (or fails them)."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                hook.bodies.append(json.loads(self.rfile.read(length)))
                time.sleep(delay)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def _suspect(rate: float = 2e6, line: int = 10, conf: float = 0.9) -> dict[str, Any]:
    return {
        "id": "memory",
        "kind": "python_objects",
        "file": "/srv/app.py",
        "line": line,
        "growth_bytes_per_min": rate,
        "growth_per_min": None,
        "confidence": conf,
        "evidence": {},
    }


def test_webhook_dedup_and_updates(hook: Hook, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(update_interval=0.5, max_per_minute=100)
    got: list[dict[str, Any]] = []
    leaks.on_leak(got.append)
    try:
        with caplog.at_level(logging.INFO, logger="memdiag.leaks"):
            assert n.suspect(_suspect(), hook.url) == "new"
            for _ in range(20):  # the same verdict, checked again and again: no new alert
                assert n.suspect(_suspect(rate=2.1e6), hook.url) is None
            assert n.suspect(_suspect(rate=9e6), hook.url) is None  # changed, but too soon
            time.sleep(0.6)
            assert n.suspect(_suspect(rate=9e6), hook.url) == "update"
            assert n.resolved(_suspect(rate=9e6), hook.url) is True
            assert n.resolved(_suspect(rate=9e6), hook.url) is False
            assert n.flush(5.0)
    finally:
        leaks.remove_leak_callback(got.append)
    assert [b["event"] for b in hook.bodies] == ["new", "update", "resolved"]
    assert hook.bodies[0]["suspect"]["file"] == "/srv/app.py" and hook.bodies[0]["key"] == "memory"
    assert [a["event"] for a in got] == ["new", "update", "resolved"]
    records = [r for r in caplog.records if r.name == "memdiag.leaks"]
    assert [r.levelname for r in records] == ["WARNING", "INFO", "INFO"]
    assert records[0].memdiag_leak["event"] == "new"  # type: ignore[attr-defined]
    assert n.report()["webhook_sent"] == 3 and n.report()["webhook_failed"] == 0


def test_a_new_site_is_news_sooner(hook: Hook) -> None:
    n = Notifier(update_interval=3600.0, max_per_minute=100)
    assert n.suspect(_suspect(line=10), hook.url) == "new"
    assert n.suspect(_suspect(line=11), hook.url) is None  # within SITE_CHANGE_INTERVAL
    n._keys["memory"]["sent"] -= 31.0  # as if 31 s had passed
    assert n.suspect(_suspect(line=11), hook.url) == "update"
    assert n.flush(5.0) and [b["event"] for b in hook.bodies] == ["new", "update"]


def test_rate_limit_across_keys(hook: Hook) -> None:
    n = Notifier(max_per_minute=3)
    sent = [n.suspect({**_suspect(), "id": f"k{i}"}, hook.url) for i in range(10)]
    assert sent.count("new") == 3 and n.report()["suppressed"] == 7
    assert n.flush(5.0) and len(hook.bodies) == 3


def test_failing_webhook_never_raises() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    n = Notifier(max_per_minute=100)
    assert n.suspect(_suspect(), dead) == "new"
    assert n.flush(10.0)
    assert n.report()["webhook_failed"] == 1 and "Connection" in n.report()["webhook_last_error"]
    broken = Hook(status=500)
    try:
        assert n.suspect({**_suspect(), "id": "other"}, broken.url) == "new"
        assert n.flush(10.0)
        assert n.report()["webhook_last_status"] == 500 and n.report()["webhook_failed"] == 2
    finally:
        broken.close()
    # A slow webhook does not hold up the caller: posting happens on its own thread.
    slow = Hook(delay=2.0)
    try:
        t0 = time.monotonic()
        n.suspect({**_suspect(), "id": "slow"}, slow.url)
        assert time.monotonic() - t0 < 1.5  # well under the hook's 2 s: it did not wait for it
        assert n.flush(10.0)
    finally:
        slow.close()


def test_callback_errors_are_contained() -> None:
    def bad(alert: dict[str, Any]) -> None:
        raise RuntimeError("user bug")

    leaks.on_leak(bad)
    try:
        n = Notifier()
        assert n.suspect(_suspect(), None) == "new"
        assert n.report()["callback_errors"] == 1
    finally:
        leaks.remove_leak_callback(bad)


# -- flight recorder --------------------------------------------------------------------


def test_flight_recorder_on_critical_pressure(tmp_path: Any) -> None:
    path = tmp_path / "flight" / "memdiag-flight.json"
    cfg = MemoryConfig(
        sample_interval=0.05,
        profile_interval=1.0,
        sustain_seconds=0.0,
        recovery_seconds=0.0,
        enable_auto_cleanup=False,
        memory_threshold_mb=1.0,
        flight_recorder_path=str(path),
    )
    diag = MemoryDiagnostics(cfg).start()  # RSS is far above 1 MB: critical at once
    try:
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        diag.close()
    doc = json.loads(path.read_text())
    # Critical pressure (or, on a host short of memory, the cgroup's OOM/max counters) wrote it.
    assert re.match(r"pressure (\w+ -> critical|critical, already)|cgroup memory events", doc["reason"]), doc["reason"]
    assert doc["pid"] == os.getpid()
    if doc["reason"].startswith("pressure"):
        assert doc["diagnostics"]["profile"]["pressure"]["level"] == "critical"
    assert "suspects" in doc["diagnostics"]["leaks"] and "tracing" in doc["diagnostics"]["leaks"]
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    assert leaks.leaks_report(diag)["flight_recorder"]["writes"] >= 1


def test_flight_recorder_on_oom_events_and_atomicity(tmp_path: Any) -> None:
    rec = FlightRecorder(min_interval=0.0)
    assert rec.event_reason({"oom": 0, "oom_kill": 0, "max": 3}) is None  # first reading: a baseline
    assert rec.event_reason({"oom": 0, "oom_kill": 0, "max": 3}) is None
    assert rec.event_reason({"oom": 1, "oom_kill": 1, "max": 3}) == "cgroup memory events: oom 0->1, oom_kill 0->1"
    path = tmp_path / "rec.json"
    assert rec.write(str(path), "first", lambda: {"n": 1})
    # A failing report build leaves the previous file whole.
    assert not rec.write(str(path), "second", lambda: {"bad": object.__new__(_Unserialisable)})
    assert json.loads(path.read_text())["diagnostics"] == {"n": 1} and rec.last_error
    assert not rec.write(None, "no path", dict)


class _Unserialisable:
    def __str__(self) -> str:
        raise RuntimeError("cannot render")


# -- census, malloc, retention ----------------------------------------------------------


def test_census_finds_growing_type() -> None:
    class Piling:
        pass

    class Steady:
        pass

    # The censuses are of a known set of objects: a census of the whole test process ranks
    # Piling among whatever the earlier tests left (top 40 types only, and counts sampled
    # above a million objects), which depends on the suite's order and the machine's load.
    steady = [Steady() for _ in range(3000)]
    keep: list[Piling] = []
    hist = CensusHistory()
    for _ in range(4):
        keep += [Piling() for _ in range(500)]
        hist.take([*steady, *keep])
    rows = {r["type"]: r for r in hist.report(limit=1000)}
    assert rows[type_name(Piling)]["growing"] and rows[type_name(Piling)]["delta"] == 1500
    assert not rows[type_name(Steady)]["growing"] and rows[type_name(Steady)]["delta"] == 0


def test_census_counts_the_process_objects() -> None:
    class Counted:
        pass

    keep = [Counted() for _ in range(1234)]
    counts = type_census(max_objects=10**9)  # gc.get_objects() of this process, unsampled
    assert counts[Counted] == len(keep)


def test_malloc_info_and_retention_verdict() -> None:
    mi = malloc_info()
    assert mi is not None and mi.in_use > 0 and mi.free >= 0  # glibc >= 2.33 here
    assert retention_suspect(free=10 * 2**20, in_use=100 * 2**20, rss=200 * 2**20, growth_per_min=None) is None
    s = retention_suspect(free=300 * 2**20, in_use=100 * 2**20, rss=500 * 2**20, growth_per_min=None)
    assert s is not None and s["kind"] == "allocator_retention" and "malloc_trim" in s["suggestion"]
    assert "MALLOC_ARENA_MAX" in s["suggestion"]
