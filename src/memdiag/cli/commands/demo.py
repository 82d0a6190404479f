"""``memdiag demo``: a real workload under monitoring (the workload is :mod:`memdiag.demo`)."""

from __future__ import annotations

import sys

import click

from .._options import CONTEXT
from ._common import fail

__all__ = ["demo"]


@click.command(context_settings=CONTEXT)
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
        from ... import demo as demo_mod
    except ImportError:
        fail("demo not available in this build of memdiag (memdiag.demo is missing)", 1)
    sys.exit(demo_mod.main(duration, http=http))
