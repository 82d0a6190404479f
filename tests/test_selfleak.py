"""memdiag's own leak test: run the monitor for a while; its footprint must stay flat."""

from __future__ import annotations

import gc
import time
import tracemalloc

import pytest

from memdiag.config import MemoryConfig
from memdiag.service import MemoryDiagnostics

from .conftest import spawn_sleeper, wait_for


@pytest.mark.slow
def test_monitor_footprint_stays_flat_with_full_history(children) -> None:
    for _ in range(10):
        children.append(spawn_sleeper())
    # heap_profile off: the live-heap series' first snapshots (at 5 s) are a warm-up this
    # 8 s window would read as growth; the monitor's own footprint is what is measured here.
    cfg = MemoryConfig(
        sample_interval=0.05, profile_interval=1.0, history_size=200, enable_auto_cleanup=False, heap_profile="off"
    )
    d = MemoryDiagnostics(cfg)
    for _ in range(600):  # fill the history (and the tick-time window) with profile ticks between
        d.tick()
        d.profile()
    d.store.flush()  # the history file is opened on its first write: part of the warm-up too
    gc.collect()
    tracemalloc.start(5)
    try:
        base, _ = tracemalloc.get_traced_memory()
        d.start()
        deadline = time.monotonic() + 8
        readings = []
        while time.monotonic() < deadline:
            time.sleep(1)
            d.diagnostics()
            gc.collect()
            readings.append(tracemalloc.get_traced_memory()[0] - base)
        snapshot = tracemalloc.take_snapshot()
    finally:
        d.close()
        tracemalloc.stop()
    ticks = d._ticks
    assert ticks > 100
    # A leak raises the floor; a reading taken mid-tick sees transient allocations (a
    # profile tick's census) that are gone a moment later. Compare floors.
    growth = min(readings[-3:]) - min(readings[:3])
    top = snapshot.statistics("lineno")[:5]
    # Flat: less than 64 KiB over ~140 ticks once the history is full (~470 B/tick would
    # be a leak of one small object per tick).
    assert growth < 64 * 1024, (readings, top)
    assert d.overhead()["memory_bytes"] < 10 * 1024 * 1024


@pytest.mark.slow
def test_api_server_footprint_stays_flat_under_connection_churn() -> None:
    """Thousands of requests over short- and long-lived connections leave nothing behind."""
    import http.client

    from memdiag.http.server import start_api_server

    token = "selfleak-token-0123456789abcdef"
    # A monitor that ticks once in the test: its own bounded windows (tick times, trend
    # series) fill with every tick and would hide the server's figure.
    # heap_profile off: this is the API server's footprint; the live-heap series is bounded on its own.
    d = MemoryDiagnostics(MemoryConfig(sample_interval=60.0, enable_auto_cleanup=False, heap_profile="off"))
    d.start()
    server = start_api_server(d, port=0, token=token, announce=False)
    auth = {"Authorization": f"Bearer {token}"}
    paths = ["/api/memory/profile", "/api/memory/status", "/api/memory/health", "/api/memory/nope"]

    def churn(rounds: int) -> None:
        for i in range(rounds):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            for path in paths:  # a keep-alive connection, then closed by the client
                conn.request("GET", path, headers=auth)
                conn.getresponse().read()
            if i % 5 == 0:  # some hang up mid-request
                conn.putrequest("POST", "/api/memory/cleanup")
                conn.putheader("Content-Length", "100")
                conn.endheaders()
            conn.close()

    try:
        churn(100)  # warm up: worker threads, caches, the profile encoding
        gc.collect()
        tracemalloc.start(5)
        try:
            readings = []
            for _ in range(6):
                churn(60)
                wait_for(lambda: not server.server.connections, timeout=20, what="the server to see the hang-ups")
                gc.collect()
                readings.append(tracemalloc.get_traced_memory()[0])
            snapshot = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        wait_for(lambda: server.server.connections == 0, timeout=30, what="every connection closed")
    finally:
        server.close()
        d.close()
    growth = min(readings[-2:]) - min(readings[:2])
    # 1440 requests and 360 connections between the first and last readings: keeping even
    # one bare object() per request would add 34 KiB.
    assert growth < 16 * 1024, (readings, snapshot.statistics("lineno")[:5])
