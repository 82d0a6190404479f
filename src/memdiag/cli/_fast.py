"""The everyday commands without click: ``profile``, ``diagnostics``, ``leaks``, ``ps``,
``cleanup`` (:data:`~memdiag.cli.commands.FAST`).

click and the standard library modules it loads (typing, enum, inspect, gettext, ...)
cost about 45 ms at every start on a small machine, more than the rest of a command
together. :func:`run` parses the command line with the command's option table
(:mod:`._spec`, the same table its click command is built from) and runs the command's
function as click's ``main`` would: the same output, ``Error: ...`` lines and exit
statuses. Whatever it does not handle itself returns to the caller, which hands the
unchanged command line to click: help, usage errors, shell completion, every other
command, a missing click (whose message names the extra to install).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Sequence

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["run"]


def run(argv: Sequence[str], prog_name: str) -> None:
    """Run ``argv`` (the arguments after the program's name) if it is an everyday command
    click need not parse; exits then (``SystemExit``), else returns."""
    from .commands import FAST

    if not argv or argv[0] not in FAST or not _plain_streams():
        return
    if os.environ.get(f"_{prog_name.replace('-', '_').replace('.', '_')}_COMPLETE".upper()):
        return  # shell completion: click's
    import importlib

    from ._spec import parse

    module = importlib.import_module(f"{__package__}.commands.{argv[0]}")
    values = parse(module.SPEC.options, argv[1:])
    if values is None or not _click_installed():
        return
    _main(getattr(module, argv[0]), values)


def _main(command: Callable[..., Any], values: dict[str, Any]) -> None:
    """Call ``command`` as ``click.Command.main`` (standalone) does, and exit."""
    from .commands._common import CommandError, echo

    try:
        command(**values)
    except (EOFError, KeyboardInterrupt):
        echo(err=True)
        echo("Aborted!", err=True)
        sys.exit(1)
    except CommandError as exc:
        echo(f"Error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        sys.stdout = _PacifyFlush(sys.stdout)  # type: ignore[assignment]
        sys.stderr = _PacifyFlush(sys.stderr)  # type: ignore[assignment]
        sys.exit(1)
    sys.exit(0)


def _plain_streams() -> bool:
    """stdout and stderr as click uses them unchanged (it rewraps an ASCII stream)."""
    import codecs

    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is None or codecs.lookup(stream.encoding or "ascii").name == "ascii":
                return False
        except (AttributeError, LookupError):
            return False
    return True


def _click_installed() -> bool:
    """Whether click can be imported (without importing it): without it the CLI says which
    extra to install, as every command does."""
    if "click" in sys.modules:
        return sys.modules["click"] is not None
    from importlib.machinery import PathFinder

    return PathFinder.find_spec("click") is not None


class _PacifyFlush:
    """click's ``PacifyFlushWrapper``: a closed pipe is not reported again at exit."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def flush(self) -> None:
        try:
            self.wrapped.flush()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.wrapped, attr)
