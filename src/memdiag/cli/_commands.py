"""The ``memory`` command group: profile, cleanup, diagnostics, configure, leaks, ps,
watch, run and demo.

Exit status: 0 when the command did what was asked; 1 when it ran but reports a
problem (a cleanup skipped by the cooldown or already running, an error answer from
the service, a feature the service does not have); 2 for usage errors, invalid
configuration values, and a target that is ambiguous, gone, or cannot do what was
asked. ``run`` exits with its command's status.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

try:
    import click
except ModuleNotFoundError as exc:  # pragma: no cover - exercised by test_cli_missing_click
    from ..errors import MissingExtraError

    raise MissingExtraError("click", "cli", "the memdiag command line") from exc

from .. import __version__
from ..errors import ConfigError
from ._client import ApiError, ApiResponse
from ._format import human_duration, spinner
from ._options import ConfigCommand, collect_config
from ._target import Target, TargetError, resolve_target

__all__ = ["claude_pm_group", "memory_group"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class CommandError(click.ClickException):
    """A one-line ``Error: ...`` on stderr and an exit status (1 or 2)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _fail(message: str, code: int = 2) -> NoReturn:
    raise CommandError(message, code)


def _target_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=5.0,
        show_default=True,
        help="Seconds to wait for the service's answer.",
    )(fn)
    fn = click.option(
        "--token",
        envvar="MEMDIAG_API_TOKEN",
        default=None,
        help="API token (default: the service's 0600 token file; env MEMDIAG_API_TOKEN).",
    )(fn)
    fn = click.option("--url", default=None, metavar="URL", help="Talk to the service whose API is at URL.")(fn)
    fn = click.option(
        "--pid",
        type=int,
        default=None,
        metavar="N",
        help="Target process N (a memdiag service, or any process seen from outside).",
    )(fn)
    return fn


def _json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the report as JSON (the HTTP API's own JSON for a service)."
    )(fn)


def _resolve(pid: int | None, url: str | None, token: str | None, timeout: float, require: str | None = None) -> Target:
    try:
        return resolve_target(pid=pid, url=url, token=token, timeout=timeout, require_service=require)
    except (TargetError, ApiError) as exc:
        _fail(str(exc))


def _call(
    target: Target, method: str, path: str, body: Any = None, *, timeout: float | None = None, quiet: bool = False
) -> ApiResponse:
    """One API request with a spinner; API failures become one-line errors."""
    assert target.client is not None
    try:
        if quiet:
            return target.client.request(method, path, body, timeout=timeout)
        with spinner(f"waiting for {target.label}"):
            return target.client.request(method, path, body, timeout=timeout)
    except ApiError as exc:
        _api_failure(target, exc)


def _api_failure(target: Target, exc: ApiError) -> NoReturn:
    """An API failure as a one-line error: exit 2 for a service not reachable or not
    found, or a bad token; 1 otherwise."""
    if exc.unreachable:
        _fail(f"{target.label} is not answering: {exc}")
    _fail(str(exc), 2 if exc.status in (401, 404) else 1)


def _echo_json(data: Any, raw: str | None = None) -> None:
    """Print a report as JSON: a service's answer exactly as sent, else compact JSON."""
    click.echo(raw.strip() if raw is not None else json.dumps(data, separators=(",", ":"), default=str))


def _source(target: Target) -> str:
    return target.client.url if target.client else ""


# -- the group ---------------------------------------------------------------------------


@click.group("memory", context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="memdiag")
def memory_group() -> None:
    """Memory diagnostics for long-running Python services and their child processes.

    Commands find the running service by themselves (the one registered by
    memdiag.start(http=True) for this user); --pid N or --url URL chooses one.
    """


@memory_group.command(context_settings=CONTEXT)
@_json_option
@click.option("--allocations", is_flag=True, help="Trace allocations for a window and show the top allocation sites.")
@click.option(
    "--seconds",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Length of the --allocations window (default: the service's trace_window_seconds).",
)
@_target_options
def profile(
    as_json: bool,
    allocations: bool,
    seconds: float | None,
    pid: int | None,
    url: str | None,
    token: str | None,
    timeout: float,
) -> None:
    """Current memory: process vs threshold, system, cgroup, PSI, children, caches, pressure.

    With no service registered it shows the machine; with --pid N of a process that runs
    no memdiag, what can be seen from outside (and what cannot).
    """
    target = _resolve(pid, url, token, timeout, "profile --allocations" if allocations else None)
    if allocations:
        _allocations(target, seconds, as_json)
        return
    if target.kind == "service":
        resp = _call(target, "GET", "/api/memory/profile")
        if as_json:
            _echo_json(resp.body, resp.text)
        else:
            from ._render import render_profile

            click.echo(render_profile(resp.body, source=_source(target)))
        return
    _outside(target, as_json)


def _outside(target: Target, as_json: bool, *, diagnostics: bool = False) -> None:
    from ._outside import machine_view, process_view
    from ._render import render_diagnostics, render_profile

    if target.kind == "process":
        assert target.pid is not None
        view = process_view(target.pid)
        if view is None:
            _fail(f"no process {target.pid} (it exited)")
    else:
        with spinner("reading the machine's processes"):
            view = machine_view()
    if as_json:
        _echo_json(view)
    else:
        click.echo(render_diagnostics(view) if diagnostics else render_profile(view))


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
            resp = _call(target, "GET", "/api/memory/leaks", timeout=30.0, quiet=True)
            last = ((resp.body or {}).get("tracing") or {}).get("last") or {}
            if last.get("id") == wid:
                break
            if time.monotonic() > deadline:
                _fail(f"the tracing window #{wid} did not finish within 2 minutes", 1)
            time.sleep(0.3)
    if as_json:
        _echo_json(resp.body, resp.text)
        return
    from ._render import allocation_sites, render_sites

    sites = allocation_sites(resp.body or {})
    click.echo(f"Allocation sites traced in {target.label} over {human_duration(last.get('seconds'))}:")
    click.echo(render_sites(sites) if sites else "No traced allocations.")


def _start_or_join_window(target: Target, body: dict[str, Any]) -> dict[str, Any]:
    """Open a tracing window; if one is already running (the leak detector's own, say),
    join it rather than fail: its results are what this window would have shown."""
    assert target.client is not None
    try:
        with spinner(f"waiting for {target.label}"):
            return target.client.request("POST", "/api/memory/leaks/trace", body).body or {}
    except ApiError as exc:
        if exc.status != 409:
            _api_failure(target, exc)
        tracing = (_call(target, "GET", "/api/memory/leaks", quiet=True).body or {}).get("tracing") or {}
        window = tracing.get("window") if tracing.get("running") else None
        if not window:  # refused for another reason (the budget): say why
            _fail(str(exc), 1)
        click.echo(
            f"A tracing window (#{window.get('id')}, {window.get('reason')}) is already running in "
            f"{target.label}: showing its results.",
            err=True,
        )
        return dict(window)


def _progress(message: str, remaining: float, total: float) -> None:
    """A progress line on stderr (a terminal only) while a window runs."""
    end = time.monotonic() + remaining
    tty = sys.stderr.isatty()
    while (left := end - time.monotonic()) > 0:
        if tty:
            done = total - left
            click.echo(f"\r{message}: {done:5.1f}/{total:.1f}s", nl=False, err=True)
        time.sleep(min(0.2, left))
    if tty:
        click.echo("\r\x1b[K", nl=False, err=True)


@memory_group.command(context_settings=CONTEXT)
@_json_option
@_target_options
def diagnostics(as_json: bool, pid: int | None, url: str | None, token: str | None, timeout: float) -> None:
    """Full diagnostics: thresholds, subprocesses, allocations, leaks, trends, cleanups."""
    target = _resolve(pid, url, token, timeout)
    if target.kind != "service":
        _outside(target, as_json, diagnostics=True)
        return
    resp = _call(target, "GET", "/api/memory/diagnostics")
    if as_json:
        _echo_json(resp.body, resp.text)
    else:
        from ._render import render_diagnostics

        click.echo(render_diagnostics(resp.body, source=_source(target)))


@memory_group.command(context_settings=CONTEXT)
@click.option("--force", is_flag=True, help="Run now, even inside the cleanup cooldown.")
@click.option("--dry-run", is_flag=True, default=None, help="Only report what would be freed.")
@_json_option
@_target_options
def cleanup(
    force: bool,
    dry_run: bool | None,
    as_json: bool,
    pid: int | None,
    url: str | None,
    token: str | None,
    timeout: float,
) -> None:
    """Free memory in the service: caches, gc, malloc_trim, zombies (respects the cooldown).

    Exits 1 when the cleanup was skipped (cooldown, or one already running), saying when
    it may run again.
    """
    target = _resolve(pid, url, token, timeout, "cleanup")
    body: dict[str, Any] = {"force": force}
    if dry_run:
        body["dry_run"] = True
    resp = _call(target, "POST", "/api/memory/cleanup", body, timeout=max(timeout, 30.0))
    data = resp.body if isinstance(resp.body, dict) else {}
    refused = resp.status == 429
    result = data.get("result") if refused else data  # a refusal carries the skipped run
    if as_json:
        _echo_json(data, resp.text)
    elif isinstance(result, dict):
        from ._render import render_cleanup

        click.echo(render_cleanup(result))
    else:  # the API's per-client rate limit, not the cleanup cooldown
        wait = data.get("retry_after_seconds") or resp.headers.get("retry-after")
        click.echo(f"Cleanup refused: {data.get('error', 'too many requests')}; retry in {wait}s")
    if refused:
        sys.exit(1)


@memory_group.command(cls=ConfigCommand, context_settings=CONTEXT)
@click.option("--local", is_flag=True, help="Only save to the config file; do not contact a running service.")
@click.option("--no-persist", is_flag=True, help="Apply to the running service only; do not save.")
@_json_option
@_target_options
def configure(
    local: bool,
    no_persist: bool,
    as_json: bool,
    pid: int | None,
    url: str | None,
    token: str | None,
    timeout: float,
    **kwargs: Any,
) -> None:
    """Show or change settings: live in the running service, and saved to the config file.

    With no flags, prints the current configuration. An invalid value exits with status 2,
    names the field, and changes nothing. With no service running, the change is saved to
    the config file for services started from now on.
    """
    from ..config import MemoryConfig, default_config_path, load_config, save_config
    from ._render import render_config

    changes = collect_config(kwargs)
    try:
        typed_cfg = MemoryConfig().updated(changes)
    except ConfigError as exc:
        _fail(str(exc))
    typed = {k: getattr(typed_cfg, k) for k in changes}
    if local and no_persist:
        _fail("--local and --no-persist together would change nothing")
    target = (
        Target("machine")
        if local
        else _resolve(pid, url, token, timeout, "configure --pid" if pid is not None else None)
    )

    if target.kind == "service":
        if not changes:
            resp = _call(target, "GET", "/api/memory/configure")
            if as_json:
                _echo_json(resp.body, resp.text)
            else:
                click.echo(render_config((resp.body or {}).get("config") or {}, source=target.label))
            return
        try:
            assert target.client is not None
            with spinner(f"configuring {target.label}"):
                resp = target.client.post("/api/memory/configure", {**typed, "persist": not no_persist})
        except ApiError as exc:
            if exc.status == 422 and isinstance(exc.body, dict):
                fields = exc.body.get("fields") or {}
                detail = "; ".join(f"{k}: {v}" for k, v in sorted(fields.items())) or exc.body.get("error", "")
                _fail(f"invalid configuration: {detail} (nothing was changed)")
            _fail(f"{target.label}: {exc}", 2 if exc.unreachable or exc.status in (401, 404) else 1)
        if as_json:
            _echo_json(resp.body, resp.text)
            return
        body = resp.body or {}
        changed = body.get("changed") or []
        where = "applied and saved to its config file" if body.get("persisted") else "applied (not saved)"
        click.echo(f"{target.label}: {where}; changed: {', '.join(changed) or 'nothing (already set)'}")
        config = body.get("config") or {}
        for k in changes:
            click.echo(f"  {k} = {config.get(k, typed[k])}")
        return

    # No service: the config file.
    try:
        current = load_config()
    except ConfigError as exc:
        _fail(f"the config file or environment is invalid: {exc}")
    path = default_config_path()
    if not changes:
        if as_json:
            _echo_json({"config": current.to_dict(), "path": str(path), "service": None})
        else:
            click.echo(render_config(current.to_dict(), source=f"{path} (+ MEMDIAG_* environment; no service running)"))
        return
    try:
        saved = save_config(typed)
    except ConfigError as exc:
        _fail(f"{exc} (nothing was changed)")
    except OSError as exc:
        _fail(f"could not save {path}: {exc}", 1)
    new = load_config()
    if as_json:
        _echo_json(
            {
                "config": new.to_dict(),
                "changed": sorted(current.diff(new)),
                "persisted": True,
                "path": str(saved),
                "service": None,
            }
        )
        return
    lead = "Saved" if local else "No running memdiag service; saved"
    click.echo(f"{lead} to {saved}; services started from now on use it.")
    for k in changes:
        click.echo(f"  {k} = {getattr(new, k)}")


@memory_group.command(context_settings=CONTEXT)
@_json_option
@_target_options
def leaks(as_json: bool, pid: int | None, url: str | None, token: str | None, timeout: float) -> None:
    """Leak report: growth trends, suspects and their allocation sites."""
    target = _resolve(pid, url, token, timeout, "leaks")
    resp = _call(target, "GET", "/api/memory/leaks", timeout=max(timeout, 30.0))
    if as_json:
        _echo_json(resp.body, resp.text)
    else:
        from ._render import render_leaks

        click.echo(render_leaks(resp.body or {}))


@memory_group.command(context_settings=CONTEXT)
@_json_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds to wait for each service.",
)
def ps(as_json: bool, timeout: float) -> None:
    """The services of this user that run memdiag: PID, RSS, pressure, API address."""
    from ._ps import service_rows
    from ._render import render_ps

    rows = service_rows(timeout)
    if as_json:
        _echo_json(rows)
    else:
        click.echo(render_ps(rows))


@memory_group.command(context_settings=CONTEXT)
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True, help="Seconds between refreshes."
)
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N frames (default: until Ctrl-C).")
@_target_options
def watch(
    interval: float, count: int | None, pid: int | None, url: str | None, token: str | None, timeout: float
) -> None:
    """A live view of one service (or process, or the machine), until Ctrl-C."""
    from ._watch import watch_loop

    target = _resolve(pid, url, token, timeout)
    try:
        code = watch_loop(target, interval=interval, count=count)
    except KeyboardInterrupt:
        code = 0
    except (ApiError, TargetError) as exc:
        _fail(f"{target.label} went away: {exc}")
    sys.exit(code)


@memory_group.command(cls=ConfigCommand, context_settings={**CONTEXT, "allow_interspersed_args": False})
@click.option(
    "--http/--no-http",
    default=True,
    show_default=True,
    help="The agent in CMD serves its API (so `memdiag ps`/`profile` find it).",
)
@click.option(
    "--agent/--no-agent",
    default=True,
    show_default=True,
    help="Inject memdiag into CMD when it is Python (via PYTHONPATH).",
)
@click.option("-q", "--quiet", is_flag=True, help="No pressure messages or summary on stderr.")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def run(http: bool, agent: bool, quiet: bool, cmd: tuple[str, ...], **kwargs: Any) -> None:
    """Run CMD under memdiag: memdiag RUN [OPTIONS] -- CMD [ARGS]...

    A Python CMD gets memdiag injected without code changes (configured by the options
    here); the whole process tree is monitored, signals are forwarded, and the exit
    status is CMD's (128+N if signal N killed it).
    """
    from ._run import run_command

    changes = collect_config(kwargs)
    try:
        from ..config import MemoryConfig

        typed_cfg = MemoryConfig().updated(changes)
        code = run_command(cmd, {k: getattr(typed_cfg, k) for k in changes}, agent=agent, http=http, quiet=quiet)
    except ConfigError as exc:
        _fail(str(exc))
    sys.exit(code)


@memory_group.command(context_settings=CONTEXT)
@click.option(
    "--duration",
    type=click.FloatRange(min=1.0),
    default=30.0,
    show_default=True,
    help="Seconds the demo workload runs.",
)
@click.option(
    "--http/--no-http", default=True, show_default=True, help="Also serve the API and the dashboard while it runs."
)
def demo(duration: float, http: bool) -> None:
    """A real workload under monitoring: caches, children, pressure, cleanup."""
    try:
        from .. import demo as demo_mod
    except ImportError:
        _fail("demo not available in this build of memdiag (memdiag.demo is missing)", 1)
    sys.exit(demo_mod.main(duration, http=http))


# -- claude-pm ---------------------------------------------------------------------------


@click.group("claude-pm", context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="claude-pm (memdiag)")
def claude_pm_group() -> None:
    """Claude PM commands provided by memdiag (memory diagnostics: `claude-pm memory`)."""


claude_pm_group.add_command(memory_group, "memory")
