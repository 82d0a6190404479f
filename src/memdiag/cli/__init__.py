"""The memdiag command line: ``memdiag`` and ``claude-pm memory``.

* :func:`main` runs ``memdiag`` (the ``memory`` group at top level);
* :func:`claude_pm_main` runs ``claude-pm`` (whose ``memory`` group is the same);
* ``memory_group`` is the click group a host CLI mounts::

      from memdiag.cli import memory_group
      host.add_command(memory_group, "memory")      # host memory profile

The commands live in :mod:`memdiag.cli.commands`, one module per command.
click (the ``cli`` extra) is imported by them only, and not at all by the everyday
commands (``profile``, ``diagnostics``, ``leaks``, ``ps``, ``cleanup``) when their command
line is plain: :mod:`memdiag.cli._fast` runs them. Without click, the entry points say
``pip install 'memdiag[cli]'`` and exit with status 2.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["claude_pm_main", "main", "memory_group"]


def _load(name: str) -> Any:
    from ..errors import MissingExtraError

    try:
        from . import commands

        return getattr(commands, name)
    except MissingExtraError as exc:
        print(f"memdiag: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> None:
    """The ``memdiag`` command."""
    from ._fast import run

    run(sys.argv[1:] if argv is None else argv, "memdiag")
    _load("memory_group").main(args=argv, prog_name="memdiag")


def claude_pm_main(argv: list[str] | None = None) -> None:
    """The ``claude-pm`` command (its ``memory`` group is memdiag's)."""
    args = sys.argv[1:] if argv is None else argv
    if list(args[:1]) == ["memory"]:
        from ._fast import run

        run(args[1:], "claude-pm")
    _load("claude_pm_group").main(args=argv, prog_name="claude-pm")


def __getattr__(name: str) -> Any:
    if name in ("memory_group", "claude_pm_group"):
        return _load(name)
    raise AttributeError(f"module 'memdiag.cli' has no attribute {name!r}")
