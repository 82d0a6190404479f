"""Fault injection (issue 16): children killed in the middle of tree walks, /proc entries
vanishing, the config file corrupted on disk, configure and cleanup racing each other.
The service keeps serving, memdiag keeps monitoring, and no fault is reported twice."""

from __future__ import annotations

import logging
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import pytest

import memdiag
from memdiag.config import MemoryConfig, default_config_path
from memdiag.http.core import MemoryAPI
from memdiag.http.server import serve as serve_api
from memdiag.service import MemoryDiagnostics

TOKEN = "fault-token-0123456789abcdef"
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
