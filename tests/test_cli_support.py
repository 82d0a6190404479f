"""Shared helpers for the CLI tests: real service processes and running the CLI.

No tests here; ``test_cli.py`` (in-process, click's CliRunner) and
``test_cli_subprocess.py`` / ``test_cli_run.py`` (real subprocesses) import these.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# A real service: the shared monitor with its standalone API server, fast intervals so
# reports have data at once; it runs until its stdin closes.
SERVICE_CODE = """
import sys, memdiag
d = memdiag.start(http=True, sample_interval=0.1, profile_interval=1.0)
print(d.http_server.url, flush=True)
sys.stdin.read()
memdiag.stop()
"""

SCRIPTS = Path(sysconfig.get_path("scripts"))


@dataclass
class Service:
    proc: subprocess.Popen[str]
    url: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call the service's API directly (with the token from the runtime entry)."""
        from memdiag.cli._client import ApiClient
        from memdiag.runtime import list_services

        entry = next(e for e in list_services() if e.pid == self.pid)
        resp = ApiClient(self.url, entry.token()).request(method, path, body)
        return resp.status, resp.body

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def start_service(env: dict[str, str] | None = None, script: Path | None = None) -> Service:
    """Start a real service process and wait until its API is up and announced.

    Args:
        env: extra environment.
        script: a file to run instead of :data:`SERVICE_CODE` (it must print its URL).
    """
    proc = subprocess.Popen(
        [sys.executable, str(script)] if script else [sys.executable, "-c", SERVICE_CODE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        proc.wait()
        raise AssertionError(f"service did not start (exit {proc.poll()})")
    from memdiag.runtime import list_services

    deadline = time.monotonic() + 10
    while not any(e.pid == proc.pid for e in list_services()):
        assert time.monotonic() < deadline, "service never registered"
        time.sleep(0.02)
    return Service(proc, url)


@pytest.fixture
def service() -> Iterator[Service]:
    s = start_service()
    try:
        yield s
    finally:
        s.stop()


def cli(
    *args: str, entry: str = "memdiag", env: dict[str, str] | None = None, timeout: float = 60, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run an installed entry point (``memdiag``/``claude-pm``) as a real subprocess."""
    exe = SCRIPTS / entry
    assert exe.exists(), f"{exe} is not installed (pip install -e '.[cli]')"
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, **kw
    )


def cli_json(*args: str, **kw: Any) -> Any:
    r = cli(*args, **kw)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


def dead_pid() -> int:
    """A PID that just exited (and was reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid
