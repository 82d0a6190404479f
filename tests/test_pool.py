"""MemoryAwarePool with real worker processes: recycling, queued tasks, crashes, reports."""

from __future__ import annotations

import os
import time

import pytest

import memdiag
from memdiag.processes import owner_of
from memdiag.processes.pool import MemoryAwarePool, WorkerLostError
from memdiag.service import MemoryDiagnostics

from .conftest import wait_for

# Task functions live at module level: workers are fresh (spawned) interpreters that
# import them by name, as with ProcessPoolExecutor.
_hoard: list[bytearray] = []


def hoard(mb: int) -> int:
    """Keep ``mb`` MiB alive in the worker (a leak) and return the worker's PID."""
    block = bytearray(mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1  # touch every page so it is resident
    _hoard.append(block)
    return os.getpid()


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def fail() -> None:
    raise ValueError("task failed")


def crash() -> None:
    os._exit(3)


def test_worker_over_its_rss_limit_is_recycled_without_losing_queued_tasks() -> None:
    with MemoryAwarePool(1, max_rss_mb=60, name="rss") as pool:
        futures = [pool.submit(hoard, 25) for _ in range(6)]  # all queued behind one worker
        pids = [f.result(timeout=120) for f in futures]
        stats = pool.stats()
    assert len(pids) == 6  # every queued task ran
    assert len(set(pids)) >= 2  # the leaking worker was replaced
    assert stats["recycled_rss"] >= 1
    assert stats["completed"] == 6 and stats["lost"] == 0


@pytest.mark.slow
def test_max_tasks_per_worker_crash_and_errors(diag: MemoryDiagnostics) -> None:
    pool = MemoryAwarePool(2, max_tasks_per_worker=2, name="tasks")
    try:
        pids = list(pool.map(pid_after, [0.01] * 4))
        assert len(pids) == 4 and pool.stats()["recycled_tasks"] >= 1
        with pytest.raises(ValueError, match="task failed"):
            pool.submit(fail).result(timeout=60)
        with pytest.raises(WorkerLostError):
            pool.submit(crash).result(timeout=60)
        # The pool goes on after a crash.
        busy = pool.submit(pid_after, 2.0)
        busy_pid = wait_for(
            lambda: next((w["pid"] for w in pool.stats()["workers"] if w["busy"]), None),
            timeout=30,
            what="a worker to pick the task up",
        )
        worker = owner_of(busy_pid)
        assert worker is not None and worker.role == "pool-worker" and worker.group == "tasks"
        items = {it["pid"]: it for it in diag.subprocesses()}
        assert items[busy_pid]["owned"] and items[busy_pid]["kind"] == "pool"
        section = diag.diagnostics()["processes"]
        assert any(p["name"] == "tasks" for p in section["pools"])
        assert busy.result(timeout=60) == busy_pid
    finally:
        pool.shutdown()
    assert pool.stats()["workers"] == []


def test_emergency_cleanup_recycles_idle_workers(diag: MemoryDiagnostics) -> None:
    with MemoryAwarePool(2, name="idle") as pool:
        first = pool.submit(hoard, 30).result(timeout=60)
        result = diag.cleanup(force=True)
        rung = next(a for a in result["actions"] if a["name"] == "owned_children")
        assert "recycled 1 idle pool workers" in rung["detail"]
        assert rung["freed_bytes"] >= 30 * 1024 * 1024
        assert pool.submit(pid_after, 0).result(timeout=60) != first
        assert pool.stats()["recycled_idle"] == 1


def test_shutdown_cancels_queued_tasks_when_asked() -> None:
    pool = MemoryAwarePool(1, name="cancel")
    running = pool.submit(pid_after, 0.5)
    queued = [pool.submit(pid_after, 0) for _ in range(3)]
    time.sleep(0.2)
    pool.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in queued) or all(f.done() for f in queued)
    assert running.done()
    with pytest.raises(RuntimeError):
        pool.submit(pid_after, 0)


def test_exported_names() -> None:
    assert memdiag.MemoryAwarePool is MemoryAwarePool
