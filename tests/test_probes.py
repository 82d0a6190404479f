"""Probes on recorded /proc + cgroup trees (v2, v1, none) and on the real machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from memdiag.probes import (
    ChildWalker,
    detect_cgroup,
    read_cgroup,
    read_meminfo,
    read_psi,
    read_smaps_rollup,
    read_stat,
    read_statm_rss,
)
from memdiag.probes._io import PreadCache, parse_kv
from memdiag.probes.system import _join
from memdiag.sample import Sampler

from .conftest import wait_for

FIX = Path(__file__).parent / "fixtures"


def test_cgroup_v2_limit_from_parent_working_set_events_psi() -> None:
    root = FIX / "cgroup_v2"
    loc = detect_cgroup("self", str(root / "proc"), str(root / "sys"))
    assert loc is not None and loc.version == 2
    cg = read_cgroup(loc)
    assert cg is not None
    assert cg.limit == 1073741824  # memory.max of the pod slice binds the container
    assert cg.high == 943718400
    assert cg.usage == 734003200
    assert cg.working_set == 734003200 - 104857600  # usage - inactive_file
    assert cg.events["oom_kill"] == 1 and cg.events["max"] == 3
    assert cg.psi is not None and cg.psi.some_avg10 == 25.0 and cg.psi.full_avg10 == 12.0
    assert cg.usage_ratio == pytest.approx((734003200 - 104857600) / 1073741824)


def test_cgroup_v1_limits_and_counters() -> None:
    root = FIX / "cgroup_v1"
    loc = detect_cgroup("self", str(root / "proc"), str(root / "sys"))
    assert loc is not None and loc.version == 1
    cg = read_cgroup(loc)
    assert cg is not None
    assert cg.limit == 536870912
    assert cg.usage == 402653184
    assert cg.working_set == 402653184 - 67108864
    assert cg.events == {"max": 7, "oom_kill": 2, "under_oom": 0}
    assert cg.psi is None


def test_no_cgroup_and_no_psi() -> None:
    root = FIX / "cgroup_none"
    assert detect_cgroup("self", str(root / "proc"), str(root / "sys")) is None
    assert read_cgroup(None) is None
    assert read_psi(str(root / "proc" / "pressure" / "memory")) is None
    mem = read_meminfo(str(root / "proc"))
    assert mem is not None and mem.total == 16315892 * 1024 and mem.available == 9876543 * 1024


def test_sampler_on_recorded_tree_fails_soft() -> None:
    root = FIX / "cgroup_v2"
    s = Sampler(pid=12345, proc_root=str(root / "proc"), cgroup_root=str(root / "sys"), with_python=False)
    sample = s.take(profile=True)  # the pid does not exist in the recorded tree
    assert sample.process.rss is None
    assert sample.children == ()
    assert sample.system is not None and sample.system.total == 16315892 * 1024
    assert sample.psi is not None and sample.psi.some_avg10 == 1.5


def test_mount_root_is_stripped_from_the_cgroup_path() -> None:
    assert _join("/sys/fs/cgroup/memory", "/docker/abc", "/docker/abc") == "/sys/fs/cgroup/memory/"
    assert _join("/sys/fs/cgroup", "/", "/a/b") == "/sys/fs/cgroup/a/b"


def test_unreadable_and_garbage_files_are_missing_figures(tmp_path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "cgroup").write_text("garbage without colons\n")
    (tmp_path / "meminfo").write_text("MemTotal: lots kB\n")
    (tmp_path / "pressure").mkdir()
    (tmp_path / "pressure" / "memory").write_text("some avg10=abc\n")
    assert detect_cgroup("self", str(tmp_path)) is None
    assert read_meminfo(str(tmp_path)) is None
    assert read_psi(str(tmp_path / "pressure" / "memory")) is None
    assert read_stat(999999999) is None
    assert read_statm_rss(999999999) is None
    assert read_smaps_rollup(999999999) is None
    assert parse_kv(b"a 1\nb: 2 kB\nbad line\n") == {"a": 1, "b": 2048}


def test_real_machine_self_figures() -> None:
    st = read_stat(os.getpid())
    assert st is not None and st.pid == os.getpid() and st.state in "RS"
    rss = read_statm_rss("self")
    assert rss and rss > 1_000_000
    roll = read_smaps_rollup("self")
    assert roll is not None and 0 < roll["uss"] <= roll["pss"] <= roll["rss"] * 1.01
    mem = read_meminfo()
    assert mem is not None and 0 < mem.available <= mem.total


def test_real_machine_cgroup_and_psi_if_present() -> None:
    loc = detect_cgroup()
    if not Path("/sys/fs/cgroup").exists():
        assert loc is None
        return
    if loc is not None:
        cg = read_cgroup(loc)
        assert cg is not None and cg.usage is not None and cg.usage > 0
    if Path("/proc/pressure/memory").exists():
        assert read_psi("/proc/pressure/memory") is not None


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_walker_sees_children_grandchildren_and_zombies(children) -> None:
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    children.append(parent)
    grandchild = int(parent.stdout.readline())
    short = subprocess.Popen(["true"])
    children.append(short)
    wait_for(lambda: (st := read_stat(short.pid)) is not None and st.state == "Z", timeout=30, what="a zombie")
    w = ChildWalker()
    kids = {c.pid: c for c in w.walk()}
    assert kids[parent.pid].depth == 1 and kids[parent.pid].rss_bytes > 0
    assert kids[grandchild].depth == 2 and kids[grandchild].ppid == parent.pid
    assert kids[short.pid].state == "Z" and kids[short.pid].zombie
    # A cheap (non-full) walk sees the same tree.
    kids2 = {c.pid: c for c in w.walk(full=False)}
    assert set(kids2) == set(kids)
    short.wait()
    parent.kill()
    parent.wait()
    after = {c.pid for c in w.walk(full=False)}
    assert parent.pid not in after and short.pid not in after
    os.kill(grandchild, 9)
    w.close()
    assert w.open_fds == 0


def test_walker_counts_children_of_other_threads(children) -> None:
    import threading

    procs: list[subprocess.Popen[bytes]] = []
    t = threading.Thread(target=lambda: procs.append(_sleeper()))
    t.start()
    t.join()
    children.extend(procs)
    assert procs[0].pid in {c.pid for c in ChildWalker().walk()}


def test_pread_cache_is_bounded_and_notices_exit(children) -> None:
    cache = PreadCache(capacity=2)
    p = _sleeper()
    children.append(p)
    path = f"/proc/{p.pid}/stat"
    assert cache.read(path) is not None
    cache.read("/proc/self/statm")
    cache.read("/proc/meminfo")
    assert len(cache) == 2
    q = _sleeper()
    children.append(q)
    cache.read(f"/proc/{q.pid}/stat")
    q.kill()
    q.wait()
    assert cache.read(f"/proc/{q.pid}/stat") is None  # gone: the kept fd answers ESRCH
    cache.close()
    assert len(cache) == 0
