"""``memdiag ps``: this user's services that run memdiag (rows built by :mod:`.._ps`)."""

from __future__ import annotations

from .._spec import JSON, Opt, Spec
from ._common import echo, echo_json

__all__ = ["SPEC", "ps"]

SPEC = Spec(
    "ps",
    (
        JSON,
        Opt(("--timeout",), "Seconds to wait for each service.", "float", default=1.0, minimum=0.1, show_default=True),
    ),
)


def ps(as_json: bool, timeout: float) -> None:
    """The services of this user that run memdiag: PID, RSS, pressure, API address."""
    from .._ps import service_rows

    rows = service_rows(timeout)
    if as_json:
        echo_json(rows)
        return
    from .._render import render_ps  # for people only: --json does not load the renderers

    echo(render_ps(rows))
