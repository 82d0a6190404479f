"""What the commands share: the one-line error and its exit status, target resolution,
API requests with a spinner, JSON output, and the outside view of a process or the
machine (``profile``/``diagnostics`` without an agent).

Nothing here imports click (the commands of :data:`~memdiag.cli.commands.FAST` run
without it): :func:`echo` is ``click.echo`` when click is loaded, else the same output
written directly, and :class:`CommandError` becomes click's ``Error: ...`` in the group
(:mod:`._group`) or in :mod:`memdiag.cli._fast`. The HTTP client, JSON, /proc readers and
renderers are imported by the functions that use them.
"""

from __future__ import annotations

import sys

from .._format import spinner

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from .._client import ApiError, ApiResponse
    from .._target import Target

__all__ = [
    "CommandError",
    "api_failure",
    "call",
    "echo",
    "echo_json",
    "fail",
    "outside",
    "resolve",
    "server_target",
    "show",
    "source",
    "target_of",
]


class CommandError(Exception):
    """A one-line ``Error: ...`` on stderr and an exit status (1 or 2)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def echo(message: str = "", *, err: bool = False, nl: bool = True) -> None:
    """Print a line as ``click.echo`` does: through click when it is loaded (a click
    command, a test's ``CliRunner``), else to stdout/stderr directly, with the ANSI codes
    removed when the stream is not a terminal, flushed."""
    click = sys.modules.get("click")
    if click is not None:
        click.echo(message, err=err, nl=nl)
        return
    stream = sys.stderr if err else sys.stdout
    if stream is None:
        return
    text = message + "\n" if nl else message
    if "\x1b" in text and not _isatty(stream):
        import re

        text = re.sub(r"\033\[[;?0-9]*[a-zA-Z]", "", text)  # click's strip_ansi
    if text:
        stream.write(text)
    stream.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False


def fail(message: str, code: int = 2) -> NoReturn:
    raise CommandError(message, code)


def resolve(
    pid: int | None,
    url: str | None,
    token: str | None,
    timeout: float,
    require: str | None = None,
    *,
    name: str | None = None,
) -> Target:
    """The command's target (see :func:`memdiag.cli._target.resolve_target`); exit 2 if none.

    ``name`` is ``--name``; a click command leaves it in its context (``target_options``)."""
    from .._target import TargetError, resolve_target

    if name is None:
        name = _context_name()
    try:
        return resolve_target(pid=pid, url=url, token=token, timeout=timeout, require_service=require, name=name)
    except TargetError as exc:
        fail(str(exc))


def target_of(options: dict[str, Any], require: str | None = None) -> Target:
    """The target a command's :data:`~memdiag.cli._spec.TARGET` options name (``pid``,
    ``url``, ``token``, ``timeout``, ``target_name``); ``require`` as for :func:`resolve`."""
    return resolve(
        options["pid"], options["url"], options["token"], options["timeout"], require, name=options.get("target_name")
    )


def show(target: Target, path: str, as_json: bool, render: str, *, timeout: float | None = None, **how: Any) -> None:
    """``GET path`` of the service, printed: with ``--json`` as the service sent it, else for
    people by the renderer named ``render`` (of :mod:`memdiag.cli._render`, imported only
    then) with the keyword arguments ``how``."""
    resp = call(target, "GET", path, timeout=timeout)
    if as_json:
        echo_json(resp.body, resp.text)
        return
    from .. import _render

    echo(getattr(_render, render)(resp.body or {}, **how))


def server_target(server_pid: int, timeout: float) -> Target:
    """``--server PID``: a process of the pre-fork server whose master (or any member) is
    PID, to ask for the whole server (any member answers ``/api/memory/server``); exit 2 if none."""
    from ...runtime import list_services
    from .._target import Target, client_for

    entries = list_services()
    member = next((e for e in entries if e.pid == server_pid and e.socket), None) or next(
        (e for e in entries if e.socket and (e.server or {}).get("pid") == server_pid), None
    )
    if member is None:
        fail(f"no process of a server with PID {server_pid} runs memdiag (see `memdiag ps`)")
    return Target("service", member.pid, client_for(member, None, timeout), member)


def _context_name() -> str | None:
    """``--name`` as a click command's context holds it (none without click)."""
    click = sys.modules.get("click")
    ctx = click.get_current_context(silent=True) if click is not None else None
    return ctx.meta.get("memdiag_target_name") if ctx is not None else None


def call(
    target: Target, method: str, path: str, body: Any = None, *, timeout: float | None = None, quiet: bool = False
) -> ApiResponse:
    """One API request with a spinner; API failures become one-line errors."""
    from .._client import ApiError

    assert target.client is not None
    try:
        if quiet:
            return target.client.request(method, path, body, timeout=timeout)
        with spinner(f"waiting for {target.label}"):
            return target.client.request(method, path, body, timeout=timeout)
    except ApiError as exc:
        api_failure(target, exc)


def api_failure(target: Target, exc: ApiError) -> NoReturn:
    """An API failure as a one-line error: exit 2 for a service not reachable or not
    found, or a bad token; 1 otherwise."""
    if exc.unreachable:
        fail(f"{target.label} is not answering: {exc}")
    fail(str(exc), 2 if exc.status in (401, 404) else 1)


def echo_json(data: Any, raw: str | None = None) -> None:
    """Print a report as JSON: a service's answer exactly as sent, else compact JSON."""
    if raw is not None:
        echo(raw.strip())
        return
    import json

    echo(json.dumps(data, separators=(",", ":"), default=str))


def source(target: Target) -> str:
    """The API address a report came from (shown in its heading)."""
    return target.client.url if target.client else ""


def outside(target: Target, as_json: bool, *, diagnostics: bool = False) -> None:
    """Print what can be seen of a process (``--pid`` without an agent) or of the machine."""
    from .._outside import machine_view, process_view

    if target.kind == "process":
        assert target.pid is not None
        view = process_view(target.pid)
        if view is None:
            fail(f"no process {target.pid} (it exited)")
    else:
        with spinner("reading the machine's processes"):
            view = machine_view()
    if as_json:
        echo_json(view)
        return
    from .._render import render_diagnostics, render_profile

    echo(render_diagnostics(view) if diagnostics else render_profile(view))
