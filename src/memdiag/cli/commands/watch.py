"""``memdiag watch``: a refreshing view of one target (the loop is :mod:`.._watch`)."""

from __future__ import annotations

import sys

import click

from .._options import CONTEXT, target_options
from ._common import fail, resolve, server_target

__all__ = ["watch"]


@click.command(context_settings=CONTEXT)
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True, help="Seconds between refreshes."
)
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N frames (default: until Ctrl-C).")
@click.option("--plain", is_flag=True, help="Plain text frames even when rich is installed.")
@click.option(
    "--server",
    "server_pid",
    type=int,
    default=None,
    metavar="PID",
    help="The whole pre-fork server whose master is PID (or any of its workers): every process side by side.",
)
@target_options
def watch(
    interval: float,
    count: int | None,
    plain: bool,
    server_pid: int | None,
    pid: int | None,
    url: str | None,
    token: str | None,
    timeout: float,
) -> None:
    """A live view of one service (or process, or the machine), or with --server of every
    process of a pre-fork server side by side, until Ctrl-C: drawn with rich on a terminal
    when it is installed, plain text otherwise."""
    from .._client import ApiError
    from .._target import TargetError
    from .._watch import watch_loop

    server = server_pid is not None
    target = server_target(server_pid, timeout) if server_pid is not None else resolve(pid, url, token, timeout)
    try:
        code = watch_loop(target, interval=interval, count=count, plain=plain, server=server)
    except KeyboardInterrupt:
        code = 0
    except (ApiError, TargetError) as exc:
        fail(f"{target.label} went away: {exc}")
    sys.exit(code)
