"""``memdiag diagnostics``: the full report of a service (or the outside view)."""

from __future__ import annotations

from .._spec import JSON, TARGET, Spec
from ._common import call, echo, echo_json, outside, resolve, source

__all__ = ["SPEC", "diagnostics"]

SPEC = Spec("diagnostics", (JSON, *TARGET))


def diagnostics(
    as_json: bool,
    pid: int | None,
    url: str | None,
    token: str | None,
    timeout: float,
    target_name: str | None = None,
) -> None:
    """Full diagnostics: thresholds, subprocesses, allocations, leaks, trends, cleanups."""
    target = resolve(pid, url, token, timeout, name=target_name)
    if target.kind != "service":
        outside(target, as_json, diagnostics=True)
        return
    resp = call(target, "GET", "/api/memory/diagnostics")
    if as_json:
        echo_json(resp.body, resp.text)
        return
    from .._render import render_diagnostics

    echo(render_diagnostics(resp.body, source=source(target)))
