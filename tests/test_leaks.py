"""Leak detection: shortened scenarios with real workloads, run through memdiag.start().

Settings are accelerated (10 s verdict window, 50 ms samples, 1.5 s tracing windows,
full budget) but the code path is the default one: the monitor's listener, the trend
gate, an automatic tracing window, classification and the report.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import gc
import json
import os
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import memdiag
from memdiag import leaks
from memdiag.config import MemoryConfig
from memdiag.service import MemoryDiagnostics

from .conftest import wait_for

ACCEL = {
    "sample_interval": 0.05,
    "profile_interval": 1.0,
    "leak_window_seconds": 10.0,
    "trace_window_seconds": 1.5,
    "trace_budget": 1.0,
    "heap_snapshot_seconds": 0.25,
    "enable_auto_cleanup": False,
    "sustain_seconds": 0.0,
    "recovery_seconds": 0.0,
    # These tests drive the tracing-window path; where the sampled heap profiler is built,
    # "auto" would take the live-heap path instead (its own tests cover it).
    "heap_profile": "off",
}


def _line_of(marker: str) -> int:
    with open(__file__, encoding="utf-8") as fh:
        for n, text in enumerate(fh, 1):
            if marker in text and "_line_of" not in text:
                return n
    raise AssertionError(marker)


@pytest.fixture(autouse=True)
def _fresh_leak_state() -> Iterator[None]:
    """Tracing budget and alert de-duplication are per process: start each test clean."""
    from memdiag.leaks.notify import notifier
    from memdiag.leaks.tracing import manager

    manager().reset()
    notifier().reset()
    yield
    manager().reset()


@pytest.fixture
def run() -> Iterator[Callable[..., MemoryDiagnostics]]:
    """Start a monitor with accelerated leak settings; stopped (and checked) afterwards."""
    started: list[MemoryDiagnostics] = []

    def _start(**overrides: Any) -> MemoryDiagnostics:
        d = MemoryDiagnostics(MemoryConfig(**{**ACCEL, **overrides})).start()
        started.append(d)
        return d

    yield _start
    for d in started:
        d.close()
    leaks.stop_tracing()
    assert not tracemalloc.is_tracing(), "a tracing window outlived the monitor"


class Workload:
    """Background threads doing work until stopped."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def spawn(self, fn: Callable[[threading.Event], None]) -> None:
        t = threading.Thread(target=fn, args=(self.stop,), daemon=True)
        t.start()
        self.threads.append(t)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)


@pytest.fixture
def work() -> Iterator[Workload]:
    w = Workload()
    yield w
    w.close()


def _poll(diag: MemoryDiagnostics, want: Callable[[list[dict[str, Any]]], bool], timeout: float) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        report = leaks.leaks_report(diag)
        if want(report["suspects"]) or time.monotonic() > end:
            return report
        time.sleep(0.25)


# -- workloads (the marked lines are what the detector must name) -----------------------

_LEAKED: list[bytearray] = []


def churn(stop: threading.Event) -> None:
    """Request-like work: short-lived objects, plus an LRU cache at capacity (turnover)."""
    lru: collections.OrderedDict[int, bytes] = collections.OrderedDict()
    i = 0
    while not stop.is_set():
        i += 1
        _ = [str(j) * 8 for j in range(40)]
        lru[i % 5000] = bytes(600)
        lru.move_to_end(i % 5000)
        time.sleep(0.0005)


def leaker(stop: threading.Event) -> None:
    while not stop.is_set():
        _LEAKED.append(bytearray(4096))  # LEAK-SITE
        time.sleep(0.002)


def warming_cache(stop: threading.Event) -> None:
    """A cache that fills quickly, then serves hits and replaces entries in place."""
    cache: dict[int, bytes] = {}
    i = 0
    while not stop.is_set():
        i += 1
        key = i % 3000
        if key not in cache or i % 7 == 0:
            cache[key] = bytes(1500)
        time.sleep(0.0003 if len(cache) < 3000 else 0.001)


# -- the bars, shortened ------------------------------------------------------------------


ISOLATED = "TEST_LEAKS_ISOLATED"  # not MEMDIAG_*: conftest clears those


def _in_a_fresh_interpreter(request: pytest.FixtureRequest) -> bool:
    """Run the calling test again alone in a fresh pytest process and assert it passed;
    True when that was done (the caller returns), False inside that fresh process.

    A leak verdict reads the whole process: in a full run the test process carries every
    earlier test's leftovers (its RSS grew at ~90 MB/min during this test at load 7-19, and
    that growth, unexplained by the traced window, was the `native` verdict in its place)."""
    if os.environ.get(ISOLATED) == "1":
        return False
    import subprocess
    import sys

    node = f"{request.node.path}::{request.node.name}"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node],
        capture_output=True, text=True, timeout=600, env={**os.environ, ISOLATED: "1"},
        cwd=str(request.config.rootpath),
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "1 passed" in out.stdout, out.stdout[-2000:]
    return True


@pytest.mark.slow
@pytest.mark.timeout(700)  # the run in a fresh process included
def test_leaking_site_is_top_suspect(
    run: Callable[..., MemoryDiagnostics], work: Workload, request: pytest.FixtureRequest
) -> None:
    if _in_a_fresh_interpreter(request):
        return
    alerts: list[dict[str, Any]] = []
    leaks.on_leak(alerts.append)
    try:
        diag = run()
        work.spawn(churn)
        time.sleep(4.0)  # the LRU fills first (its warm-up is growth too), then the leak starts
        work.spawn(leaker)
        site = (__file__, _line_of("# LEAK-SITE"))
        report = _poll(
            diag,
            lambda s: any((x["file"], x["line"]) == site and x["evidence"].get("container") for x in s),
            # Correctness, not speed: the 90 s bar of issue 14 is measured by
            # benchmarks/bench_leaks.py on a service of its own. In this shared test
            # process, in a full run on a loaded machine (load 7-19), the site took more
            # than 90 s; give it the time such a run needs.
            240.0,
        )
    finally:
        leaks.remove_leak_callback(alerts.append)
        work.close()
        _LEAKED.clear()
    # The site must lead the Python-object suspects. In this shared test process the RSS
    # also moves with other tests' leftovers, which can add a `native` verdict beside it
    # under load; the isolated benchmark (bench_leaks.py detect) checks that the site is
    # the top suspect overall.
    top = next((s for s in report["suspects"] if s["kind"] == "python_objects"), None)
    assert top is not None, f"no Python-object suspect after 240 s: {report['suspects']}"
    assert (top["file"], top["line"]) == (__file__, _line_of("# LEAK-SITE"))
    assert top["confidence"] >= 0.6, report["suspects"]
    assert top["growth_bytes_per_min"] > 128 * 1024
    assert top["evidence"]["container"]["holder"].endswith("_LEAKED")
    assert all(s["line"] != _line_of("lru[i % 5000]") for s in report["suspects"])
    tracing = report["tracing"]
    assert tracing["windows_run"] >= 1 and tracing["last"]["reason"] == "auto"
    mem = tracing["last"]["memory"]
    assert mem["rss_peak_bytes"] >= mem["rss_start_bytes"] > 0 and mem["tracemalloc_peak_bytes"] > 0
    assert report["top_allocations"] and all(
        not a["file"].startswith(os.path.dirname(memdiag.__file__)) for a in report["top_allocations"]
    )
    assert not tracemalloc.is_tracing()
    # One leak: one alert for it, raised when the site was confirmed (updates at most).
    mine = [a["event"] for a in alerts if a["key"] == top["id"]]
    assert mine[:1] == ["new"] and mine.count("new") == 1


@pytest.mark.slow
def test_plateauing_cache_is_not_a_leak(run: Callable[..., MemoryDiagnostics], work: Workload) -> None:
    # A 20 s verdict window: the warm-up (a few seconds) is short against it, as a
    # cache's warm-up of a minute or two is against the default 300 s.
    diag = run(leak_window_seconds=20.0)
    work.spawn(churn)
    work.spawn(warming_cache)
    seen: list[dict[str, Any]] = []
    end = time.monotonic() + 25.0
    while time.monotonic() < end:
        report = leaks.leaks_report(diag)
        seen += [(s, report["trends"]) for s in report["suspects"] if s["kind"] in ("python_objects", "native")]
        time.sleep(0.5)
    assert seen == [], json.dumps(seen[:2], default=str, indent=0)[:6000]
    assert leaks.leaks_report(diag)["trends"]["rss"] is not None


@pytest.mark.slow
def test_thread_leak_is_classified(run: Callable[..., MemoryDiagnostics], work: Workload) -> None:
    diag = run()

    def spawner(stop: threading.Event) -> None:
        while not stop.is_set():
            threading.Thread(target=stop.wait, daemon=True).start()  # never finishes until the test ends
            time.sleep(0.1)

    work.spawn(spawner)
    report = _poll(diag, lambda s: any(x["kind"] == "threads" for x in s), 20.0)
    s = next(x for x in report["suspects"] if x["kind"] == "threads")
    assert s["growth_per_min"] > 100 and s["evidence"]["rise"] >= 5
    assert s["file"] is None and s["growth_bytes_per_min"] is None


@pytest.mark.slow
def test_fd_leak_is_classified(run: Callable[..., MemoryDiagnostics]) -> None:
    diag = run()
    fds: list[int] = []
    try:
        end = time.monotonic() + 20.0
        report: dict[str, Any] = {}
        while time.monotonic() < end:
            fds.extend(os.pipe())  # real pipes, never closed while the test runs
            report = leaks.leaks_report(diag)
            if any(x["kind"] == "fds" for x in report["suspects"]):
                break
            time.sleep(0.1)
    finally:
        for fd in fds:
            os.close(fd)
    s = next(x for x in report["suspects"] if x["kind"] == "fds")
    assert s["evidence"]["rise"] >= 10 and s["growth_per_min"] > 0


@pytest.mark.slow
def test_native_leak_is_classified(run: Callable[..., MemoryDiagnostics], work: Workload) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks: list[int] = []

    def native(stop: threading.Event) -> None:
        while not stop.is_set():
            p = libc.malloc(256 * 1024)
            ctypes.memset(p, 1, 256 * 1024)  # touched, so it is resident
            blocks.append(p)
            time.sleep(0.02)

    diag = run()
    work.spawn(churn)
    work.spawn(native)
    try:
        report = _poll(diag, lambda s: any(x["kind"] == "native" and x["classified_by"] == "tracing" for x in s), 25.0)
    finally:
        work.close()
        for p in blocks:
            libc.free(p)
    s = next(x for x in report["suspects"] if x["id"] == "native")
    assert s["kind"] == "native" and s["classified_by"] == "tracing", s
    # The list of pointers grows too (a small, real Python leak): it may follow, never lead.
    assert report["suspects"][0]["kind"] == "native"
    assert s["file"] is None
    assert s["evidence"]["explained_share"] < 0.3
    assert s["growth_bytes_per_min"] > 100 * 1024 * 1024


def test_uncollectable_garbage_is_classified(run: Callable[..., MemoryDiagnostics]) -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    diag = run()
    old = gc.get_debug()
    gc.collect()  # other tests' garbage must not be saved along with ours and crowd it out
    gc.set_debug(gc.DEBUG_SAVEALL)  # the collector keeps what it would free in gc.garbage
    try:
        time.sleep(0.3)
        report: dict[str, Any] = {}
        for _ in range(60):
            for _ in range(200):
                Node()
            gc.collect()
            time.sleep(0.1)
            report = leaks.leaks_report(diag)
            if any(x["kind"] == "uncollectable" for x in report["suspects"]):
                break
    finally:
        gc.set_debug(old)
        gc.garbage.clear()
    s = next(x for x in report["suspects"] if x["kind"] == "uncollectable")
    assert any(t["type"].endswith("Node") for t in s["evidence"]["types"])


# -- tracing windows --------------------------------------------------------------------


def test_start_tracing_contract(diag: MemoryDiagnostics) -> None:
    with pytest.raises(ValueError):
        leaks.start_tracing(diag, seconds=0)
    with pytest.raises(ValueError):
        leaks.start_tracing(diag, seconds=True)
    with pytest.raises(ValueError):
        leaks.start_tracing(diag, frames=0)
    with pytest.raises(ValueError):
        leaks.start_tracing(diag, frames=1.5)
    diag.configure(trace_budget=1.0)
    state = leaks.start_tracing(diag, seconds=1.0, frames=3)
    assert state["phase"] == "tracing" and state["frames"] == 3 and tracemalloc.is_tracing()
    with pytest.raises(memdiag.MemdiagError, match="already running"):
        leaks.start_tracing(diag, seconds=1.0)
    data = [bytes(2000) for _ in range(2000)]  # allocated while tracing
    deadline = time.monotonic() + 30
    while leaks.leaks_report(diag)["tracing"]["running"]:
        assert time.monotonic() < deadline, "the tracing window never ended"
        data += [bytes(2000) for _ in range(200)]
        time.sleep(0.05)
    report = leaks.leaks_report(diag)
    assert not tracemalloc.is_tracing()
    last = report["tracing"]["last"]
    assert last["reason"] == "manual" and last["error"] is None and last["frames"] == 3
    assert 0.9 <= last["seconds"] < 30  # about the 1 s asked; its end is seen late on a loaded machine
    sites = {(a["file"], a["line"]) for a in report["top_allocations"]}
    assert any(f == __file__ for f, _ in sites), sites
    assert all(len(a["traceback"]) <= 3 for a in report["top_allocations"])
    del data


def test_budget_refuses_a_window(diag: MemoryDiagnostics) -> None:
    diag.configure(trace_budget=0.0)
    with pytest.raises(memdiag.MemdiagError, match="disabled"):
        leaks.start_tracing(diag, seconds=1.0)
    diag.configure(trace_budget=0.002)  # 1.2 s per 600 s
    leaks.start_tracing(diag, seconds=1.0)
    wait_for(lambda: not leaks.leaks_report(diag)["tracing"]["running"], timeout=30, what="the window to end")
    with pytest.raises(memdiag.MemdiagError, match="trace budget") as exc:
        leaks.start_tracing(diag, seconds=1.0)
    assert "next window possible in" in str(exc.value)
    budget = leaks.leaks_report(diag)["tracing"]["budget"]
    assert budget["allowed"] is False and budget["retry_after_seconds"] > 500
    assert not tracemalloc.is_tracing()


def test_borrowed_tracemalloc_is_left_on(diag: MemoryDiagnostics) -> None:
    diag.configure(trace_budget=1.0)
    tracemalloc.start(2)
    try:
        state = leaks.start_tracing(diag, seconds=1.0)
        assert state["frames"] == 2
        leaks.stop_tracing()
        assert tracemalloc.is_tracing()  # the user's tracing is theirs
        assert leaks.leaks_report(diag)["tracing"]["last"]["borrowed"] is True
    finally:
        tracemalloc.stop()


# -- notifications ----------------------------------------------------------------------


def test_import_stays_cheap() -> None:
    import subprocess
    import sys

    code = "import sys, memdiag; print('memdiag.leaks' in sys.modules, 'tracemalloc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_the_leak_series_cost_is_read_while_a_snapshot_holds_the_heap_lock() -> None:
    # overhead() asks for leak detection's own bytes on every call; the heap thread holds
    # this lock through a snapshot and its container scan (up to seconds on a large heap).
    from memdiag.leaks.livecheck import LiveChecker

    checker = LiveChecker()
    got: list[tuple[int, int]] = []
    with checker._lock:  # as a snapshot does
        reader = threading.Thread(target=lambda: got.append(checker.cost()))
        reader.start()
        reader.join(timeout=10.0)  # a deadline: it returns at once unless it waits for the lock
        waited = reader.is_alive()
    reader.join()
    assert not waited, "cost() waited for the heap lock"
    assert got == [(0, checker.heap.bound_bytes() + checker.containers.bound_bytes())]
