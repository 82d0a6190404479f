"""Soak (issue 16), shortened: a busy service at default settings (a faster tick so a
short run has enough of them); memdiag's own CPU per tick and memory stay flat.

The full soak is the same test for 30 minutes at the default 1 s tick:

    MEMDIAG_SOAK_SECONDS=1800 MEMDIAG_SOAK_INTERVAL=1 python -m pytest -q tests/test_soak.py

and, at default settings in every respect (heap profiler, leak detection, SQLite history),
``scenarios/soak.py`` runs twin processes with and without memdiag side by side:

    python scenarios/soak.py --seconds 1800

whose shortened form is the second test here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import memdiag
from memdiag.service import MemoryDiagnostics

SECONDS = float(os.environ.get("MEMDIAG_SOAK_SECONDS", "12"))
INTERVAL = float(os.environ.get("MEMDIAG_SOAK_INTERVAL", "0.05"))


def _busy(stop: threading.Event) -> None:
    """A service's work: a cache that turns over, JSON-ish churn, short-lived children."""
    cache = memdiag.SharedPromptCache.get_instance()
    n = 0
    while not stop.is_set():
        n += 1
        cache.set(f"k{n % 500}", "x" * 2000)
        cache.get(f"k{(n * 7) % 500}")
        _ = [{"i": i, "s": str(i)} for i in range(200)]
        time.sleep(0.001)


@pytest.mark.slow
def test_memdiag_cpu_and_memory_stay_flat_under_a_busy_service() -> None:
    diag = MemoryDiagnostics(memdiag.MemoryConfig(sample_interval=INTERVAL, history_persist=False)).start()
    stop = threading.Event()
    worker = threading.Thread(target=_busy, args=(stop,))
    worker.start()
    halves = []
    try:
        for _ in range(2):
            o0 = diag.overhead()
            time.sleep(SECONDS / 2)  # the soak's length is the subject
            o1 = diag.overhead()
            ticks = o1["ticks"] - o0["ticks"]
            halves.append(((o1["monitor_cpu_seconds"] - o0["monitor_cpu_seconds"]) / max(ticks, 1), o1["memory_bytes"]))
    finally:
        stop.set()
        worker.join(10)
        diag.close()
    (cpu_a, mem_a), (cpu_b, mem_b) = halves
    assert cpu_b <= cpu_a * 1.5 + 0.0005, halves  # CPU per tick flat (noise allowance: a loaded machine)
    assert mem_b <= mem_a * 1.1 + 64 * 1024, halves  # its own structures flat once warm
    assert mem_b <= diag.overhead()["memory_budget_bytes"]  # and within the budget


@pytest.mark.slow
def test_twin_soak_at_default_settings_keeps_memdiags_own_cost_flat() -> None:
    """``scenarios/soak.py`` for 40 s with one allocation-tracing window opened at 10 s in the
    memdiag twin (what the leak detector does when RSS grows; in the 30-minute run one opened
    at ~190 s and the USS gap rose from ~8 to ~17 MiB for good): memdiag's own structures flat
    and within budget, its CPU per tick flat, the twins both served, and the USS gap in the
    last quarter, after the window, under 16 MiB: a guard against gross growth (before the
    post-window trim the 40 s form gave 12-16 MiB at load 10-30), not issue 17's 8 MiB bar, which the
    benchmarks judge (bench_footprint.py, the 30-minute soak): on the quiet machine the final
    tree's quarter medians were 10.8-14.3 MiB here (11.5 with the heap profile off), above
    the 5.8-9.7 seen at load 10-30, so the bar is missed in this busy 40 s form and the
    issue stays open. Flatness of the gap is judged by the long run: 40 s cannot tell a slow
    rise from the allocator's noise."""
    script = Path(__file__).resolve().parent.parent / "scenarios" / "soak.py"
    out = subprocess.run([sys.executable, str(script), "--seconds", "40", "--every", "1", "--trace-at", "10"],
                         capture_output=True, text=True, timeout=300)
    result = json.loads(out.stdout.split("\n- bar:")[0])  # the JSON, then the bar lines run_all.py reads
    checks = result["checks"]
    assert checks["own_memory_flat"] and checks["within_budget"] and checks["cpu_per_tick_flat"], result
    assert result["samples"] >= 30 and result["ticks"] >= 30, result
    assert result["tracing_samples"] >= 1, result  # the window ran
    assert 0.5 < result["ops_ratio"] < 1.5, result  # both twins did the work
    assert result["uss_gap_mib"]["q4_median"] <= 16.0, result  # a guard, not the bar: see the docstring
    print("USS gap (MiB, quarter medians):", result["uss_gap_mib"])
