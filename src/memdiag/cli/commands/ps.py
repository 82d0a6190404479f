"""``memdiag ps``: this user's services that run memdiag (rows built by :mod:`.._ps`)."""

from __future__ import annotations

import click

from .._options import CONTEXT, json_option
from ._common import echo_json

__all__ = ["ps"]


@click.command(context_settings=CONTEXT)
@json_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds to wait for each service.",
)
def ps(as_json: bool, timeout: float) -> None:
    """The services of this user that run memdiag: PID, RSS, pressure, API address."""
    from .._ps import service_rows
    from .._render import render_ps

    rows = service_rows(timeout)
    if as_json:
        echo_json(rows)
    else:
        click.echo(render_ps(rows))
