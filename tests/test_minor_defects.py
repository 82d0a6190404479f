"""Issue 16 item 10: the minor defects, each reproduced first."""

from __future__ import annotations

import socket
import threading

import pytest

import memdiag
from memdiag.service import MemoryDiagnostics


def _memdiag_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("memdiag")}


@pytest.mark.parametrize("kind", ["busy", "unresolvable", "public"])
def test_start_with_a_bad_http_address_leaves_nothing_running(kind: str) -> None:
    before = _memdiag_threads()
    busy = socket.create_server(("127.0.0.1", 0))
    address = {
        "busy": f"127.0.0.1:{busy.getsockname()[1]}",  # already bound: OSError
        "unresolvable": "no-such-host.invalid:0",
        "public": "192.0.2.10:0",  # not loopback and no token: refused
    }[kind]
    try:
        with pytest.raises((OSError, memdiag.ConfigError)):
            memdiag.start(http=address, sample_interval=0.05)
        inst = MemoryDiagnostics._instance
        assert inst is None or not inst.running
        assert _memdiag_threads() <= before, _memdiag_threads() - before
    finally:
        busy.close()
        memdiag.stop()


def test_start_with_a_bad_http_address_keeps_an_already_running_monitor() -> None:
    diag = memdiag.start(sample_interval=0.05)
    busy = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(OSError):
            memdiag.start(http=f"127.0.0.1:{busy.getsockname()[1]}")
        assert diag.running  # it was the caller's before this call: left as it was
    finally:
        busy.close()
        memdiag.stop()


# -- history_size against memdiag's own memory budget ------------------------------------------


def test_history_size_over_the_budget_is_refused_with_its_cost() -> None:
    from memdiag.config import ConfigError, MemoryConfig

    with pytest.raises(ConfigError) as info:
        MemoryConfig(history_size=1_000_000)
    message = info.value.errors["history_size"]
    assert "MiB" in message and "self_memory_budget_mb" in message, message
    assert "160" in message  # 1e6 samples x 168 bytes = 160.2 MiB: said, not silently taken
    # Raising the budget on purpose allows it.
    assert MemoryConfig(history_size=1_000_000, self_memory_budget_mb=200).history_size == 1_000_000
    before = MemoryConfig()
    with pytest.raises(ConfigError):
        before.updated(history_size=500_000)


def test_the_estimate_is_what_the_ring_really_takes() -> None:
    import tracemalloc

    from memdiag.config import history_ring_bytes
    from memdiag.history import History

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        ring = History(50_000)
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert ring.memory_bytes() == pytest.approx(history_ring_bytes(50_000), rel=0.02)
    assert used == pytest.approx(history_ring_bytes(50_000), rel=0.05)


def test_overhead_reports_the_budget() -> None:
    from memdiag.config import MemoryConfig

    diag = MemoryDiagnostics(MemoryConfig(history_size=7200, enable_auto_cleanup=False))
    try:
        o = diag.overhead()
        assert o["memory_budget_bytes"] == 32 * 1024 * 1024
        assert o["history_bytes"] <= o["memory_budget_bytes"]
    finally:
        diag.close()


# -- owned children do not outlive the service ----------------------------------------------

_SERVICE = """
import subprocess, sys, memdiag
memdiag.start(sample_interval=0.2)
p = memdiag.Popen(["sleep", "60"], role="helper", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(p.pid, flush=True)
sys.exit(0)   # the service ends without ending its helper
"""


def _run_service(env_extra: dict[str, str]) -> int:
    import os
    import subprocess
    import sys

    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", _SERVICE], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[0])


def _alive(pid: int) -> bool:
    from memdiag.processes.ownership import read_identity

    st = read_identity(pid)
    return st is not None and st.state not in ("Z", "X")


def test_owned_children_are_ended_when_the_service_exits() -> None:
    from .conftest import wait_for

    pid = _run_service({})
    wait_for(lambda: not _alive(pid), timeout=10, what="the helper to be gone")


def test_owned_children_may_be_kept_on_purpose() -> None:
    import os
    import signal

    pid = _run_service({"MEMDIAG_TERMINATE_OWNED_ON_EXIT": "false"})
    try:
        assert _alive(pid)  # configured so: it outlives the service
    finally:
        os.kill(pid, signal.SIGKILL)  # the test's own cleanup of that orphan


# -- memdiag's log lines: only through `logging`, never raw on the application's stderr -------


def test_no_log_line_reaches_stderr_of_an_app_without_logging() -> None:
    import subprocess
    import sys

    code = (
        "import time, memdiag\n"
        "d = memdiag.start(memory_threshold_mb=1, sustain_seconds=0, sample_interval=0.05)\n"
        "t = time.monotonic()\n"
        "while d.status()['status'] != 'critical' and time.monotonic() - t < 20: time.sleep(0.05)\n"
        "print(d.status()['status'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "critical"  # a WARNING was logged ("memory pressure ok -> critical")
    assert out.stderr == "", out.stderr  # ... and not printed behind the application's back


def test_log_records_carry_no_control_characters_or_raw_bytes() -> None:
    import io
    import logging

    import memdiag  # noqa: F401 - installs the memdiag logger's handler

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        name = "evil\x1b[2J\x07\nFAKE LINE \udcff"  # a process name or path from /proc
        logging.getLogger("memdiag.processes").warning("reaped child 7 (%s)", name)
    finally:
        root.removeHandler(handler)
    text = stream.getvalue()
    assert text.count("\n") == 1 and "\x1b" not in text and "\x07" not in text and "\udcff" not in text
    assert "reaped child 7 (evil\\x1b[2J\\x07\\nFAKE LINE \\udcff)" in text
