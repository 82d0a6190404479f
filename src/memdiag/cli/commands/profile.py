"""``memdiag profile``: current memory of a service, a process seen from outside, or the
machine; with ``--allocations``, the top allocation sites of a tracing window."""

from __future__ import annotations

import time

from .._format import human_duration, spinner
from .._spec import JSON, TARGET, Opt, Spec
from ._common import api_failure, call, echo, echo_json, fail, outside, resolve, server_target, show, source

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

    from .._target import Target

__all__ = ["SPEC", "profile"]

SPEC = Spec(
    "profile",
    (
        JSON,
        Opt(("--allocations",), "Trace allocations for a window and show the top allocation sites.", "flag"),
        Opt(
            ("--seconds",),
            "Length of the --allocations window (default: the service's trace_window_seconds).",
            "float",
            default=None,
            minimum=0.1,
        ),
        Opt(
            ("--server", "server_pid"),
            "The whole pre-fork server whose master is PID (or any of its workers): every process and the sum.",
            "int",
            default=None,
            metavar="PID",
        ),
        Opt(
            ("--heap", "heap_file"),
            "Write the service's sampled live heap to FILE (pprof, or --format speedscope).",
            "path",
            default=None,
        ),
        Opt(
            ("--format", "heap_format"),
            "Format of the --heap file.",
            "choice",
            default="pprof",
            choices=("pprof", "speedscope"),
            show_default=True,
        ),
        *TARGET,
    ),
)


def profile(
    as_json: bool,
    allocations: bool,
    seconds: float | None,
    server_pid: int | None,
    heap_file: str | None,
    heap_format: str,
    pid: int | None,
    url: str | None,
    token: str | None,
    timeout: float,
    target_name: str | None = None,
) -> None:
    """Current memory: process vs threshold, system, cgroup, PSI, children, caches, pressure.

    With no service registered it shows the machine; with --pid N of a process that runs
    no memdiag, what can be seen from outside (and what cannot).
    """
    if server_pid is not None:
        _server(server_pid, as_json, timeout)
        return
    need = "profile --allocations" if allocations else "profile --heap" if heap_file else None
    target = resolve(pid, url, token, timeout, need, name=target_name)
    if heap_file:
        _heap(target, heap_file, heap_format, as_json)
        return
    if allocations:
        _allocations(target, seconds, as_json)
        return
    if target.kind != "service":
        outside(target, as_json)
        return
    show(target, "/api/memory/profile", as_json, "render_profile", source=source(target))


def _server(server_pid: int, as_json: bool, timeout: float) -> None:
    """``--server PID``: the aggregate view, asked of any process of that server."""
    show(server_target(server_pid, timeout), "/api/memory/server", as_json, "render_server")


def _heap(target: Target, path: str, fmt: str, as_json: bool) -> None:
    """Fetch the live heap and write it where asked, in pprof or speedscope format."""
    import json

    from ...leaks.export import to_pprof, to_speedscope

    resp = call(target, "GET", "/api/memory/heap", timeout=30.0)
    data = resp.body or {}
    payload = to_pprof(data) if fmt == "pprof" else json.dumps(to_speedscope(data)).encode("utf-8")
    try:
        with open(path, "wb") as fh:
            fh.write(payload)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}", 1)
    summary = {
        "file": path,
        "format": fmt,
        "bytes": len(payload),
        "sites": len(data.get("sites", [])),
        "backend": data.get("backend"),
        "live_bytes": round(sum(s.get("live_bytes", 0) for s in data.get("sites", []))),
    }
    if as_json:
        echo_json(summary, json.dumps(summary))
        return
    echo(
        f"wrote {path} ({fmt}, {summary['bytes']} bytes): {summary['sites']} sites, "
        f"{summary['live_bytes']} live bytes, from the {summary['backend']} heap profile of {target.label}"
    )


def _allocations(target: Target, seconds: float | None, as_json: bool) -> None:
    """Open a tracing window in the service, wait for its analysis, show the sites."""
    body = {} if seconds is None else {"seconds": seconds}
    window = _start_or_join_window(target, body)
    wid = window.get("id")
    remaining = float(window.get("remaining_seconds") or window.get("seconds") or 0.0)
    if remaining > 0:
        _progress(f"tracing allocations in {target.label}", remaining, float(window.get("seconds") or remaining))
    deadline = time.monotonic() + 120.0  # snapshots and analysis after the window ends
    with spinner("analysing the allocation snapshots"):
        while True:
            resp = call(target, "GET", "/api/memory/leaks", timeout=30.0, quiet=True)
            last = ((resp.body or {}).get("tracing") or {}).get("last") or {}
            if last.get("id") == wid:
                break
            if time.monotonic() > deadline:
                fail(f"the tracing window #{wid} did not finish within 2 minutes", 1)
            time.sleep(0.3)
    if as_json:
        echo_json(resp.body, resp.text)
        return
    from .._render import allocation_sites, render_sites

    sites = allocation_sites(resp.body or {})
    echo(f"Allocation sites traced in {target.label} over {human_duration(last.get('seconds'))}:")
    echo(render_sites(sites) if sites else "No traced allocations.")


def _start_or_join_window(target: Target, body: dict[str, Any]) -> dict[str, Any]:
    """Open a tracing window; if one is already running (the leak detector's own, say),
    join it rather than fail: its results are what this window would have shown."""
    from .._client import ApiError

    assert target.client is not None
    try:
        with spinner(f"waiting for {target.label}"):
            return target.client.request("POST", "/api/memory/leaks/trace", body).body or {}
    except ApiError as exc:
        if exc.status != 409:
            api_failure(target, exc)
        tracing = (call(target, "GET", "/api/memory/leaks", quiet=True).body or {}).get("tracing") or {}
        window = tracing.get("window") if tracing.get("running") else None
        if not window:  # refused for another reason (the budget): say why
            fail(str(exc), 1)
        echo(
            f"A tracing window (#{window.get('id')}, {window.get('reason')}) is already running in "
            f"{target.label}: showing its results.",
            err=True,
        )
        return dict(window)


def _progress(message: str, remaining: float, total: float) -> None:
    """A progress line on stderr (a terminal only) while a window runs."""
    import sys

    end = time.monotonic() + remaining
    tty = sys.stderr.isatty()
    while (left := end - time.monotonic()) > 0:
        if tty:
            done = total - left
            echo(f"\r{message}: {done:5.1f}/{total:.1f}s", nl=False, err=True)
        time.sleep(min(0.2, left))
    if tty:
        echo("\r\x1b[K", nl=False, err=True)
