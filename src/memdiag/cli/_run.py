"""``memdiag run -- CMD ARGS``: launch a program under memdiag, without code changes.

The supervisor (this process):

* starts CMD with ``MEMDIAG_*`` settings in its environment and the bootstrap directory
  first on ``PYTHONPATH``; when CMD is Python, ``sitecustomize`` there starts memdiag in
  it (with its API, so ``memdiag ps``/``profile`` find it) and leaves the rest of the
  tree alone;
* becomes a child subreaper, so grandchildren that CMD orphans stay in its tree, and
  reaps them (never CMD itself: its status belongs to the ``Popen`` object);
* watches the whole tree with its own :class:`~memdiag.MemoryDiagnostics` and reports
  pressure changes and the tree's peak RSS on stderr;
* forwards SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 to CMD, except a terminal's
  Ctrl-C/hang-up that the kernel already delivered to CMD (it shares our process
  group), so CMD never sees one keypress twice;
* exits with CMD's exit status, or 128 + the signal number if a signal killed it.

Signals are taken synchronously (blocked, then ``sigtimedwait``), which tells who sent
each one and keeps the handling off the monitor thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import MemoryConfig, load_config
from ..probes.process import read_stat
from ._format import human_bytes

__all__ = ["BOOTSTRAP_DIR", "child_environment", "run_command"]

BOOTSTRAP_DIR = str(Path(__file__).resolve().parent / "_bootstrap")
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
_FROM_TERMINAL = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
_SI_KERNEL = 0x80  # si_code of signals the kernel generates (a terminal's ^C, a hang-up)


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def child_environment(
    changes: Mapping[str, Any], *, agent: bool, http: bool, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment CMD starts with: ``MEMDIAG_<FIELD>`` for each change, the autostart
    switches, and the bootstrap directory first on ``PYTHONPATH``."""
    env = dict(os.environ if base is None else base)
    for name, value in changes.items():
        env[f"MEMDIAG_{name.upper()}"] = _env_text(value)
    if agent:
        env["MEMDIAG_AUTOSTART"] = "1"
        if http:
            env["MEMDIAG_AUTOSTART_HTTP"] = "1"
        else:
            env.pop("MEMDIAG_AUTOSTART_HTTP", None)
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = BOOTSTRAP_DIR + (os.pathsep + old if old else "")
        if str(changes.get("heap_profile", "auto")) != "off":
            # the malloc shim: native allocations named at the Python line that made them
            from ..leaks.preload import environment

            env = environment(env, int(changes.get("heap_sample_interval_kb", 512)) * 1024)
    return env


def _become_subreaper() -> bool:
    from ..processes import set_child_subreaper

    try:
        set_child_subreaper(True)
    except OSError:  # not Linux 3.4+: orphans leave the tree, as without memdiag
        return False
    return True


def _direct_children() -> list[int]:
    pids: list[int] = []
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as fh:
                pids.extend(int(p) for p in fh.read().split())
        except (OSError, ValueError):
            continue
    return pids


def reap_orphans(keep: int) -> int:
    """Reap adopted children that have exited, except ``keep`` (CMD, owned by Popen)."""
    reaped = 0
    for pid in _direct_children():
        if pid == keep:
            continue
        st = read_stat(pid)
        if st is None or st.state != "Z":
            continue
        with contextlib.suppress(ChildProcessError, OSError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped += 1
    return reaped


class _Reporter:
    """Pressure changes and the tree's peak, on stderr."""

    def __init__(self, quiet: bool, write: Callable[[str], None]) -> None:
        self.quiet = quiet
        self.write = write
        self.peak = 0
        self.peak_at = 0.0
        self.peak_count = 0

    def on_sample(self, sample: Any, state: Any) -> None:
        total = sample.children_rss
        if total > self.peak:
            self.peak, self.peak_at, self.peak_count = total, time.time(), len(sample.children)

    def on_pressure(self, previous: Any, state: Any) -> None:
        if self.quiet:
            return
        from ._render import reason_text

        reasons = "; ".join(reason_text(r) for r in state.reasons) or "resolved"
        self.write(f"memdiag run: pressure {previous.level} -> {state.level}: {reasons}")


def run_command(
    cmd: Sequence[str],
    changes: Mapping[str, Any],
    *,
    agent: bool = True,
    http: bool = True,
    quiet: bool = False,
    write: Callable[[str], None] | None = None,
) -> int:
    """Run ``cmd`` under memdiag and return the exit status to exit with.

    Args:
        cmd: the program and its arguments.
        changes: config fields (validated) for CMD's agent and the supervisor's monitor.
        agent: inject memdiag into CMD when it is Python.
        http: the injected agent serves its API (and so registers for the CLI).
        quiet: no pressure messages or summary on stderr.
        write: where messages go (stderr by default).

    Raises:
        ConfigError: a bad value in ``changes``, the config file or environment.
    """
    emit = write or (lambda line: print(line, file=sys.stderr, flush=True))
    cfg = load_config(overrides=changes)
    # The supervisor can only free its own few MB; the agent inside CMD cleans up CMD.
    parent_cfg: MemoryConfig = cfg.updated(enable_auto_cleanup=False, subreaper=False)
    env = child_environment(changes, agent=agent, http=http)
    subreaper = _become_subreaper()

    pending: list[int] = []
    previous = {s: signal.signal(s, lambda n, _f: pending.append(n)) for s in FORWARDED}
    waitset = {*FORWARDED, signal.SIGCHLD}
    old_mask: set[int] | None = None
    monitor = None
    try:
        child = _spawn(cmd, env, emit)
        if isinstance(child, int):
            return child
        # Block before starting the monitor so its thread inherits the mask and every
        # forwarded signal is taken here, by sigtimedwait.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waitset)
        for signum in pending:
            _forward(child, signum)
        pending.clear()
        reporter = _Reporter(quiet, emit)
        monitor = _start_monitor(parent_cfg, reporter)
        rc = _supervise(child, waitset, subreaper)
        if not quiet:
            emit(_summary(cmd, rc, reporter))
        return 128 - rc if rc < 0 else rc
    finally:
        _restore(monitor, old_mask, waitset, previous)


def _spawn(cmd: Sequence[str], env: dict[str, str], emit: Callable[[str], None]) -> subprocess.Popen[Any] | int:
    """CMD started, or the exit status to give when it cannot be (127 not found, 126 not
    executable), said on ``emit``."""
    try:
        return subprocess.Popen(list(cmd), env=env)
    except FileNotFoundError:
        emit(f"memdiag run: command not found: {cmd[0]}")
        return 127
    except PermissionError:
        emit(f"memdiag run: permission denied: {cmd[0]}")
        return 126


def _summary(cmd: Sequence[str], rc: int, reporter: _Reporter) -> str:
    how = f"signal {-rc}" if rc < 0 else f"status {rc}"
    return (
        f"memdiag run: {Path(cmd[0]).name} exited with {how}; peak RSS of its process tree "
        f"{human_bytes(reporter.peak)} ({reporter.peak_count} processes)"
    )


def _restore(monitor: Any, old_mask: set[int] | None, waitset: set[signal.Signals], previous: dict[Any, Any]) -> None:
    """Stop the monitor, drop the signals still pending (nothing is delivered after CMD's
    status is known), restore the signal mask and handlers."""
    if monitor is not None:
        monitor.close()
    if old_mask is not None:
        while signal.sigtimedwait(waitset, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    for s, handler in previous.items():
        signal.signal(s, handler)


def _start_monitor(cfg: MemoryConfig, reporter: _Reporter) -> Any:
    """The supervisor's own monitor of the tree, reporting to ``reporter``."""
    from ..service import MemoryDiagnostics

    monitor = MemoryDiagnostics(cfg)
    monitor.on_sample(reporter.on_sample)
    monitor.on_pressure_change(reporter.on_pressure)
    monitor.start()
    return monitor


def _supervise(child: subprocess.Popen[Any], waitset: set[signal.Signals], subreaper: bool) -> int:
    """Forward signals to CMD and reap adopted orphans until CMD exits; its return code
    (``-N`` for signal N). The signals of ``waitset`` must be blocked in this thread."""
    while True:
        info = signal.sigtimedwait(waitset, 0.25)
        if info is not None and info.si_signo != signal.SIGCHLD and not _delivered_by_terminal(child, info):
            _forward(child, info.si_signo)
        if subreaper:
            reap_orphans(keep=child.pid)
        rc = child.poll()
        if rc is not None:
            break
    if subreaper:
        reap_orphans(keep=child.pid)
    return rc


def _delivered_by_terminal(child: subprocess.Popen[Any], info: Any) -> bool:
    """True when the kernel sent this signal to our whole process group (a terminal's ^C
    or hang-up) and CMD, in that group, has received it already."""
    if info.si_signo not in _FROM_TERMINAL or info.si_code != _SI_KERNEL:
        return False
    try:
        return os.getpgid(child.pid) == os.getpgrp()
    except OSError:
        return False


def _forward(child: subprocess.Popen[Any], signum: int) -> None:
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)
