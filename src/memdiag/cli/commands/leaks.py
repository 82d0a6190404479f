"""``memdiag leaks``: the service's leak report."""

from __future__ import annotations

import click

from .._options import CONTEXT, json_option, target_options
from ._common import call, echo_json, resolve

__all__ = ["leaks"]


@click.command(context_settings=CONTEXT)
@json_option
@target_options
def leaks(as_json: bool, pid: int | None, url: str | None, token: str | None, timeout: float) -> None:
    """Leak report: growth trends, suspects and their allocation sites."""
    target = resolve(pid, url, token, timeout, "leaks")
    resp = call(target, "GET", "/api/memory/leaks", timeout=max(timeout, 30.0))
    if as_json:
        echo_json(resp.body, resp.text)
        return
    from .._render import render_leaks

    click.echo(render_leaks(resp.body or {}))
