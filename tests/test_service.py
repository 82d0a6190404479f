"""MemoryDiagnostics: the shared instance, the monitor thread, reports, fork safety."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time

import pytest

import memdiag
from memdiag import registry
from memdiag.errors import ConfigError
from memdiag.service import MemoryDiagnostics

from .conftest import spawn_sleeper, wait_for

MIB = 1024 * 1024


def test_shared_instance_start_stop_idempotent(fast_config) -> None:
    a = memdiag.start(fast_config)
    b = memdiag.start()
    assert a is b is MemoryDiagnostics.get_instance()
    assert a.running
    wait_for(lambda: a._ticks >= 3)
    memdiag.stop()
    memdiag.stop()
    assert not a.running


def test_profile_report_shape_and_json(diag) -> None:
    p = diag.profile()
    json.dumps(p, allow_nan=False)
    assert p["process"]["pid"] == os.getpid()
    assert p["process"]["rss_bytes"] > 0
    assert p["process"]["threshold_bytes"] == 500 * MIB
    assert p["process"]["uss_bytes"] > 0  # first report includes a profile tick
    assert {"total_bytes", "available_bytes", "percent"} <= set(p["system"])
    assert "cgroup" in p  # None where there is no memory cgroup
    assert p["pressure"]["level"] == "ok" and isinstance(p["pressure"]["reasons"], list)


def test_diagnostics_report_shape(diag, children) -> None:
    children.append(spawn_sleeper())
    d = diag.diagnostics()
    json.dumps(d, allow_nan=False)
    assert d["config"]["memory_threshold_mb"] == 500
    (child,) = [s for s in d["subprocesses"] if s["pid"] == children[0].pid]
    assert child["rss_bytes"] > 0 and child["cmdline"][0] == sys.executable
    assert {"monitor_cpu_seconds", "memory_bytes", "tick_seconds_median"} <= set(d["overhead"])
    assert {"last", "runs", "retry_after_seconds", "actions"} <= set(d["cleanup"])


def test_real_pressure_transition_and_auto_cleanup(fast_config, clean_registry) -> None:
    freed: list[int] = []
    hog = [bytes([7]) * (64 * MIB)]

    def release(ctx):
        if not ctx.dry_run and hog:
            hog.clear()
            freed.append(1)
        return {"count": len(freed)}

    registry.register_cleanup("test_hog", release, order=5)
    rss_mb = memdiag.probes.read_statm_rss() / MIB
    cfg = fast_config.updated(memory_threshold_mb=max(1.0, rss_mb - 10), enable_auto_cleanup=True)
    d = MemoryDiagnostics(cfg)
    events: list[tuple[str, str]] = []
    d.on_pressure_change(lambda prev, cur: events.append((prev.level, cur.level)))
    with d:
        wait_for(lambda: d.ladder.last_result is not None)
    result = d.ladder.last_result.to_dict()
    assert result["reason"] == "auto" and result["level_before"] == "critical"
    assert "test_hog" in result["actions_taken"] and freed
    assert ("ok", "critical") in events
    assert d.events[0]["reasons"][0]["signal"] == "process_rss"
    d.close()


def test_configure_validates_as_a_whole_and_applies_live(diag) -> None:
    with pytest.raises(ConfigError) as info:
        diag.configure(memory_threshold_mb=100, cache_pressure_threshold=3)
    assert "cache_pressure_threshold" in info.value.errors
    assert diag.config.memory_threshold_mb == 500
    diag.configure(memory_threshold_mb=100, history_size=50)
    assert diag.detector.config.memory_threshold_mb == 100
    assert diag.history.capacity == 50


def test_only_a_new_interval_wakes_the_loop(fast_config) -> None:
    """A configure of another setting takes effect at the next tick and adds no tick of
    its own (issue 16: a server's configure requests doubled the monitor's ticks); a new
    sample or profile interval wakes the loop at once. Not started: nothing clears the
    wake-up in between."""
    diag = MemoryDiagnostics(fast_config)
    try:
        diag.configure(cache_shrink_fraction=0.4, memory_threshold_mb=900)
        assert not diag._wake.is_set()
        assert diag.detector.config.memory_threshold_mb == 900  # applied all the same
        diag.configure(sample_interval=0.5)
        assert diag._wake.is_set()
        diag._wake.clear()
        diag.configure(profile_interval=2.0)
        assert diag._wake.is_set()
    finally:
        diag.close()


def test_configure_persist_writes_the_file(diag) -> None:
    from memdiag.config import default_config_path, load_config

    diag.configure({"memory_threshold_mb": 750}, persist=True)
    assert load_config(environ={}).memory_threshold_mb == 750
    assert default_config_path().exists()


def test_history_is_bounded_and_trends_project(diag) -> None:
    diag.configure(history_size=20)
    for _ in range(30):
        diag.tick()
    assert len(diag.history) == 20
    rows = diag.history_rows(last=5, columns=["rss"])
    assert len(rows) == 5 and rows[-1]["rss"] > 0
    t = diag.trends(window_seconds=3600)
    assert "rss" in t


def test_monitor_survives_a_failing_collector_and_reports_it(fast_config, clean_registry) -> None:
    registry.register_collector("bad", lambda profile: 1 / 0)
    registry.register_collector("good", lambda profile: {"n": 1})
    d = MemoryDiagnostics(fast_config).start()
    try:
        wait_for(lambda: d._ticks >= 3)
        assert d.running
        assert d.last_sample.extra["good"] == {"n": 1}
        assert "bad" in d.overhead()["collector_errors"]
    finally:
        d.close()


def test_observers_see_every_sample_and_a_failing_one_is_contained(fast_config, clean_registry) -> None:
    seen: list[float] = []
    registry.register_observer("count", lambda sample: seen.append(sample.monotonic))
    registry.register_observer("broken", lambda sample: 1 / 0)
    with pytest.raises(TypeError):
        registry.register_observer("not-callable", 42)  # type: ignore[arg-type]
    d = MemoryDiagnostics(fast_config).start()
    try:
        wait_for(lambda: len(seen) >= 3)
        assert d.running and seen == sorted(seen)
        registry.unregister_observer("count")
        n = len(seen)
        ticks = d._ticks
        wait_for(lambda: d._ticks >= ticks + 2)
        assert len(seen) == n
    finally:
        d.close()


def test_walk_roots_bring_an_outside_process_into_the_tree(diag, clean_registry) -> None:
    # A process that is not our descendant: started by a child that exits at once, so the
    # grandchild is re-parented away (to init or a subreaper) and leaves our tree.
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen(['sleep', '30']); print(p.pid)"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(out.stdout)
    try:
        assert pid not in {c.pid for c in diag.tick()[0].children}
        with pytest.raises(ValueError):
            registry.add_walk_root(0)
        registry.add_walk_root(pid)
        assert pid in {c.pid for c in diag.tick()[0].children}
        registry.discard_walk_root(pid)
        assert pid not in {c.pid for c in diag.tick()[0].children}
    finally:
        os.kill(pid, 9)


def test_async_helpers_do_not_block_the_loop(diag) -> None:
    async def main() -> tuple[dict, int]:
        beats = 0

        async def heartbeat() -> None:
            nonlocal beats
            while True:
                beats += 1
                await asyncio.sleep(0.001)

        hb = asyncio.create_task(heartbeat())
        results = await asyncio.gather(diag.aprofile(), diag.adiagnostics(), diag.acleanup(dry_run=True))
        hb.cancel()
        return results[0], beats

    profile, beats = asyncio.run(main())
    assert profile["process"]["rss_bytes"] > 0
    assert beats >= 1


def test_report_sections_are_added_and_errors_contained(diag, clean_registry) -> None:
    registry.register_section("custom", lambda d: {"ok": True})
    registry.register_section("broken", lambda d: 1 / 0)
    report = diag.diagnostics()
    assert report["custom"] == {"ok": True}
    assert "ZeroDivisionError" in report["broken"]["error"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_forked_child_gets_its_own_clean_monitor(fast_config) -> None:
    d = memdiag.start(fast_config)
    wait_for(lambda: d._ticks >= 2)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report what its monitor looks like, then leave at once
        try:
            inst = MemoryDiagnostics.get_instance()
            deadline = time.monotonic() + 30  # its monitor's first tick of its own
            while time.monotonic() < deadline and not (
                inst.last_sample is not None and inst.last_sample.process.pid == os.getpid()
            ):
                time.sleep(0.01)
            info = {
                "same": inst is d,
                "pid_ok": inst.pid == os.getpid(),
                "running": inst.running,
                "ticks": inst._ticks,
                "http": inst.http_server is None,
                "history_pids": inst.last_sample.process.pid if inst.last_sample else None,
            }
            os.write(w, json.dumps(info).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    info = json.loads(data)
    assert info["pid_ok"] and info["running"] and info["http"]
    assert info["history_pids"] == pid  # it samples itself, not the parent
    assert d.running and d.pid == os.getpid()


def test_monitor_thread_is_a_daemon_named_for_humans(shared) -> None:
    names = {t.name: t.daemon for t in threading.enumerate()}
    assert names.get("memdiag-monitor") is True


def test_a_lifecycle_hook_can_be_unregistered(clean_registry) -> None:
    # (A second definition of unregister_lifecycle once shadowed this one with a NameError.)
    registry.register_lifecycle("test-hook", lambda diag: None, lambda diag: None)
    assert "test-hook" in registry.lifecycle_hooks()
    registry.unregister_lifecycle("test-hook")
    registry.unregister_lifecycle("test-hook")  # unknown names are ignored
    assert "test-hook" not in registry.lifecycle_hooks()
