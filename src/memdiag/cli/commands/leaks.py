"""``memdiag leaks``: the service's leak report."""

from __future__ import annotations

from .._spec import JSON, TARGET, Spec
from ._common import call, echo, echo_json, resolve

__all__ = ["SPEC", "leaks"]

SPEC = Spec("leaks", (JSON, *TARGET))


def leaks(
    as_json: bool,
    pid: int | None,
    url: str | None,
    token: str | None,
    timeout: float,
    target_name: str | None = None,
) -> None:
    """Leak report: growth trends, suspects and their allocation sites."""
    target = resolve(pid, url, token, timeout, "leaks", name=target_name)
    resp = call(target, "GET", "/api/memory/leaks", timeout=max(timeout, 30.0))
    if as_json:
        echo_json(resp.body, resp.text)
        return
    from .._render import render_leaks

    echo(render_leaks(resp.body or {}))
