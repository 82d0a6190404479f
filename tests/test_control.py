"""The local control channel: a Unix socket per service, peer-checked, reached by the CLI."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest

import memdiag
from memdiag import registry, runtime
from memdiag.cli._client import ApiClient
from memdiag.control.client import connect_unix
from memdiag.probes._io import held_fds

from .conftest import wait_for
from .test_cli_support import cli

# A process that only calls memdiag.start(): no HTTP server at all.
START_ONLY = """
import sys, memdiag
memdiag.start(sample_interval=0.1, profile_interval=1.0)
print("up", flush=True)
sys.stdin.read()
"""


def _start_only() -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", START_ONLY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    wait_for(lambda: any(e.pid == proc.pid and e.socket for e in runtime.list_services()), what="entry")
    return proc


def _end(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=20)
    assert proc.stdout is not None
    proc.stdout.close()


def test_start_only_process_is_listed_and_answers_the_cli() -> None:
    proc = _start_only()
    try:
        (entry,) = [e for e in runtime.list_services() if e.pid == proc.pid]
        assert entry.url is None and entry.socket == str(runtime.runtime_dir() / f"{proc.pid}.sock")
        assert stat.S_IMODE(os.stat(entry.socket).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(runtime.runtime_dir()).st_mode) == 0o700
        ps = json.loads(cli("ps", "--json").stdout)
        assert [r["pid"] for r in ps] == [proc.pid] and ps[0]["pressure"] == "ok"
        for command in ("profile", "leaks", "diagnostics"):
            out = cli(command, "--pid", str(proc.pid), "--json")
            assert out.returncode == 0, out.stderr
            body = json.loads(out.stdout)
            if command == "profile":
                assert body["pid"] == proc.pid  # the service's own report, not an outside view
            elif command == "diagnostics":
                assert body["profile"]["pid"] == proc.pid
            else:
                assert body["enabled"] is True
        cleanup = cli("cleanup", "--dry-run", "--json")  # the only one; an acting endpoint, no token
        assert cleanup.returncode == 0, cleanup.stderr
        assert json.loads(cleanup.stdout)["dry_run"] is True
    finally:
        _end(proc)
    # A normal exit removes the socket and the entry.
    assert not (runtime.runtime_dir() / f"{proc.pid}.sock").exists()
    assert runtime.list_services() == []


def test_stale_socket_of_a_killed_service_is_cleaned() -> None:
    proc = _start_only()
    sock = runtime.runtime_dir() / f"{proc.pid}.sock"
    assert sock.exists()
    proc.kill()
    _end(proc)
    assert runtime.list_services() == []
    assert not sock.exists() and not (runtime.runtime_dir() / f"{proc.pid}.json").exists()
    # A socket left without an entry (killed between the two) goes too; a live one stays.
    orphan = socket.socket(socket.AF_UNIX)
    orphan.bind(str(sock))
    orphan.close()
    live = runtime.runtime_dir() / f"{os.getpid()}.sock"
    live.touch()
    assert runtime.list_services() == []
    assert not sock.exists() and live.exists()
    live.unlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_peer_of_another_user_is_refused(tmp_path) -> None:
    import pwd

    diag = memdiag.start(sample_interval=0.2)
    assert diag.running
    path = runtime.runtime_dir() / f"{os.getpid()}.sock"
    assert ApiClient(f"unix:{path}").get("/api/memory/status").status == 200
    # Open the file permissions on purpose: only the SO_PEERCRED check is left to refuse.
    os.chmod(runtime.runtime_dir(), 0o711)
    os.chmod(path, 0o666)
    nobody = pwd.getpwnam("nobody").pw_uid
    code = (
        "import ctypes, os, socket, sys\n"
        # The test's tmp ancestors are 0700: open the directory as root, then become nobody
        # (dumpable again, so /proc/self/fd stays ours) and connect through the descriptor.
        f"dfd = os.open({str(path.parent)!r}, os.O_RDONLY | os.O_DIRECTORY)\n"
        f"os.setuid({nobody})\n"
        "ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.settimeout(5)\n"
        f"s.connect(f'/proc/self/fd/{{dfd}}/{path.name}')\n"
        "try:\n"
        "    s.sendall(b'GET /api/memory/status HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
        "    data = s.recv(65536)\n"
        "except (ConnectionResetError, BrokenPipeError):\n    data = b''\n"
        "print(repr(data))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    os.chmod(runtime.runtime_dir(), 0o700)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "b''"  # connected, then closed unanswered
    # Our own user still gets answers.
    assert ApiClient(f"unix:{path}").get("/api/memory/status").status == 200


def test_own_socket_and_threads_are_not_the_apps() -> None:
    import threading

    # A long interval: the monitor ticks once at start, then sleeps (its /proc reads would
    # open descriptors at random moments); no SQLite file coming and going either.
    diag = memdiag.start(sample_interval=30, history_persist=False)
    wait_for(lambda: diag.last_sample is not None, what="the first tick")
    path = runtime.runtime_dir() / f"{os.getpid()}.sock"
    assert len(registry.own_fds()) == 3  # idle: the socket and the wake-up pipe
    sock = connect_unix(path)
    sock.close()
    # The first client starts the HTTP server: its loop's epoll and self-pipe are ours too.
    wait_for(lambda: len(registry.own_fds()) == 6, what="the loop's descriptors marked")
    assert registry.own_threads() >= 1
    sample, _ = diag.tick(profile=True)
    raw_fds = diag._sampler._fds  # what /proc/self/fd listed during that tick
    held = registry.own_fds() | held_fds()  # the control channel's, and the /proc and cgroup readers'
    assert raw_fds is not None and sample.process.fds == raw_fds - len(held)
    app_threads = [t for t in threading.enumerate() if not t.name.startswith("memdiag-control")]
    assert sample.process.threads == len(app_threads)
    memdiag.stop()
    assert registry.own_fds() == frozenset() and not path.exists()


def test_an_idle_channel_imports_no_http_stack() -> None:
    code = (
        "import os, sys, memdiag\n"
        "from memdiag import runtime\n"
        "memdiag.start(sample_interval=0.2, history_persist=False)\n"
        "heavy = [m for m in ('asyncio', 'memdiag.http.core', 'memdiag.http.wire') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from memdiag.cli._client import ApiClient\n"
        "path = runtime.runtime_dir() / f'{os.getpid()}.sock'\n"
        "body = ApiClient(f'unix:{path}').get('/api/memory/status').body\n"
        "assert body['status'] == 'ok' and 'memdiag.http.wire' in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_forked_child_gets_its_own_channel() -> None:
    code = (
        "import os, sys, time, memdiag\n"
        "from memdiag import runtime\n"
        "from memdiag.cli._client import ApiClient\n"
        "memdiag.start(sample_interval=0.1)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    end = time.monotonic() + 20\n"
        "    while time.monotonic() < end and not os.path.exists(runtime.runtime_dir() / 'stop'):\n"
        "        time.sleep(0.02)\n"
        "    os._exit(0)\n"
        "end = time.monotonic() + 20\n"
        "while not any(e.pid == pid and e.socket for e in runtime.list_services()):\n"
        "    assert time.monotonic() < end, 'child never announced'\n"
        "    time.sleep(0.02)\n"
        "for p in (os.getpid(), pid):\n"
        "    r = ApiClient(f'unix:{runtime.runtime_dir()}/{p}.sock').get('/api/memory/status')\n"
        "    assert r.body['pid'] == p, (r.body['pid'], p)\n"
        "(runtime.runtime_dir() / 'stop').touch()\n"
        "os.waitpid(pid, 0)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_long_runtime_path_still_works(tmp_path, monkeypatch) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    monkeypatch.setenv("MEMDIAG_RUNTIME_DIR", str(deep))
    memdiag.start(sample_interval=0.2)
    path = deep / f"{os.getpid()}.sock"
    assert len(str(path).encode()) > 108  # more than sun_path holds
    start = time.monotonic()
    assert ApiClient(f"unix:{path}").get("/api/memory/status").body["pid"] == os.getpid()
    assert time.monotonic() - start < 5
    s = socket.socket(socket.AF_UNIX)
    s.close()


def test_every_api_entry_point_that_reads_headers_is_authenticated_for_a_checked_peer() -> None:
    """The control channel authenticates a checked peer by adding the token to its headers;
    a new MemoryAPI method that reads headers must get the same, or local calls get 401."""
    import inspect

    from memdiag.http.unix import _TrustedPeerAPI
    from memdiag.http.core import MemoryAPI

    takes_headers = {
        name
        for name, fn in inspect.getmembers(MemoryAPI, inspect.isfunction)
        if not name.startswith("_") and "headers" in inspect.signature(fn).parameters
    }
    assert takes_headers and takes_headers <= set(vars(_TrustedPeerAPI))


def test_loop_descriptors_reported_after_close_are_not_marked() -> None:
    # The loop thread tells the channel its descriptors when the first client connects;
    # under load that can come after close() disowned the rest. Marked then, they stayed
    # marked for good, and an application descriptor reusing the number vanished from
    # the application's counts (seen as a test failing in loaded full runs).
    from memdiag.control.channel import ControlChannel

    diag = memdiag.start(sample_interval=30, history_persist=False)
    channel = ControlChannel(diag, name="late-loop")
    mine = set(channel._fds)
    assert mine <= registry.own_fds()
    channel.close()
    channel._own_fds((10_001, 10_002))  # what the loop thread reports, too late
    assert not ({10_001, 10_002} | mine) & registry.own_fds()
    memdiag.stop()
