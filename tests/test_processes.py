"""Process-tree governance against real process trees: zombies, ownership, termination."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import memdiag
from memdiag.config import MemoryConfig
from memdiag.errors import ProcessNotOwnedError
from memdiag.processes import (
    OwnedProcess,
    is_child_subreaper,
    owner_of,
    reap_zombies,
    set_child_subreaper,
    terminate,
    track,
)
from memdiag.processes.ownership import read_identity
from memdiag.processes.sanitize import sanitize_node_argv, sanitize_node_options, split_node_options
from memdiag.service import MemoryDiagnostics

from .conftest import wait_for


def state(pid: int) -> str | None:
    st = read_identity(pid)
    return st.state if st else None


def gone(pid: int) -> bool:
    return read_identity(pid) is None


@pytest.fixture
def outsider() -> Iterator[int]:
    """A `sleep` outside this process's tree: started by a shell that exits at once."""
    out = subprocess.run(
        ["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        start_new_session=True,
        check=True,
    )
    pid = int(out.stdout.strip())
    wait_for(lambda: (st := read_identity(pid)) is not None and st.ppid != os.getpid(), what="re-parenting")
    yield pid
    try:
        os.kill(pid, signal.SIGKILL)  # the test's own process, not memdiag's doing
    except ProcessLookupError:
        pass


# -- zombies ----------------------------------------------------------------------------------


def test_owned_popen_zombie_is_reaped_with_its_exit_code(diag: MemoryDiagnostics, children: list) -> None:
    p = memdiag.Popen(["sh", "-c", "exit 7"], role="quitter")
    children.append(p)
    wait_for(lambda: state(p.pid) == "Z", what="zombie")
    sample, _ = diag.tick()
    assert sample.zombies >= 1
    section = diag.diagnostics()["processes"]
    own = [z for z in section["zombies"]["own"] if z["pid"] == p.pid]
    assert own and own[0]["owned"] is True
    result = diag.cleanup(force=True)
    rung = next(a for a in result["actions"] if a["name"] == "zombies")
    assert rung["count"] >= 1 and rung["error"] is None
    assert p.returncode == 7  # reaped through poll(): the status is Popen's
    assert gone(p.pid)
    assert owner_of(p.pid) is None


def test_foreign_popen_reaped_by_its_poll_raw_child_left_to_the_application(
    diag: MemoryDiagnostics, children: list
) -> None:
    plain = subprocess.Popen(["sh", "-c", "exit 3"])  # a Popen memdiag did not create
    children.append(plain)
    raw = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 5"], dict(os.environ))  # no object owns it
    wait_for(lambda: state(plain.pid) == "Z" and state(raw) == "Z", what="zombies")
    first = reap_zombies()  # young zombies are left to their owners
    assert first["waiting"] >= 2 and state(raw) == "Z"
    time.sleep(1.05)  # the zombies' age is the subject: min_age is 1 s
    res = reap_zombies()
    assert res["by_stage"]["popen_objects"] >= 1
    assert res["by_stage"]["unowned"] == 0 and res["left_to_application"] >= 1
    assert plain.returncode == 3  # its own poll() reaped it
    assert state(raw) == "Z"  # the application's own child: its status is the application's
    assert os.waitstatus_to_exitcode(os.waitpid(raw, 0)[1]) == 5


def test_multiprocessing_children_reaped_through_multiprocessing(children: list) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=os._exit, args=(4,))
    proc.start()
    wait_for(lambda: state(proc.pid) == "Z", timeout=20, what="mp zombie")
    res = reap_zombies()
    assert res["by_stage"]["multiprocessing"] == 1
    assert proc.exitcode == 4


def test_foreign_zombie_reported_with_its_parent(diag: MemoryDiagnostics, children: list) -> None:
    # A python child that starts a grandchild and never reaps it.
    code = "import subprocess,time; p=subprocess.Popen(['true']); print(p.pid, flush=True); time.sleep(30)"
    parent = memdiag.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, role="negligent")
    children.append(parent)
    grandchild = int(parent.stdout.readline())
    wait_for(lambda: state(grandchild) == "Z", what="grandchild zombie")
    diag.tick()
    foreign = diag.diagnostics()["processes"]["zombies"]["foreign"]
    z = next(z for z in foreign if z["pid"] == grandchild)
    assert z["parent"]["pid"] == parent.pid and z["parent"]["owned"] is True
    items = {it["pid"]: it for it in diag.subprocesses()}
    assert items[grandchild]["parent"]["pid"] == parent.pid
    assert items[parent.pid]["owned"] is True and items[parent.pid]["role"] == "negligent"


def test_orphaned_grandchild_adopted_and_reaped_in_subreaper_mode(diag: MemoryDiagnostics, children: list) -> None:
    set_child_subreaper(True)
    try:
        assert is_child_subreaper()
        p = memdiag.Popen(["sh", "-c", "sleep 1 & echo $!; sleep 0.4"], stdout=subprocess.PIPE)
        children.append(p)
        grandchild = int(p.stdout.readline())
        diag.tick()  # sees the grandchild under its shell
        p.wait(5)
        wait_for(lambda: (st := read_identity(grandchild)) is not None and st.ppid == os.getpid(), what="adoption")
        diag.tick()
        wait_for(lambda: state(grandchild) == "Z", what="orphan exit")
        diag.tick()  # the observer reaps the adopted orphan
        assert gone(grandchild)
        events = diag.diagnostics()["processes"]["events"]
        kinds = {e["event"] for e in events if e["pid"] == grandchild}
        assert {"appeared", "adopted", "reaped"} <= kinds
        reaped = next(e for e in events if e["pid"] == grandchild and e["event"] == "reaped")
        assert reaped["returncode"] == 0
    finally:
        set_child_subreaper(False)
    assert not is_child_subreaper()


# -- identity and termination -----------------------------------------------------------------


def test_pid_reuse_never_signals_the_successor(outsider: int, children: list) -> None:
    # A stale entry for the outsider's PID with another start time: as if our process
    # had died and its PID had been reused by this unrelated one.
    st = read_identity(outsider)
    assert st is not None
    stale = OwnedProcess(pid=outsider, start_ticks=st.start_ticks - 1, kind="pid")
    assert stale.send_signal(signal.SIGTERM) is False
    # With a pidfd: the process it named is gone, whatever now holds the number.
    p = memdiag.Popen(["sleep", "30"])
    children.append(p)
    entry = p.ownership
    assert entry.has_pidfd
    p.kill()
    p.wait()
    assert entry.send_signal(signal.SIGTERM) is False
    time.sleep(0.1)
    assert state(outsider) in ("S", "R")


def test_terminate_term_then_kill_after_grace(children: list) -> None:
    p = memdiag.Popen(
        [
            sys.executable,
            "-c",
            "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    children.append(p)
    p.stdout.readline()
    res = terminate(p, grace=0.3)
    assert res["signals"] == ["TERM", "KILL"]
    assert res["exited"] and res["returncode"] == -signal.SIGKILL
    assert p.returncode == -signal.SIGKILL


def test_process_group_terminated_as_a_unit(children: list) -> None:
    p = memdiag.Popen(
        ["sh", "-c", "sleep 30 & echo $!; sleep 30 & echo $!; wait"], stdout=subprocess.PIPE, start_new_session=True
    )
    children.append(p)
    members = [int(p.stdout.readline()), int(p.stdout.readline())]
    assert p.ownership.process_group
    res = terminate(p, grace=2)
    assert res["exited"] and res["group"]
    wait_for(lambda: all(gone(m) or state(m) == "Z" for m in members), what="group members to end")


def test_non_owned_processes_survive_every_cleanup(diag: MemoryDiagnostics, outsider: int, children: list) -> None:
    diag.configure(child_limit_mb=1.0)  # every child is "over its limit"
    sibling = subprocess.Popen(["sleep", "30"])  # in our tree, not owned
    children.append(sibling)
    victim = memdiag.Popen(["sleep", "30"], role="expendable", expendable=True)
    children.append(victim)
    hog = memdiag.Popen(["sleep", "30"], role="hog", memory_limit_mb=1.0)
    children.append(hog)
    diag.tick()
    for _ in range(3):
        result = diag.cleanup(force=True)
    rung = next(a for a in result["actions"] if a["name"] == "owned_children")
    assert rung["error"] is None
    assert victim.returncode is not None and hog.returncode is not None
    assert sibling.poll() is None
    assert state(outsider) in ("S", "R")
    with pytest.raises(ProcessNotOwnedError):
        terminate(sibling)
    with pytest.raises(ProcessNotOwnedError):
        terminate(outsider)
    track(outsider, role="tracked-outsider")  # owned on paper, but outside the tree
    with pytest.raises(ProcessNotOwnedError, match="outside"):
        terminate(outsider)
    diag.tick()
    assert outsider in {c.pid for c in diag.last_sample.children}  # still monitored
    diag.cleanup(force=True)
    assert state(outsider) in ("S", "R") and sibling.poll() is None


def test_terminate_policy_none_refuses(diag: MemoryDiagnostics, children: list) -> None:
    p = memdiag.Popen(["sleep", "30"], expendable=True)
    children.append(p)
    with pytest.raises(ProcessNotOwnedError, match="terminate_policy"):
        terminate(p, config=MemoryConfig(terminate_policy="none"))
    diag.configure(terminate_policy="none")
    result = diag.cleanup(force=True)
    rung = next(a for a in result["actions"] if a["name"] == "owned_children")
    assert "terminate_policy" in rung["detail"]
    assert p.poll() is None


def test_dry_run_changes_nothing(diag: MemoryDiagnostics, children: list) -> None:
    z = memdiag.Popen(["true"])
    victim = memdiag.Popen(["sleep", "30"], expendable=True)
    children += [z, victim]
    wait_for(lambda: state(z.pid) == "Z", what="zombie")
    result = diag.cleanup(force=True, dry_run=True)
    names = {a["name"]: a for a in result["actions"]}
    assert names["zombies"]["count"] >= 1 and names["owned_children"]["count"] >= 1
    assert state(z.pid) == "Z" and victim.poll() is None


def test_owned_context_manager_and_spawn(children: list) -> None:
    with memdiag.owned(["sleep", "30"], grace=1.0, role="scoped") as p:
        assert owner_of(p.pid) is p.ownership and p.ownership.role == "scoped"
    assert p.returncode == -signal.SIGTERM
    q = memdiag.spawn(["sh", "-c", "exit 2"])
    assert q.wait(5) == 2


def test_track_a_popen_and_reports(diag: MemoryDiagnostics, children: list) -> None:
    plain = subprocess.Popen(["sleep", "30"])
    children.append(plain)
    entry = track(plain, role="adopted", group="batch", memory_limit_mb=500)
    assert entry.kind == "popen" and entry.start_ticks is not None
    assert track(plain) is entry  # idempotent
    diag.tick(profile=True)
    section = diag.diagnostics()["processes"]
    g = next(g for g in section["groups"] if g["role"] == "adopted")
    assert g["owned"] == 1 and g["rss_bytes"] > 0 and g["uss_bytes"] > 0
    assert section["totals"]["owned"] >= 1
    assert any(e["event"] == "appeared" and e["pid"] == plain.pid for e in section["events"])
    plain.kill()
    plain.wait()
    diag.tick()
    exits = [e for e in diag.diagnostics()["processes"]["events"] if e["event"] == "exited" and e["pid"] == plain.pid]
    assert exits and exits[0]["lifetime_seconds"] >= 0


def test_tick_over_100_children_is_cheap(diag: MemoryDiagnostics, children: list) -> None:
    for _ in range(100):
        children.append(memdiag.Popen(["sleep", "60"], stdout=subprocess.DEVNULL))
    diag.tick(profile=False)
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        sample, _ = diag.tick(profile=False)
        times.append(time.perf_counter() - t0)
    assert len([c for c in sample.children if c.name == "sleep"]) >= 100
    times.sort()
    assert times[len(times) // 2] < 0.025  # bar 5 ms on a quiet host; generous for shared CI


# -- NODE_OPTIONS ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("--inspect=0.0.0.0:9229", "--inspect=127.0.0.1:9229"),
        ("--inspect-brk=[::]:0 --max-old-space-size=64", "--inspect-brk=127.0.0.1:0 --max-old-space-size=64"),
        ("--inspect-port 10.1.2.3:9230", "--inspect-port 127.0.0.1:9230"),
        ("--inspect=example.com", "--inspect=127.0.0.1"),
        ("--inspect=9229", "--inspect=9229"),
        ('--inspect=localhost:9229 --require "/a b/c.js"', '--inspect=localhost:9229 --require "/a b/c.js"'),
        ("--inspect=[::1]:9229", "--inspect=[::1]:9229"),
    ],
)
def test_sanitize_node_options(given: str, expected: str) -> None:
    out, _ = sanitize_node_options(given)
    assert split_node_options(out) == split_node_options(expected)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["--inspect=0.0.0.0:0", "-e", "1"], ["--inspect=127.0.0.1:0", "-e", "1"]),
        (["--inspect-port", "[::]:0", "app.js"], ["--inspect-port", "127.0.0.1:0", "app.js"]),
        # The script's own arguments are not node's: left alone.
        (["app.js", "--inspect=0.0.0.0"], ["app.js", "--inspect=0.0.0.0"]),
        (["--", "--inspect=0.0.0.0"], ["--", "--inspect=0.0.0.0"]),
        (["--inspect-port"], ["--inspect-port"]),
    ],
)
def test_sanitize_node_argv(given: list[str], expected: list[str]) -> None:
    assert sanitize_node_argv(given)[0] == expected


def test_spawn_node_keeps_a_command_line_inspector_on_loopback(children: list) -> None:
    p = memdiag.spawn_node(
        ["--inspect=0.0.0.0:0", "-e", "console.log(require('inspector').url()); process.exit(0)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    children.append(p)
    out, _ = p.communicate(timeout=20)
    assert out.decode().startswith("ws://127.0.0.1:")


def test_real_node_child_inspector_stays_on_loopback(children: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_OPTIONS", "--inspect=0.0.0.0:0 --inspect-publish-uid=http")
    p = memdiag.Popen(
        ["node", "-e", "console.log(require('inspector').url())"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    children.append(p)
    out, _ = p.communicate(timeout=20)
    assert out.decode().startswith("ws://127.0.0.1:")
