"""``memdiag run``: injection without code changes, the whole tree, signals, exit status.

Every test launches the real ``memdiag`` entry point as a subprocess, which launches a
real program.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from memdiag.probes.process import read_stat

from .conftest import wait_for
from .test_cli_support import SCRIPTS, cli, cli_json

APP = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    out = sys.argv[1]
    def note(**kw):
        with open(out, "a") as fh:
            fh.write(json.dumps(kw) + "\\n")
    for name in ("SIGUSR1", "SIGUSR2", "SIGHUP", "SIGINT"):
        signal.signal(getattr(signal, name), lambda n, f: note(signal=signal.Signals(n).name))
    # What a Python grandchild sees: no second agent, no bootstrap on its path.
    probe = subprocess.run(
        [sys.executable, "-c", "import os, sys; print(int('memdiag' in sys.modules), os.environ.get('PYTHONPATH'))"],
        capture_output=True, text=True,
    ).stdout.split(" ", 1)
    note(
        agent="memdiag" in sys.modules and sys.modules["memdiag"].MemoryDiagnostics._instance is not None,
        pythonpath=os.environ.get("PYTHONPATH", ""),
        grandchild_agent=probe[0],
        grandchild_pythonpath=probe[1].strip() if len(probe) > 1 else "",
        marker=os.environ.get("CHAIN_MARKER_SEEN", ""),
    )
    # An orphan: an intermediate process starts a sleeper and exits at once.
    subprocess.run([sys.executable, "-c", "import subprocess; p = subprocess.Popen(['sleep', '1.5']); print(p.pid)"],
                   stdout=open(out + ".orphan", "w"))
    # Python runs a handler once for signals that arrive close together; the wakeup fd
    # gets one byte per delivery, so duplicates are counted exactly.
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    note(ready=True)
    while not os.path.exists(out + ".stop"):
        try:
            for b in os.read(r, 64):
                note(delivered=signal.Signals(b).name)
        except BlockingIOError:
            pass
        time.sleep(0.05)
    sys.exit(int(open(out + ".stop").read() or 0))
    """
)


def _launch(tmp_path: Path, *run_args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], Path]:
    app = tmp_path / "app.py"
    app.write_text(APP)
    out = tmp_path / "notes.jsonl"
    sup = subprocess.Popen(
        [str(SCRIPTS / "memdiag"), "run", *run_args, "--", sys.executable, str(app), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return sup, out


def _notes(out: Path) -> list[dict[str, object]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def _child_of(pid: int) -> int:
    """The supervisor's child that runs the app (not some short-lived helper of its own)."""

    def find() -> int | None:
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        for kid in kids:
            try:
                argv = Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(arg.endswith(b"app.py") for arg in argv):
                return int(kid)
        return None

    return int(wait_for(find, what=f"the app under supervisor {pid}"))


def _stop(sup: subprocess.Popen[str], out: Path, code: int = 0) -> tuple[str, str]:
    Path(str(out) + ".stop").write_text(str(code))
    try:
        return sup.communicate(timeout=30)
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()


def test_run_injects_the_agent_and_the_cli_finds_it(tmp_path: Path) -> None:
    sup, out = _launch(tmp_path, "--threshold", "800", "--cleanup-cooldown", "42")
    try:
        child = _child_of(sup.pid)
        note = wait_for(lambda: _notes(out), timeout=60, what="the program under memdiag run")[0]
        assert note["agent"] is True
        # The bootstrap left no trace for the program's own children.
        assert "_bootstrap" not in str(note["pythonpath"])
        assert note["grandchild_agent"] == "0" and "_bootstrap" not in str(note["grandchild_pythonpath"])
        rows = wait_for(lambda: cli_json("ps", "--json"))
        assert [r["pid"] for r in rows] == [child]
        assert rows[0]["pressure"] == "ok"
        profile = cli_json("profile", "--json")
        assert profile["pid"] == child
        assert profile["process"]["threshold_bytes"] == 800 * 1024 * 1024
        cfg = cli_json("configure", "--json")["config"]
        assert cfg["cleanup_cooldown"] == 42.0
        r = cli("profile")
        assert r.returncode == 0 and f"PID {child}" in r.stdout and "of 800.0 MiB threshold" in r.stdout
    finally:
        _, err = _stop(sup, out, 3)
    assert sup.returncode == 3
    assert "exited with status 3" in err and "peak RSS of its process tree" in err
    assert cli_json("ps", "--json") == []  # the agent unregistered on exit


def test_run_forwards_signals_and_exits_128_plus_signal(tmp_path: Path) -> None:
    sup, out = _launch(tmp_path, "--quiet")
    try:
        _child_of(sup.pid)
        wait_for(lambda: _notes(out), timeout=60, what="the program under memdiag run")
        sent = {signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGINT}
        for sig in sent:
            sup.send_signal(sig)
            time.sleep(0.05)
        wait_for(lambda: {s.name for s in sent} <= {n.get("signal") for n in _notes(out)})
        sup.send_signal(signal.SIGTERM)  # the app keeps SIGTERM's default: it dies of it
        _, err = sup.communicate(timeout=30)
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
    assert sup.returncode == 128 + signal.SIGTERM
    assert err == ""  # --quiet


def test_a_terminal_ctrl_c_reaches_the_program_once(tmp_path: Path) -> None:
    # The supervisor runs as the session leader of a pseudo-terminal; ^C typed there makes
    # the kernel signal the whole foreground group, the program included. Forwarding it
    # again would deliver two SIGINTs for one keypress.
    app = tmp_path / "app.py"
    app.write_text(APP)
    out = tmp_path / "notes.jsonl"
    master, slave = pty.openpty()
    take_tty = (
        "import os, sys; os.setsid(); os.close(os.open(os.ttyname(0), os.O_RDWR)); os.execv(sys.argv[1], sys.argv[1:])"
    )
    sup = subprocess.Popen(
        [
            sys.executable,
            "-c",
            take_tty,
            str(SCRIPTS / "memdiag"),
            "run",
            "-q",
            "--",
            sys.executable,
            str(app),
            str(out),
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    try:
        wait_for(lambda: any(n.get("ready") for n in _notes(out)), timeout=60, what="the program ready")
        os.write(master, b"\x03")
        wait_for(lambda: any(n.get("delivered") == "SIGINT" for n in _notes(out)))
        time.sleep(1.0)  # a forwarded duplicate would arrive within milliseconds
        assert [n["delivered"] for n in _notes(out) if "delivered" in n] == ["SIGINT"]
        Path(str(out) + ".stop").write_text("0")
        assert sup.wait(timeout=30) == 0
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
        os.close(master)


def test_run_adopts_and_reaps_orphans(tmp_path: Path) -> None:
    sup, out = _launch(tmp_path, "--quiet")
    try:
        orphan_file = Path(str(out) + ".orphan")
        written = wait_for(lambda: orphan_file.exists() and orphan_file.read_text().strip(), timeout=60, what="the orphan")
        orphan = int(written)
        # Once its parent exits, it is adopted by the supervisor (a child subreaper).
        wait_for(lambda: (st := read_stat(orphan)) is not None and st.ppid == sup.pid)
        # It exits after 1.5 s: the supervisor reaps it, so no zombie is left behind.
        wait_for(lambda: read_stat(orphan) is None)
    finally:
        _stop(sup, out)
    assert sup.returncode == 0


def test_run_plain_commands_and_errors() -> None:
    r = cli("run", "--", "sh", "-c", "exit 7")
    assert r.returncode == 7
    r = cli("run", "sh", "-c", "kill -KILL $$")  # no "--" needed before the command
    assert r.returncode == 128 + signal.SIGKILL and "exited with signal 9" in r.stderr
    r = cli("run", "--", "no-such-program-xyz")
    assert r.returncode == 127 and "command not found" in r.stderr
    r = cli("run", "--threshold", "-3", "--", "true")
    assert r.returncode == 2 and "memory_threshold_mb" in r.stderr
    r = cli("run")
    assert r.returncode == 2


def test_run_chains_an_existing_sitecustomize_and_never_breaks_the_program(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos.environ['CHAIN_MARKER_SEEN'] = 'yes'\n")
    code = "import os, sys; print(os.environ.get('CHAIN_MARKER_SEEN'), 'memdiag' in sys.modules)"
    r = cli("run", "--quiet", "--no-http", "--", sys.executable, "-c", code, env={"PYTHONPATH": str(site)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["yes", "True"]
    # A program's own sitecustomize that fails, and a memdiag that cannot start: the
    # program still runs, and each problem is one line on stderr.
    (site / "sitecustomize.py").write_text("raise RuntimeError('broken site')\n")
    r = cli(
        "run",
        "--quiet",
        "--",
        sys.executable,
        "-c",
        "print('still here')",
        env={"PYTHONPATH": str(site), "MEMDIAG_HTTP_HOST": "0.0.0.0"},  # refused without a token
    )
    assert r.returncode == 0 and r.stdout.strip() == "still here"
    assert "broken site" in r.stderr and "memdiag did not start" in r.stderr
    assert "Traceback" not in r.stderr


def test_run_watches_the_tree_and_reports_pressure(tmp_path: Path) -> None:
    # A tree above the subprocess threshold: the supervisor says so on stderr.
    code = (
        "import subprocess, sys, time\n"
        "hog = 'b = bytearray(40 << 20); import time; time.sleep(3)'\n"
        "kids = [subprocess.Popen([sys.executable, '-c', hog]) for _ in range(2)]\n"
        "[k.wait() for k in kids]\n"
    )
    started = time.monotonic()
    r = cli(
        "run",
        "--no-agent",
        "--subprocess-threshold-mb",
        "50",
        "--sustain-seconds",
        "0",
        "--interval",
        "0.2",
        "--",
        sys.executable,
        "-c",
        code,
    )
    assert r.returncode == 0, r.stderr
    assert re.search(r"pressure (ok|warning) -> critical: subprocess_rss", r.stderr), r.stderr
    assert "peak RSS of its process tree" in r.stderr and "(3 processes)" in r.stderr, r.stderr
    assert time.monotonic() - started < 30
