"""Who opens tracing windows: with the sampled heap profiler running, the live heap names
the leak and no tracemalloc window opens on its own; without it (the fallback) the
detector still opens windows to name the site.

A real leak in this process (a chain of objects: no container of 100+ items holds it, so
the live heap's growing line is the only sampler-side evidence), the default code path
with accelerated settings (10 s verdict window, 1 s heap snapshots, a fine sampling
interval so the line shows within a minute, the full tracing budget so that nothing but
the gate keeps a window from opening).
"""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

import memdiag
from memdiag import leaks
from memdiag.config import MemoryConfig
from memdiag.leaks import heapprof
from memdiag.service import MemoryDiagnostics

from .conftest import wait_for

ACCEL = {
    "sample_interval": 0.1,
    "profile_interval": 1.0,
    "leak_window_seconds": 10.0,
    "trace_window_seconds": 1.0,
    "trace_budget": 1.0,
    "heap_snapshot_seconds": 1.0,
    "heap_sample_interval_kb": 16,
    "history_persist": False,
    "enable_auto_cleanup": False,
    "sustain_seconds": 0.0,
    "recovery_seconds": 0.0,
}

_CHAIN: list[Any] = [None]


def _line_of(marker: str) -> int:
    with open(__file__, encoding="utf-8") as fh:
        for n, text in enumerate(fh, 1):
            if marker in text and "_line_of" not in text:
                return n
    raise AssertionError(marker)


def chain(stop: threading.Event) -> None:
    """~25 MB/min held by a linked chain of 2-tuples (no large container anywhere)."""
    while not stop.is_set():
        _CHAIN[0] = (_CHAIN[0], bytearray(4096))  # CHAIN-SITE
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def _fresh_leak_state() -> Iterator[None]:
    from memdiag.leaks.notify import notifier
    from memdiag.leaks.tracing import manager

    manager().reset()
    notifier().reset()
    yield
    leaks.stop_tracing()
    manager().reset()
    _CHAIN[0] = None


def _run(mode: str, want: Any, timeout: float) -> tuple[dict[str, Any], bool]:
    """Start memdiag (heap_profile=mode) and the leak; poll the report until ``want(report)``.
    Returns the last report and whether tracemalloc was ever seen tracing meanwhile."""
    diag = MemoryDiagnostics(MemoryConfig(**{**ACCEL, "heap_profile": mode})).start()
    stop = threading.Event()
    worker = threading.Thread(target=chain, args=(stop,), daemon=True)
    traced = [False]
    report: dict[str, Any] = {}

    def done() -> bool:
        nonlocal report
        traced[0] = traced[0] or tracemalloc.is_tracing()
        report = leaks.leaks_report(diag)
        return bool(want(report))

    try:
        worker.start()
        try:
            wait_for(done, timeout=timeout, what="the verdict", step=0.25)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: suspects {report.get('suspects')}, tracing {report.get('tracing')}") from None
    finally:
        stop.set()
        worker.join(5)
        diag.close()
    return report, traced[0]


def _named(report: dict[str, Any]) -> bool:
    site = (__file__, _line_of("# CHAIN-SITE"))
    return any((s.get("file"), s.get("line")) == site and s["kind"] == "python_objects" for s in report["suspects"])


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_with_the_heap_profiler_the_leak_is_named_without_any_tracing_window() -> None:
    ok, why = heapprof.available()
    assert ok, f"the sampled heap profiler must be built for this test: {why}"
    report, traced = _run("auto", _named, 240.0)
    top = next(s for s in report["suspects"] if s["line"] == _line_of("# CHAIN-SITE"))
    assert top["classified_by"] == "live_heap", top
    assert top["growth_bytes_per_min"] > 1024 * 1024, top
    tracing = report["tracing"]
    assert tracing["windows_run"] == 0 and not traced, tracing  # no window opened on its own
    assert tracing["auto_windows"] is False and report["live_heap"]["running"]
    assert not tracemalloc.is_tracing()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_without_the_heap_profiler_the_detector_still_opens_windows() -> None:
    def want(report: dict[str, Any]) -> bool:
        last = report["tracing"]["last"] or {}
        return last.get("reason") == "auto" and _named(report)

    report, traced = _run("off", want, 240.0)
    assert report["tracing"]["windows_run"] >= 1 and traced, report["tracing"]
    assert report["tracing"]["auto_windows"] is True
    top = next(s for s in report["suspects"] if s["line"] == _line_of("# CHAIN-SITE"))
    assert top["classified_by"] != "live_heap", top  # named by the window
    assert memdiag.leaks.heapprof.running() is False
