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

GAP_GUARD_MIB = 12.0
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
    """``scenarios/soak.py`` for 40 s at default settings in every respect: memdiag's own
    structures flat and within budget, its CPU per tick flat, the twins both served, no
    allocation-tracing window at any sample (with the sampled heap profiler running the leak
    detector opens none on its own; before, it did once RSS grew, and in the 30-minute run the
    USS gap rose by ~8 MiB for good after the first), and the USS gap's last-quarter median
    under GAP_GUARD_MIB: issue 17's 8 MiB bar plus 4 MiB of headroom (single samples of the
    gap move by +-3 MiB with the twins' service threads' malloc arenas, and a quiet machine
    gave larger gaps than a loaded one: the twins serve more). This busy 40 s form gave
    last-quarter medians of 10.8-14.3 MiB on the quiet machine with a window opened by hand
    at 10 s (session 6), and 5.0-7.9 MiB at load 15-26 without one (session 7, interleaved
    with the window form: 5.9-7.1); not yet measured quietly without one. The bar itself is
    judged by the benchmarks (bench_footprint.py, the 30-minute soak, docs/benchmarks.md); flatness
    of the gap too: 40 s cannot tell a slow rise from the allocator's noise."""
    from memdiag.leaks import heapprof

    script = Path(__file__).resolve().parent.parent / "scenarios" / "soak.py"
    out = subprocess.run([sys.executable, str(script), "--seconds", "40", "--every", "1"],
                         capture_output=True, text=True, timeout=300)
    result = json.loads(out.stdout.split("\n- bar:")[0])  # the JSON, then the bar lines run_all.py reads
    checks = result["checks"]
    assert checks["own_memory_flat"] and checks["within_budget"] and checks["cpu_per_tick_flat"], result
    assert result["samples"] >= 30 and result["ticks"] >= 30, result
    assert heapprof.available()[0], "the sampled heap profiler is built in CI (setup.py)"
    assert result["tracing_samples"] == 0, result  # no window on its own with the profiler running
    assert 0.5 < result["ops_ratio"] < 1.5, result  # both twins did the work
    assert result["uss_gap_mib"]["q4_median"] <= GAP_GUARD_MIB, result  # the bar + CI noise: see the docstring
    print("USS gap (MiB, quarter medians):", result["uss_gap_mib"])


def _soak_module():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scenarios" / "soak.py"
    spec = importlib.util.spec_from_file_location("memdiag_soak_scenario", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(tick_ms: list[float]) -> list[dict[str, float]]:
    """One sample a second, one tick per sample, costing ``tick_ms[i]`` ms of monitor CPU."""
    rows, cpu = [], 0.0
    for i, ms in enumerate([0.0, *tick_ms]):
        cpu += ms / 1e3
        rows.append({"t": float(i), "ticks": i, "monitor_cpu": cpu, "own": 10**6, "uss": 50 * 2**20,
                     "budget": 32 * 2**20, "ops": 100 * i, "fds": 40})  # fmt: skip
    return rows


def test_soak_verdict_judges_the_typical_tick_not_one_heavy_tick() -> None:
    """The CI's 40-s soak failed once on the mean CPU per tick (2.44 ms against 1.29 ms):
    one heavy tick in a quarter of ten moves the mean by a millisecond. The verdict judges
    the typical tick in short runs; a typical tick that grows still fails, and in long
    quarters the mean is judged as well."""
    soak = _soak_module()
    steady = [1.0] * 40
    assert soak.verdict(_rows(steady), _rows([0.0] * 40))["checks"]["cpu_per_tick_flat"]
    one_heavy = [*steady[:35], 12.0, *steady[36:]]
    result = soak.verdict(_rows(one_heavy), _rows([0.0] * 40))
    assert result["monitor_cpu_ms_per_tick"]["q4"] > 1.5 * result["monitor_cpu_ms_per_tick"]["q2"] + 0.5
    assert result["checks"]["cpu_per_tick_flat"], result
    doubling = [1.0] * 20 + [2.5] * 20
    assert not soak.verdict(_rows(doubling), _rows([0.0] * 40))["checks"]["cpu_per_tick_flat"]
    # Long quarters: heavy ticks that become frequent raise the mean, and that fails too.
    long_run = [1.0] * 400 + [1.0 if i % 50 else 12.0 for i in range(400)]
    long_run += [1.0 if i % 4 else 12.0 for i in range(400)]
    assert not soak.verdict(_rows(long_run), _rows([0.0] * 1200))["checks"]["cpu_per_tick_flat"]
