"""``memdiag diagnostics``: the full report of a service (or the outside view)."""

from __future__ import annotations

import click

from .._options import CONTEXT, json_option, target_options
from ._common import call, echo_json, outside, resolve, source

__all__ = ["diagnostics"]


@click.command(context_settings=CONTEXT)
@json_option
@target_options
def diagnostics(as_json: bool, pid: int | None, url: str | None, token: str | None, timeout: float) -> None:
    """Full diagnostics: thresholds, subprocesses, allocations, leaks, trends, cleanups."""
    target = resolve(pid, url, token, timeout)
    if target.kind != "service":
        outside(target, as_json, diagnostics=True)
        return
    resp = call(target, "GET", "/api/memory/diagnostics")
    if as_json:
        echo_json(resp.body, resp.text)
        return
    from .._render import render_diagnostics

    click.echo(render_diagnostics(resp.body, source=source(target)))
