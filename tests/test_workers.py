"""Pre-fork servers for real: gunicorn (sync, gthread, uvicorn workers) and uvicorn --workers,
with memdiag mounted in a Flask / FastAPI app, and `memdiag run` in front of them."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from memdiag import runtime
from memdiag.probes.process import read_stat
from memdiag.workers import is_server_command

from .conftest import wait_for
from .test_cli_support import cli

pytest.importorskip("gunicorn")
pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SRC = Path(__file__).resolve().parent.parent / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _workers(master: int) -> list[runtime.ServiceEntry]:
    return [
        e
        for e in runtime.list_services()
        if e.socket and (e.server or {}).get("pid") == master and e.server.get("role") == "worker"
    ]


@contextmanager
def server(argv: list[str], workers: int, env: dict[str, str] | None = None) -> Iterator[tuple[int, int]]:
    """Run a pre-fork server until its ``workers`` workers announced themselves; yields
    ``(master pid, port)`` and stops it with SIGTERM (a graceful shutdown) afterwards."""
    port = _free_port()
    argv = [a.replace("{port}", str(port)) for a in argv]
    full_env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{FIXTURES}", **(env or {})}
    proc = subprocess.Popen(argv, cwd=FIXTURES, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        master = proc.pid
        if argv[:3] == [sys.executable, "-m", "memdiag"]:  # `memdiag run`: the server is its child
            master = wait_for(lambda: _child(proc.pid), timeout=30, what="the server under memdiag run")
        wait_for(lambda: len(_workers(master)) >= workers, timeout=60, what=f"{workers} workers announced")
        wait_for(lambda: _serving(port), timeout=60, what="the server accepting requests")
        yield master, port
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        assert b"Traceback" not in err, err.decode(errors="replace")[-2000:]


def _serving(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _child(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(text[0]) if text else None


def _shared_token(master: int) -> str:
    st = read_stat(master)
    assert st is not None
    path = runtime.runtime_dir() / f"server-{master}-{st.start_ticks}" / "token"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    return path.read_text().strip()


def _send(
    conn: http.client.HTTPConnection, method: str, path: str, token: str
) -> tuple[int, dict[str, str], Any]:
    """One request on a kept-alive connection: status, headers (lower-case names), JSON body."""
    body = b"{}" if method == "POST" else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read() or b"null")


def _get(port: int, path: str, token: str | None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def _check_server(master: int, port: int | None, token: str, *, master_agent: bool) -> None:
    """The bars: 200 requests with the shared token succeed; each worker answers with its own
    PID (by ?pid=, and through the CLI); ps lists master and workers; aggregate == sum.
    ``port=None``: the app serves no memdiag API (`memdiag run`), the CLI checks only."""
    workers = {e.pid: e for e in _workers(master)}
    if port is not None:
        statuses = [_get(port, "/api/memory/status", token) for _ in range(200)]
        assert [s for s, _ in statuses] == [200] * 200
        assert {b["pid"] for _, b in statuses} <= set(workers)
    for pid in workers:
        if port is not None:
            status, body = _get(port, f"/api/memory/profile?pid={pid}", token)
            assert status == 200 and body["pid"] == pid and body["process"]["pid"] == pid
        out = cli("profile", "--pid", str(pid), "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["pid"] == pid
    assert sorted(e.server["slot"] for e in workers.values()) == list(range(len(workers)))
    rows = json.loads(cli("ps", "--json").stdout)
    mine = [r for r in rows if master in (r["pid"], r.get("server_pid"))]
    assert [r["pid"] for r in mine if r["role"] == "master"] == [master]
    assert sorted(r["pid"] for r in mine if r["role"] == "worker") == sorted(workers)
    assert next(r for r in mine if r["role"] == "master")["error"] == (None if master_agent else "no agent")
    out = cli("profile", "--server", str(master), "--json")
    assert out.returncode == 0, out.stderr
    views = [json.loads(out.stdout)]
    if port is not None:
        status, agg = _get(port, "/api/memory/server", token)
        assert status == 200
        views.append(agg)
    for agg in views:
        members = agg["members"]
        assert sorted(m["pid"] for m in members) == sorted([master, *workers])
        assert {m["pid"]: m["agent"] for m in members}[master] is master_agent
        for key in ("rss_bytes", "threads", "children"):
            values = [m[key] for m in members if m[key] is not None]
            assert agg["total"][key] == sum(values), key


def test_command_lines_of_pre_fork_servers() -> None:
    assert is_server_command(["/venv/bin/python", "/venv/bin/gunicorn", "-w", "2", "app:app"])
    assert is_server_command(["gunicorn: master [app:app]"])
    assert is_server_command(["python", "-m", "uvicorn", "app:app", "--workers", "2"])
    assert not is_server_command(["python", "/usr/bin/memdiag", "run", "--", "gunicorn", "app:app"])
    assert not is_server_command(["python", "-c", "from multiprocessing.spawn import spawn_main"])


def test_gunicorn_sync_workers_share_a_token_and_answer_for_themselves() -> None:
    argv = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", "127.0.0.1:{port}", "fleet_flask:app"]
    with server(argv, 2) as (master, port):
        token = _shared_token(master)  # no token configured: the first worker wrote it, 0600
        _check_server(master, port, token, master_agent=False)
        assert _get(port, "/api/memory/status", "not-the-token-0123456789")[0] == 401


@pytest.mark.parametrize(
    ("worker_class", "app", "preload"),
    [
        ("gthread", "fleet_flask:app", False),
        ("uvicorn.workers.UvicornWorker", "fleet_fastapi:app", False),
        ("sync", "fleet_flask:app", True),  # the master starts memdiag; forked workers restart it
    ],
)
def test_gunicorn_worker_classes_with_a_configured_token(worker_class: str, app: str, preload: bool) -> None:
    if worker_class.startswith("uvicorn.workers"):
        pytest.importorskip("uvicorn.workers")
    token = "fleet-token-0123456789abcdef"
    argv = [sys.executable, "-m", "gunicorn", "-k", worker_class, "-w", "2", "-b", "127.0.0.1:{port}", app]
    if preload:
        argv.insert(3, "--preload")
    with server(argv, 2, {"MEMDIAG_API_TOKEN": token}) as (master, port):
        _check_server(master, port, token, master_agent=preload)


def test_uvicorn_workers() -> None:
    argv = [sys.executable, "-m", "uvicorn", "--workers", "2", "--port", "{port}", "fleet_fastapi:app"]
    with server(argv, 2) as (master, port):
        _check_server(master, port, _shared_token(master), master_agent=False)


def test_memdiag_run_monitors_every_gunicorn_worker_and_recycling_keeps_the_slot(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    argv = [sys.executable, "-m", "memdiag", "run", "--", sys.executable, "-m", "gunicorn", "-w", "2",
            "-b", "127.0.0.1:{port}", "fleet_plain:app"]  # fmt: skip
    env = {"MEMDIAG_HISTORY_DB": str(db), "MEMDIAG_SAMPLE_INTERVAL": "0.2"}
    with server(argv, 2, env) as (master, _port):
        assert any(e.pid == master and e.socket for e in runtime.list_services())  # the master too
        _check_server(master, None, _shared_token(master), master_agent=True)
        before = {e.server["slot"]: e for e in _workers(master)}
        stores = {}
        for slot, e in before.items():
            out = json.loads(cli("diagnostics", "--pid", str(e.pid), "--json").stdout)
            stores[slot] = out["history"]["store"]
            assert stores[slot] == str(tmp_path / f"history.{e.server['key'].replace('/', '.')}.db")
        os.kill(before[1].pid, signal.SIGKILL)  # gunicorn replaces the worker
        replaced = wait_for(
            lambda: next((e for e in _workers(master) if e.pid not in {w.pid for w in before.values()}), None),
            timeout=60,
            what="a replacement worker",
        )
        assert replaced.server["slot"] == 1 and replaced.server["key"] == before[1].server["key"]
        out = json.loads(cli("diagnostics", "--pid", str(replaced.pid), "--json").stdout)
        assert out["history"]["store"] == stores[1]  # the same worker identity, the same history


def test_forwarded_cleanups_are_rate_limited_by_their_target() -> None:
    """?pid= acting requests: each target's own limiter decides. The app's API allows one
    acting request per client (burst 1); over one kept-alive connection (one worker, "here"),
    a cleanup forwarded to the other worker must not spend here's bucket."""
    token = "fleet-token-0123456789abcdef"
    argv = [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "2", "--keep-alive", "120", "-w", "2",
            "-b", "127.0.0.1:{port}", "fleet_flask:app"]  # fmt: skip
    env = {"MEMDIAG_API_TOKEN": token, "FLEET_RATE_LIMIT": "0.001,1"}
    with server(argv, 2, env) as (master, port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            here = _send(conn, "GET", "/api/memory/status", token)[2]["pid"]
            other = next(pid for pid in (e.pid for e in _workers(master)) if pid != here)
            status, headers, body = _send(conn, "POST", f"/api/memory/cleanup?pid={other}", token)
            assert status == 200 and body["performed"], body
            assert headers["x-memdiag-pid"] == str(other)
            status, headers, body = _send(conn, "POST", f"/api/memory/cleanup?pid={here}", token)
            assert status == 200 and body["performed"], body  # before: 429, the forwarded one had spent it
            assert "x-memdiag-pid" not in headers  # answered by here itself
            status, headers, body = _send(conn, "POST", f"/api/memory/cleanup?pid={other}", token)
            assert status == 429 and body["error"] == "cleanup cooldown", body  # other's own cooldown
            assert headers["x-memdiag-pid"] == str(other) and int(headers["retry-after"]) >= 1
            status, headers, body = _send(conn, "POST", f"/api/memory/cleanup?pid={here}", token)
            assert status == 429 and int(headers["retry-after"]) >= 1, body  # here's own limit
            assert _send(conn, "GET", "/api/memory/status", token)[2]["pid"] == here  # one connection throughout
        finally:
            conn.close()


def test_watch_of_a_whole_server() -> None:
    """`memdiag watch --server PID`: every process side by side, plain in a pipe, rich on a
    terminal; a PID that is no server's is exit 2."""
    from .test_cli_subprocess import _on_tty

    argv = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", "127.0.0.1:{port}", "fleet_flask:app"]
    with server(argv, 2) as (master, _port):
        workers = {str(e.pid) for e in _workers(master)}
        args = ["watch", "--server", str(master), "--count", "2", "--interval", "0.2", "--timeout", "60"]
        out = cli(*args, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("--- frame") == 2
        frame = out.stdout.split("--- frame 2 ---", 1)[1]
        assert f"memdiag watch: server {master} (2 workers)" in frame
        lines = {ln.split()[0]: ln for ln in frame.splitlines() if ln.strip()}
        assert lines["master"].split() == ["master", "worker", "0", "worker", "1", "total"]
        assert set(lines["pid"].split()[1:4]) == {str(master), *workers} and "3 processes" in lines["pid"]
        assert len(re.findall(r"\d+\.\d (?:KiB|MiB)", lines["RSS"])) == 4  # three processes and the sum
        assert lines["pressure"].split()[1:3] == ["no", "agent"]  # the master runs no memdiag here
        assert lines["pressure"].count("OK") >= 2
        assert lines["cache"].split()[2:] == ["-", "50%", "50%", "-"]  # each worker's cache, half full
        assert lines["leak"].split()[2:] == ["-", "none", "none"]  # no suspect in either worker
        code, tty = _on_tty([*args[:3], "--count", "1", "--interval", "0.2", "--timeout", "60"], {"COLUMNS": "160"})
        assert code == 0, tty
        assert f"server {master} (2 workers)" in tty and "╭" in tty and "━" in tty and "share" in tty
    gone = cli("watch", "--server", str(master), "--count", "1")
    assert gone.returncode == 2 and "no process of a server" in gone.stderr
