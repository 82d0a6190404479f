"""memdiag's own leak test: run the monitor for a while; its footprint must stay flat."""

from __future__ import annotations

import gc
import time
import tracemalloc

import pytest

from memdiag.config import MemoryConfig
from memdiag.service import MemoryDiagnostics

from .conftest import spawn_sleeper


@pytest.mark.slow
def test_monitor_footprint_stays_flat_with_full_history(children) -> None:
    for _ in range(10):
        children.append(spawn_sleeper())
    cfg = MemoryConfig(sample_interval=0.05, profile_interval=1.0, history_size=200, enable_auto_cleanup=False)
    d = MemoryDiagnostics(cfg)
    for _ in range(600):  # fill the history (and the tick-time window) with profile ticks between
        d.tick()
        d.profile()
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
