"""Issue 16 items 2 and 3: memdiag never steals an exit status, never signals a reused PID.

Every spawning API the application may use (``os.fork``, ``os.posix_spawn``,
``subprocess.Popen``, ``multiprocessing``) leaves a zombie child that memdiag's zombie
rung sees, in the worst case (subreaper mode, ``min_age=0``); the application's own wait
must still get the status afterwards.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from memdiag.processes import install, reap_zombies, set_child_subreaper, terminate, track
from memdiag.processes.ownership import read_identity, registry
from memdiag.service import MemoryDiagnostics

from .conftest import wait_for


def _state(pid: int) -> str | None:
    st = read_identity(pid)
    return st.state if st else None


@pytest.fixture
def subreaper() -> Iterator[None]:
    """The worst case: subreaper mode on, the process rungs and tree observer installed."""
    install()
    set_child_subreaper(True)
    try:
        yield
    finally:
        set_child_subreaper(False)


def _reap_everything(diag: MemoryDiagnostics) -> None:
    """What memdiag does to zombie children: the rung directly and a forced cleanup."""
    diag.tick()
    reap_zombies(min_age=0.0)
    diag.cleanup(force=True)
    diag.tick()


def test_os_fork_child_status_stays_the_applications(diag: MemoryDiagnostics, subreaper: None) -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(11)
    wait_for(lambda: _state(pid) == "Z", what="fork zombie")
    _reap_everything(diag)
    assert _state(pid) == "Z"  # left for its parent, the application
    got, status = os.waitpid(pid, 0)  # ChildProcessError here if memdiag had reaped it
    assert got == pid and os.waitstatus_to_exitcode(status) == 11


def test_posix_spawn_child_status_stays_the_applications(diag: MemoryDiagnostics, subreaper: None) -> None:
    pid = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 5"], dict(os.environ))
    wait_for(lambda: _state(pid) == "Z", what="posix_spawn zombie")
    _reap_everything(diag)
    got, status = os.waitpid(pid, 0)
    assert got == pid and os.waitstatus_to_exitcode(status) == 5


def test_popen_child_status_stays_the_applications(diag: MemoryDiagnostics, subreaper: None) -> None:
    p = subprocess.Popen(["sh", "-c", "exit 3"])
    wait_for(lambda: _state(p.pid) == "Z", what="Popen zombie")
    _reap_everything(diag)
    assert p.wait(5) == 3  # reaped through its own poll() at most: the status is Popen's


def test_multiprocessing_child_status_stays_the_applications(diag: MemoryDiagnostics, subreaper: None) -> None:
    proc = multiprocessing.get_context("fork").Process(target=os._exit, args=(4,))
    proc.start()
    wait_for(lambda: _state(proc.pid) == "Z", timeout=20, what="multiprocessing zombie")
    _reap_everything(diag)
    proc.join(5)
    assert proc.exitcode == 4


def test_adopted_orphan_is_reaped_by_the_rung(diag: MemoryDiagnostics, subreaper: None, children: list) -> None:
    # A shell starts a grandchild that outlives it; once adopted (seen first under the
    # shell), nobody but memdiag can wait for it, so the rung reaps it.
    p = subprocess.Popen(["sh", "-c", "sleep 1 & echo $!; read x"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    children.append(p)
    grandchild = int(p.stdout.readline())
    diag.tick()  # seen under the shell, which waits for its stdin
    p.stdin.close()  # the shell exits; its child is re-parented to us
    p.wait(5)
    wait_for(lambda: (st := read_identity(grandchild)) is not None and st.ppid == os.getpid(), what="adoption")
    diag.tick()
    wait_for(lambda: _state(grandchild) == "Z", what="orphan exit")
    res = reap_zombies(min_age=0.0)
    assert _state(grandchild) is None
    assert res["by_stage"]["unowned"] == 1


# -- item 3: PID reuse without pidfd -----------------------------------------------------------


def _reuse_pid(pid: int) -> int | None:
    """Start ``sleep`` on exactly ``pid`` (root: ``ns_last_pid``); None if someone else took it."""
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))
    new = os.posix_spawn("/bin/sleep", ["sleep", "30"], dict(os.environ))
    if new == pid:
        return new
    os.kill(new, signal.SIGKILL)  # the test's own child
    os.waitpid(new, 0)
    return None


@pytest.mark.skipif(os.geteuid() != 0 or not os.access("/proc/sys/kernel/ns_last_pid", os.W_OK), reason="needs root")
def test_pid_reused_within_one_tick_is_never_signalled(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated absence of pidfd: os.pidfd_open removed for this test, as on kernels
    # before 5.3 or Pythons without it. The PID is reused for real (ns_last_pid), within
    # the same clock tick, so (pid, start_ticks) alone cannot tell the two apart.
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    for _ in range(100):
        first = os.posix_spawn("/bin/sleep", ["sleep", "30"], dict(os.environ))
        entry = track(first, role="victim")
        assert entry.handle == "procfd"  # no pidfd: the /proc/PID descriptor names it
        os.kill(first, signal.SIGKILL)  # it dies and the application reaps it ...
        os.waitpid(first, 0)
        successor = _reuse_pid(first)  # ... and the number is handed out again at once
        if successor is None:
            registry.finish(entry)
            continue
        try:
            same_tick = read_identity(successor).start_ticks == entry.start_ticks
            if not same_tick:
                continue
            assert entry.send_signal(signal.SIGTERM) is False
            assert entry.signal_group(signal.SIGTERM) is False
            assert _state(successor) in ("S", "R")  # the successor was not hit
            res = terminate(entry, grace=0.1)
            assert res["signals"] == [] and res["refused"] == "exited"
            assert _state(successor) in ("S", "R")
            return
        finally:
            registry.finish(entry)
            entry.close()
            os.kill(successor, signal.SIGKILL)
            os.waitpid(successor, 0)
    pytest.skip("could not reuse a PID within one clock tick on this machine")


def test_identity_check_without_pidfd_still_signals_the_live_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "pidfd_open", raising=False)  # simulated absence of pidfd
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    entry = track(p, role="live")
    try:
        assert entry.send_signal(signal.SIGTERM) is True
        assert p.wait(5) == -signal.SIGTERM
        assert entry.send_signal(signal.SIGTERM) is False  # reaped: never again
    finally:
        registry.finish(entry)
        entry.close()
