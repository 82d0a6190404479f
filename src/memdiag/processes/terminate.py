"""Ending owned processes: SIGTERM, a grace period, SIGKILL, then reaping.

Three rules hold whatever the caller asks:

* only an owned process (see :mod:`memdiag.processes.ownership`) is signalled, and only
  while the config's ``terminate_policy`` is "owned";
* only a process inside this service's tree (this process or a descendant, checked at
  signal time) is signalled;
* a process is signalled through its pidfd or after its identity was re-checked, so a
  reused PID is never hit.

A process that leads its own process group is ended as a unit: the group gets TERM, then
(after the grace period, while the leader is still unreaped so its group ID is still
ours) KILL for whatever is left.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from typing import Any

from .._logging import get_logger
from ..config import MemoryConfig, active_config
from ..errors import ProcessNotOwnedError
from ..probes._io import read_bytes
from .ownership import OwnedProcess, is_descendant, owner_of, read_identity, registry

__all__ = ["end_owned_at_exit", "stop_entries", "terminate"]

log = get_logger("memdiag.processes")
_POLL = 0.02


def _resolve(target: Any) -> OwnedProcess:
    if isinstance(target, OwnedProcess):
        entry = target
    else:
        pid = target if isinstance(target, int) else getattr(target, "pid", None)
        if not isinstance(pid, int):
            raise ValueError(f"terminate() takes an owned process, a Popen or a PID, not {type(target).__name__}")
        st = read_identity(pid)
        found = owner_of(pid, st.start_ticks if st else None)
        if found is None:
            raise ProcessNotOwnedError(f"process {pid} is not owned by this service; memdiag will not signal it")
        entry = found
    if registry.get(entry.pid, entry.start_ticks) is not entry:
        raise ProcessNotOwnedError(f"process {entry.pid} is no longer owned (it has exited)")
    return entry


def _refusal(entry: OwnedProcess, cfg: MemoryConfig, check_policy: bool) -> str | None:
    if check_policy and cfg.terminate_policy != "owned":
        return f"terminate_policy is {cfg.terminate_policy!r}"
    if not entry.is_same_process():
        return "exited"
    if not is_descendant(entry.pid):
        return "outside this service's process tree"
    return None


def terminate(target: Any, *, grace: float | None = None, config: MemoryConfig | None = None) -> dict[str, Any]:
    """End one owned process: SIGTERM, wait ``grace`` seconds, SIGKILL, reap.

    Args:
        target: an :class:`OwnedProcess`, a ``memdiag.Popen``/tracked ``Popen``, or a PID.
        grace: seconds between TERM and KILL (default: ``terminate_grace_seconds``).
        config: the config whose ``terminate_policy`` applies (default: the active one).

    Returns:
        ``{"pid", "role", "signals": [...], "exited", "returncode", "seconds", "group"}``.

    Raises:
        ProcessNotOwnedError: the process is not owned, not in this service's tree, or
            the policy is "none". Nothing was signalled.
    """
    cfg = config or active_config()
    entry = _resolve(target)
    why = _refusal(entry, cfg, True)
    if why is not None and why != "exited":
        raise ProcessNotOwnedError(f"will not signal process {entry.pid}: {why}")
    return stop_entries([entry], grace=grace, config=cfg)[0]


def stop_entries(
    entries: Iterable[OwnedProcess],
    *,
    grace: float | None = None,
    check_policy: bool = True,
    config: MemoryConfig | None = None,
) -> list[dict[str, Any]]:
    """End several owned processes together (one shared grace period).

    Entries that may not be signalled are not touched and come back with a ``refused``
    reason. Never raises for a single process's failure.
    """
    cfg = config or active_config()
    grace = cfg.terminate_grace_seconds if grace is None else max(0.0, grace)
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    active: list[tuple[OwnedProcess, dict[str, Any]]] = []
    for entry in entries:
        res: dict[str, Any] = {
            "pid": entry.pid,
            "role": entry.role,
            "group": entry.process_group,
            "signals": [],
            "exited": False,
            "returncode": None,
            "refused": None,
        }
        results.append(res)
        why = _refusal(entry, cfg, check_policy)
        if why is not None:
            res["refused"] = why
            if why == "exited":
                _finish(entry, res)
            continue
        if _signal(entry, signal.SIGTERM):
            res["signals"].append("TERM")
            active.append((entry, res))
        else:
            _finish(entry, res)
    deadline = time.monotonic() + grace
    for entry, _ in active:
        _wait_exited(entry, deadline)
    for entry, res in active:
        # Whatever is left of the process (or its group) gets KILL; the leader is still
        # unreaped here, so its PID and group ID cannot have been reused.
        lingering = not _exited(entry) or (entry.process_group and _group_members(entry.pid))
        if lingering and _signal(entry, signal.SIGKILL):
            res["signals"].append("KILL")
    kill_deadline = time.monotonic() + 5.0
    for entry, res in active:
        _wait_exited(entry, kill_deadline)
        _finish(entry, res)
    for res in results:
        res["seconds"] = round(time.monotonic() - started, 4)
        if res["signals"]:
            log.info("terminated owned process %s (%s): %s", res["pid"], res["role"], "+".join(res["signals"]))
    return results


def _signal(entry: OwnedProcess, sig: int) -> bool:
    try:
        return entry.signal_group(sig) if entry.process_group else entry.send_signal(sig)
    except OSError as exc:
        log.debug("signal %d to %d failed: %r", sig, entry.pid, exc)
        return False


def _exited(entry: OwnedProcess) -> bool:
    """True once the process has exited (a zombie counts), without reaping it."""
    if entry.returncode is not None:
        return True
    st = read_identity(entry.pid)
    return (
        st is None or st.state in ("Z", "X") or (entry.start_ticks is not None and st.start_ticks != entry.start_ticks)
    )


def _wait_exited(entry: OwnedProcess, deadline: float) -> None:
    while not _exited(entry) or (entry.process_group and _group_members(entry.pid)):
        if time.monotonic() >= deadline:
            return
        time.sleep(_POLL)


def _finish(entry: OwnedProcess, res: dict[str, Any]) -> None:
    rc = None
    end = time.monotonic() + 1.0
    while True:
        try:
            rc = entry.poll()
        except Exception as exc:  # an owner object in a strange state
            log.debug("reaping %d failed: %r", entry.pid, exc)
        if rc is not None or time.monotonic() >= end or not _exited(entry):
            break
        time.sleep(_POLL)  # exited but the owner has not seen it yet
    if rc is not None:
        registry.finish(entry)
        res["exited"] = True
        res["returncode"] = entry.to_dict()["returncode"]


def _group_members(pgid: int) -> list[int]:
    """Live processes of our tree in process group ``pgid`` (zombies excluded)."""
    out: list[int] = []
    frontier = [os.getpid()]
    seen: set[int] = set()
    while frontier and len(seen) < 4096:
        pid = frontier.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            data = read_bytes(f"/proc/{pid}/task/{tid}/children", 65536)
            for kid in (data or b"").split():
                k = int(kid)
                st = read_identity(k)
                if st is not None:
                    if st.pgrp == pgid and st.state not in ("Z", "X"):
                        out.append(k)
                    frontier.append(k)
    return out


EXIT_GRACE = 2.0  # seconds owned children get between TERM and KILL when the service exits


def end_owned_at_exit() -> list[dict[str, Any]]:
    """End the owned processes still running when the interpreter exits (``atexit``).

    Without this an owned child outlives the service, re-parented to init. Only with
    ``terminate_owned_on_exit`` and ``terminate_policy = "owned"``; only this process's
    own entries inside its tree; TERM, then KILL after ``min(terminate_grace_seconds, 2)``.
    A service killed by SIGKILL (the OOM killer) runs no exit handler: its children stay.
    """
    cfg = active_config()
    if not cfg.terminate_owned_on_exit or cfg.terminate_policy != "owned":
        return []
    live = [e for e in registry.entries() if e.returncode is None]
    if not live:
        return []
    try:
        results = stop_entries(live, grace=min(cfg.terminate_grace_seconds, EXIT_GRACE), config=cfg)
    except Exception as exc:  # never break the host's shutdown
        log.debug("ending owned processes at exit failed: %r", exc)
        return []
    ended = [r for r in results if r["signals"]]
    if ended:
        log.info("ended %d owned child process(es) at exit: %s", len(ended), ", ".join(str(r["pid"]) for r in ended))
    return results
