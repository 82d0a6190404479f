"""``memdiag run -- CMD``: run a command under memdiag (the supervisor is :mod:`.._run`)."""

from __future__ import annotations

import sys
from typing import Any

import click

from .._options import CONTEXT, ConfigCommand, collect_config
from ._common import fail

__all__ = ["run"]


@click.command(cls=ConfigCommand, context_settings={**CONTEXT, "allow_interspersed_args": False})
@click.option(
    "--http/--no-http",
    default=True,
    show_default=True,
    help="The agent in CMD serves its API (so `memdiag ps`/`profile` find it).",
)
@click.option(
    "--agent/--no-agent",
    default=True,
    show_default=True,
    help="Inject memdiag into CMD when it is Python (via PYTHONPATH).",
)
@click.option("-q", "--quiet", is_flag=True, help="No pressure messages or summary on stderr.")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def run(http: bool, agent: bool, quiet: bool, cmd: tuple[str, ...], **kwargs: Any) -> None:
    """Run CMD under memdiag: memdiag RUN [OPTIONS] -- CMD [ARGS]...

    A Python CMD gets memdiag injected without code changes (configured by the options
    here); the whole process tree is monitored, signals are forwarded, and the exit
    status is CMD's (128+N if signal N killed it).
    """
    from ...config import MemoryConfig
    from ...errors import ConfigError
    from .._run import run_command

    changes = collect_config(kwargs)
    try:
        typed_cfg = MemoryConfig().updated(changes)
        code = run_command(cmd, {k: getattr(typed_cfg, k) for k in changes}, agent=agent, http=http, quiet=quiet)
    except ConfigError as exc:
        fail(str(exc))
    sys.exit(code)
