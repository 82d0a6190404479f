"""``memdiag cleanup``: ask the service to free memory (the cooldown applies unless --force)."""

from __future__ import annotations

import sys
from typing import Any

import click

from .._options import CONTEXT, json_option, target_options
from ._common import call, echo_json, resolve

__all__ = ["cleanup"]


@click.command(context_settings=CONTEXT)
@click.option("--force", is_flag=True, help="Run now, even inside the cleanup cooldown.")
@click.option("--dry-run", is_flag=True, default=None, help="Only report what would be freed.")
@json_option
@target_options
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
    target = resolve(pid, url, token, timeout, "cleanup")
    body: dict[str, Any] = {"force": force}
    if dry_run:
        body["dry_run"] = True
    resp = call(target, "POST", "/api/memory/cleanup", body, timeout=max(timeout, 30.0))
    data = resp.body if isinstance(resp.body, dict) else {}
    refused = resp.status == 429
    result = data.get("result") if refused else data  # a refusal carries the skipped run
    if as_json:
        echo_json(data, resp.text)
    elif isinstance(result, dict):
        from .._render import render_cleanup

        click.echo(render_cleanup(result))
    else:  # the API's per-client rate limit, not the cleanup cooldown
        wait = data.get("retry_after_seconds") or resp.headers.get("retry-after")
        click.echo(f"Cleanup refused: {data.get('error', 'too many requests')}; retry in {wait}s")
    if refused:
        sys.exit(1)
