"""The per-user runtime directory where services announce themselves."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

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


def _default_dir(monkeypatch, tmp_path):
    """Point the default (no MEMDIAG_RUNTIME_DIR, no XDG_RUNTIME_DIR) at a sticky tmp dir."""
    import tempfile

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    os.chmod(tmp, 0o1777)
    monkeypatch.delenv("MEMDIAG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp / f"memdiag-{os.getuid()}"


def test_default_dir_is_created_private(monkeypatch, tmp_path) -> None:
    d = _default_dir(monkeypatch, tmp_path)
    assert runtime.runtime_dir(create=True) == d
    st = os.lstat(d)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    runtime.register_service(None, "t" * 32, name="x")  # usable
    runtime.unregister_service()


def test_planted_symlink_is_refused_and_victim_untouched(monkeypatch, tmp_path) -> None:
    d = _default_dir(monkeypatch, tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    os.chmod(victim, 0o755)
    os.symlink(victim, d)  # another user planted /tmp/memdiag-<uid> -> their choice
    with pytest.raises(runtime.RuntimeDirError, match="symlink"):
        runtime.runtime_dir(create=True)
    with pytest.raises(runtime.RuntimeDirError):
        runtime.register_service(None, "t" * 32)
    assert stat.S_IMODE(os.stat(victim).st_mode) == 0o755  # never chmod-ed through the link
    assert list(victim.iterdir()) == []  # nothing written there


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory owned by another user")
def test_directory_of_another_user_is_refused(monkeypatch, tmp_path) -> None:
    import pwd

    d = _default_dir(monkeypatch, tmp_path)
    d.mkdir(mode=0o700)
    nobody = pwd.getpwnam("nobody")
    os.chown(d, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(runtime.RuntimeDirError, match=f"belongs to uid {nobody.pw_uid}"):
        runtime.runtime_dir(create=True)
    st = os.stat(d)
    assert st.st_uid == nobody.pw_uid and stat.S_IMODE(st.st_mode) == 0o700 and list(d.iterdir()) == []


def test_directory_open_to_others_is_refused_not_chmodded(monkeypatch, tmp_path) -> None:
    d = _default_dir(monkeypatch, tmp_path)
    d.mkdir()
    os.chmod(d, 0o777)
    with pytest.raises(runtime.RuntimeDirError, match="mode 0777"):
        runtime.runtime_dir(create=True)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o777


def test_start_with_http_in_an_unsafe_runtime_dir_keeps_serving(monkeypatch, tmp_path) -> None:
    """The API still works; only the CLI's entry is not written (and nothing leaks)."""
    import memdiag

    d = _default_dir(monkeypatch, tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    os.symlink(victim, d)
    diag = memdiag.start(http=True, sample_interval=0.2)
    assert diag.http_server is not None
    assert list(victim.iterdir()) == []
