"""The installed ``memdiag`` and ``claude-pm`` commands as real subprocesses, against a real
service process: the specification's usage examples verbatim, entry points, exit
statuses, colour on a terminal, watch until Ctrl-C, and the missing-extra message."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from memdiag.config import load_config

from .test_cli_support import SCRIPTS, Service, cli, cli_json, dead_pid
from .test_cli_support import service as service  # the fixture, used by name

# The specification's "Usage Examples", verbatim, in its order.
SPEC_USAGE_EXAMPLES = [
    "claude-pm memory profile",
    "claude-pm memory diagnostics",
    "claude-pm memory profile --json",
    "claude-pm memory cleanup",
    "claude-pm memory cleanup --force",
    "claude-pm memory configure --threshold 1000",
    "claude-pm memory configure --auto-cleanup",
    "claude-pm memory configure --no-auto-cleanup",
]


def _shell(line: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{SCRIPTS}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.slow
def test_spec_usage_examples_run_verbatim(service: Service) -> None:
    results = {line: _shell(line) for line in SPEC_USAGE_EXAMPLES}
    for line, r in results.items():
        assert r.returncode == 0, (line, r.stdout, r.stderr)
        assert r.stdout.strip(), line
    assert f"PID {service.pid}" in results["claude-pm memory profile"].stdout
    assert "Subprocesses" in results["claude-pm memory diagnostics"].stdout
    assert json.loads(results["claude-pm memory profile --json"].stdout)["pid"] == service.pid
    assert "Cleanup done." in results["claude-pm memory cleanup"].stdout
    assert "Cleanup done." in results["claude-pm memory cleanup --force"].stdout
    cfg = service.api("GET", "/api/memory/configure")[1]["config"]
    assert cfg["memory_threshold_mb"] == 1000.0 and cfg["enable_auto_cleanup"] is False
    # "runtime configuration": the running service changed; the config file (read by every
    # service started later) only with --persist.
    saved = load_config()
    assert saved.memory_threshold_mb == 500.0 and saved.enable_auto_cleanup is True


def test_cleanup_inside_the_cooldown_says_when(service: Service) -> None:
    assert cli("cleanup").returncode == 0
    r = cli("cleanup")
    assert r.returncode == 1
    assert "may run again in" in r.stdout and "--force" in r.stdout


@pytest.mark.parametrize(
    "argv",
    [
        [str(SCRIPTS / "memdiag")],
        [sys.executable, "-m", "memdiag"],
        [sys.executable, "-m", "memdiag.cli"],
        [str(SCRIPTS / "claude-pm"), "memory"],
    ],
    ids=["memdiag", "python -m memdiag", "python -m memdiag.cli", "claude-pm memory"],
)
def test_every_entry_point_reaches_the_service(service: Service, argv: list[str]) -> None:
    r = subprocess.run([*argv, "profile", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pid"] == service.pid


@pytest.mark.slow
def test_exit_2_for_ambiguous_gone_and_invalid() -> None:
    r = cli("profile", "--pid", str(dead_pid()))
    assert r.returncode == 2 and "no process" in r.stderr
    r = cli("configure", "--threshold", "-1")
    assert r.returncode == 2 and "memory_threshold_mb" in r.stderr
    r = cli("profile", "--no-such-flag")
    assert r.returncode == 2


def test_colour_on_a_terminal_and_never_with_no_color(service: Service) -> None:
    def on_tty(extra_env: dict[str, str]) -> str:
        status, out = _on_tty(["profile"], extra_env, drop=("NO_COLOR",))
        assert status == 0
        return out

    coloured = on_tty({})
    assert "\x1b[32m" in coloured and "\x1b[1m" in coloured  # OK in green, bold headings
    assert "\x1b[" not in on_tty({"NO_COLOR": "1"})


def _on_tty(
    args: list[str], env: dict[str, str] | None = None, drop: tuple[str, ...] = ()
) -> tuple[int, str]:
    """Run ``memdiag ARGS`` with a pseudo-terminal as stdout/stderr (``env`` added to ours,
    the ``drop`` variables removed); its status and output."""
    master, slave = pty.openpty()
    full = {k: v for k, v in os.environ.items() if k not in drop} | (env or {})
    p = subprocess.Popen([str(SCRIPTS / "memdiag"), *args], stdout=slave, stderr=slave, env=full)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return p.wait(timeout=30), b"".join(chunks).decode()


def test_watch_on_a_terminal_draws_with_rich_and_plain_on_request(service: Service) -> None:
    args = ["watch", "--count", "2", "--interval", "0.2", "--timeout", "60"]
    code, out = _on_tty(args, {"COLUMNS": "120", "LINES": "60"})
    assert code == 0, out
    assert "memdiag watch" in out and "process RSS" in out and "MiB" in out
    assert "━" in out and "╭" in out  # rich's bars and panel, redrawn in place: no frame headings
    assert "--- frame" not in out and "\x1b[2J" not in out
    code, out = _on_tty([*args, "--plain"])
    assert code == 0 and "╭" not in out and "━" not in out and "\x1b[2J" in out  # the plain view clears


def test_watch_redraws_until_ctrl_c(service: Service) -> None:
    # --timeout: the service may take longer than the default 5 s to answer on a loaded machine.
    r = cli("watch", "--count", "2", "--interval", "0.2", "--timeout", "60", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("--- frame") == 2
    p = subprocess.Popen(
        [str(SCRIPTS / "memdiag"), "watch", "--interval", "0.2", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None
        deadline = time.monotonic() + 60
        seen = 0
        while seen < 2 and time.monotonic() < deadline:
            if p.stdout.readline().startswith("--- frame"):
                seen += 1
        assert seen == 2
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert "Traceback" not in err


def test_without_click_the_commands_say_which_extra() -> None:
    code = "import sys; sys.modules['click'] = None; from memdiag.cli import main; main(['profile'])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "pip install 'memdiag[cli]'" in r.stderr
    assert "Traceback" not in r.stderr


def test_json_of_outside_and_machine_views() -> None:
    data = cli_json("profile", "--json")
    assert data["view"] == "machine"
    data = cli_json("diagnostics", "--json", "--pid", str(os.getpid()))
    assert data["view"] == "outside" and data["pid"] == os.getpid()
