"""Fault injection (issue 16): children killed in the middle of tree walks, /proc entries
vanishing, the config file corrupted on disk, configure and cleanup racing each other.
The service keeps serving, memdiag keeps monitoring, and no fault is reported twice."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

import memdiag
from memdiag import leaks
from memdiag.config import MemoryConfig, default_config_path
from memdiag.http.core import MemoryAPI
from memdiag.http.server import serve as serve_api
from memdiag.leaks.notify import notifier as leak_notifier
from memdiag.service import MemoryDiagnostics

from .conftest import wait_for

TOKEN = "fault-token-0123456789abcdef"
_BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_servers.py"
_spec = importlib.util.spec_from_file_location("bench_servers", _BENCH)
assert _spec and _spec.loader
bench_servers = importlib.util.module_from_spec(_spec)  # the real servers of the load benchmark
_spec.loader.exec_module(bench_servers)
# A parent that keeps forking grandchildren which exit at once: the walker meets entries
# that vanish between listing and reading.
FORKER = "import os,time\nwhile True:\n    pid=os.fork()\n    if pid==0: os._exit(0)\n    os.waitpid(pid,0)\n"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.slow
def test_service_keeps_serving_and_monitoring_under_faults() -> None:
    cfg = MemoryConfig(
        sample_interval=0.05,
        profile_interval=1.0,
        sustain_seconds=0.0,
        recovery_seconds=0.0,
        cleanup_cooldown=0.0,
        api_token=TOKEN,
        history_persist=False,
    )
    diag = MemoryDiagnostics(cfg).start()
    server, thread = serve_api(MemoryAPI(diag, TOKEN, rate_limit=None), "127.0.0.1", 0)
    records = Records()
    logging.getLogger("memdiag").addHandler(records)
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    kids: list[subprocess.Popen[bytes]] = []

    def churn() -> None:  # owned children killed at random moments, mid-walk
        rng = random.Random(16)
        while not stop.is_set():
            p = memdiag.Popen(["sleep", "5"])
            kids.append(p)
            time.sleep(rng.uniform(0.0, 0.03))
            p.send_signal(signal.SIGKILL)  # the test's own child
            p.wait()

    def client(path: str, body: dict | None) -> None:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post(path, json=body) if body is not None else c.get(path)
                    statuses[r.status_code] += 1
                except httpx.HTTPError as exc:
                    failures.append(f"{path}: {exc!r}")

    forker = subprocess.Popen([sys.executable, "-c", FORKER])
    workers = [
        threading.Thread(target=churn),
        threading.Thread(target=client, args=("/api/memory/cleanup", {"force": True})),
        threading.Thread(target=client, args=("/api/memory/configure", {"cache_shrink_fraction": 0.4})),
        threading.Thread(target=client, args=("/api/memory/configure", {"cache_shrink_fraction": 0.6})),
        threading.Thread(target=client, args=("/api/memory/status", None)),
        threading.Thread(target=client, args=("/api/memory/diagnostics", None)),
    ]
    try:
        ticks_before = diag.overhead()["ticks"]
        for w in workers:
            w.start()
        time.sleep(2.0)  # the faults' duration is the subject here
        # The config file is corrupted on disk while all that runs.
        path = default_config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xfe[memdiag\x00\x80 = ")
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
            body = {"memory_threshold_mb": 600, "persist": True}
            bad = [c.post("/api/memory/configure", json=body) for _ in range(3)]
        time.sleep(2.0)
        ticks_during = diag.overhead()["ticks"]
    finally:
        stop.set()
        for w in workers:
            w.join(30)
        forker.kill()
        forker.wait()
        server.shutdown()
        server.server_close()
        thread.join(10)
        logging.getLogger("memdiag").removeHandler(records)
        diag.close()
    assert not failures, failures[:5]
    assert set(statuses) <= {200, 429}, statuses  # 429: a cleanup already running (single flight)
    assert statuses[200] >= 5, statuses
    assert ticks_during - ticks_before > 5, (ticks_before, ticks_during)  # the monitor kept ticking
    o = diag.overhead()
    assert o["errors"] == 0, o["last_error"]
    assert diag.ladder.runs["errors"] == 0
    assert [r.status_code for r in bad] == [422, 422, 422]
    assert len({r.json()["fields"]["config_file"] for r in bad}) == 1  # one clear reason
    assert diag.config.memory_threshold_mb == 500  # the previous configuration kept
    # No fault is reported twice: every warning-or-worse line of memdiag is distinct.
    repeated = {m: n for m, n in Counter(records.messages).items() if n > 1 and "terminated" not in m}
    assert not repeated, repeated
    assert len(kids) > 5  # children churned (fewer on a loaded machine)


# -- a leak webhook that hangs, refuses or drips --------------------------------------------


class BadHook:
    """A real loopback endpoint for ``leak_webhook_url`` that misbehaves: ``hang`` reads the
    POST and never answers, ``drip`` sends a status line that never ends one byte every
    0.2 s, ``refuse`` is a port nobody listens on (connection refused)."""

    def __init__(self, mode: str) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.stop = threading.Event()
        self.accepted = 0
        self.thread: threading.Thread | None = None
        if mode == "refuse":
            self.sock.close()
        else:
            self.thread = threading.Thread(target=self._serve, args=(mode,), daemon=True)
            self.thread.start()

    def _serve(self, mode: str) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            threading.Thread(target=self._answer, args=(conn, mode), daemon=True).start()

    def _answer(self, conn: socket.socket, mode: str) -> None:
        with conn:
            conn.recv(65536)
            while not self.stop.wait(0.2):
                if mode == "drip":
                    try:
                        conn.sendall(b"H")
                    except OSError:
                        return

    def close(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(5)
        self.sock.close()


LEAKY = {  # accelerated leak verdicts (as in test_leaks), no cleanup: leaks are the subject
    "sample_interval": 0.05,
    "profile_interval": 1.0,
    "leak_window_seconds": 10.0,
    "enable_auto_cleanup": False,
    "sustain_seconds": 0.0,
    "recovery_seconds": 0.0,
    "heap_profile": "off",
    "api_token": TOKEN,
    "history_persist": False,
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["hang", "refuse", "drip"])
def test_leak_webhook_that_hangs_refuses_or_drips(mode: str) -> None:
    hook = BadHook(mode)
    note = leak_notifier()
    note.reset()
    before = note.report()  # the process's notifier: counters from earlier tests stay
    saved_timeout, note.timeout = note.timeout, 1.0  # the deadline's length is test_webhook_deadline's subject
    records = Records()
    logging.getLogger("memdiag").addHandler(records)
    diag = MemoryDiagnostics(MemoryConfig(**LEAKY, leak_webhook_url=hook.url)).start()
    server, thread = serve_api(MemoryAPI(diag, TOKEN, rate_limit=None), "127.0.0.1", 0)
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    def leak_threads() -> None:  # a real leak; its alert and the others' each make a post
        while not stop.is_set():
            threading.Thread(target=stop.wait, daemon=True).start()
            time.sleep(0.1)

    def poll() -> None:  # the service's own clients
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
            while not stop.is_set():
                try:
                    statuses[c.get("/api/memory/status").status_code] += 1
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                time.sleep(0.02)

    workers = [threading.Thread(target=leak_threads), threading.Thread(target=poll)]
    try:
        for w in workers:
            w.start()
        wait_for(lambda: note.report()["webhook_failed"] >= before["webhook_failed"] + 2, timeout=60, what="two failed webhook posts")
        ticks = diag.overhead()["ticks"]
        wait_for(lambda: diag.overhead()["ticks"] > ticks + 5, timeout=10, what="the monitor ticking on")
        report = leaks.leaks_report(diag)  # leak detection still answers while its webhook fails
    finally:
        stop.set()
        for w in workers:
            w.join(30)
        server.shutdown()
        server.server_close()
        thread.join(10)
        diag.close()
        note.flush(10)
        note.timeout = saved_timeout
        logging.getLogger("memdiag").removeHandler(records)
        hook.close()
    assert not failures and set(statuses) == {200}, (failures[:3], statuses)
    assert isinstance(report["suspects"], list) and report["notifications"]["alerts"] >= 2
    report = note.report()
    assert report["webhook_sent"] == before["webhook_sent"], report
    assert report["webhook_failed"] >= before["webhook_failed"] + 2, report
    if mode != "refuse":
        assert hook.accepted >= 2  # it was really reached, and hung or dripped
    assert diag.overhead()["errors"] == 0
    # The fault is reported once: one warning for the failing webhook, whatever the number of posts.
    webhook_lines = [m for m in records.messages if "webhook" in m]
    assert len(webhook_lines) == 1 and "failed" in webhook_lines[0], webhook_lines
    assert hook.url not in webhook_lines[0] and "127.0.0.1" not in webhook_lines[0]  # the URL is a secret


# -- clients that disconnect mid-response ---------------------------------------------------


def _abort(port: int, path: str, token: str, read: int) -> None:
    """Send a request, read ``read`` bytes of the answer (0: none), then reset the
    connection (SO_LINGER 0: an RST, as a crashed or impatient client does)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        if read:
            s.recv(read)
    finally:
        s.close()


def _disconnect_storm(port: int, token: str, app_path: str | None) -> None:
    paths = ["/api/memory/diagnostics", "/api/memory/profile", "/api/memory/openapi.json"]
    paths += [app_path] if app_path else []
    for i in range(60):
        _abort(port, paths[i % len(paths)], token, read=(0, 1, 200)[i % 3])


@pytest.mark.slow
def test_clients_disconnecting_mid_response_standalone_server() -> None:
    diag = MemoryDiagnostics(MemoryConfig(sample_interval=0.1, api_token=TOKEN, history_persist=False)).start()
    server, thread = serve_api(MemoryAPI(diag, TOKEN, rate_limit=None), "127.0.0.1", 0)
    records = Records()
    logging.getLogger("memdiag").addHandler(records)
    try:
        port = server.server_address[1]
        _disconnect_storm(port, TOKEN, None)
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
            answers = [c.get(p) for p in ("/api/memory/status", "/api/memory/diagnostics", "/api/memory/health")]
        assert [r.status_code for r in answers] == [200, 200, 200]
        assert answers[1].json()["profile"]
    finally:
        logging.getLogger("memdiag").removeHandler(records)
        server.shutdown()
        server.server_close()
        thread.join(10)
        diag.close()
    assert diag.overhead()["errors"] == 0
    assert not [m for m in records.messages if "Traceback" in m or "error" in m.lower()], records.messages[:5]


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["flask", "fastapi", "aiohttp"])
def test_clients_disconnecting_mid_response_framework_adapters(framework: str, tmp_path: Path) -> None:
    pytest.importorskip({"flask": "gunicorn", "fastapi": "uvicorn", "aiohttp": "aiohttp"}[framework])
    with (tmp_path / "server.log").open("w+b") as log, \
            bench_servers.running(framework, mounted=True, stderr=log) as (port, proc):
        _disconnect_storm(port, bench_servers.TOKEN, "/")
        # The server keeps answering, the app and memdiag both.
        assert bench_servers._get(port, "/")[0] == 200
        status, body = bench_servers._get(port, "/api/memory/health")
        assert status == 200 and json.loads(body)["status"] in ("pass", "warn")
        out = bench_servers.load(port, 2.0, mounted=True, rate=50.0, clients=2)
        assert not out["failures"] and not out["memdiag_problems"], (out["failures"], out["memdiag_problems"][:3])
        assert proc.poll() is None
    text = (tmp_path / "server.log").read_text(errors="replace")
    # No error leaks into the app: no traceback, no memdiag error in the server's log.
    assert "Traceback" not in text and "memdiag" not in text, text[-3000:]
