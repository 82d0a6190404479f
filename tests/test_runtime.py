"""The per-user runtime directory where services announce themselves."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from memdiag import runtime


def test_register_list_unregister_with_private_files() -> None:
    path = runtime.register_service("http://127.0.0.1:1234", "t" * 32, name="svc")
    d = runtime.runtime_dir()
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(d / f"{os.getpid()}.token").st_mode) == 0o600
    assert "t" * 32 not in path.read_text()  # the token never sits in the listing file
    (entry,) = [e for e in runtime.list_services() if e.pid == os.getpid()]
    assert entry.url == "http://127.0.0.1:1234" and entry.token() == "t" * 32
    assert "token" not in json.dumps(entry.to_dict())
    runtime.unregister_service()
    assert not [e for e in runtime.list_services() if e.pid == os.getpid()]


def test_stale_entries_are_ignored_and_removed() -> None:
    d = runtime.runtime_dir(create=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (d / f"{dead.pid}.json").write_text(json.dumps({"pid": dead.pid, "start_ticks": 1, "url": "http://x"}))
    # A live PID (ours) with another start time: a reused PID.
    (d / "reused.json").write_text(json.dumps({"pid": os.getpid(), "start_ticks": 1, "url": "http://y"}))
    (d / "garbage.json").write_text("{not json")
    assert runtime.list_services() == []
    assert sorted(p.name for p in d.iterdir()) == []


def test_a_service_that_exits_normally_removes_its_entry() -> None:
    code = (
        "import memdiag, os\n"
        "d = memdiag.start(http=True, sample_interval=0.1)\n"
        "print(os.getpid(), flush=True)\n"
        "assert any(e.pid == os.getpid() for e in memdiag.runtime.list_services())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split()[0])
    assert not (runtime.runtime_dir() / f"{pid}.json").exists()
    assert not (runtime.runtime_dir() / f"{pid}.token").exists()
