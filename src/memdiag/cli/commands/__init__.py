"""The ``memory`` command group (``memdiag ...``, ``claude-pm memory ...``): one module per
command, imported only when that command runs (or when ``--help`` lists them all).

Exit status: 0 when the command did what was asked; 1 when it ran but reports a
problem (a cleanup skipped by the cooldown or already running, an error answer from
the service, a feature the service does not have); 2 for usage errors, invalid
configuration values, and a target that is ambiguous, gone, or cannot do what was
asked. ``run`` exits with its command's status.

To add a command ``NAME``: write ``commands/NAME.py`` defining a click command (the
function named ``NAME``; shared options in :mod:`memdiag.cli._options`, target
resolution, API calls and errors in :mod:`._common`), and add ``NAME`` to
:data:`COMMANDS`. Import what the command needs inside its function, not at the top of
the module: ``memdiag --help`` imports every command module (tests/test_cli_imports.py
checks what each command loads).
"""

from __future__ import annotations

import importlib
from typing import Any

try:
    import click
except ModuleNotFoundError as exc:  # pragma: no cover - exercised by test_cli_missing_click
    from ...errors import MissingExtraError

    raise MissingExtraError("click", "cli", "the memdiag command line") from exc

from ... import __version__
from .._options import CONTEXT

__all__ = ["COMMANDS", "LazyGroup", "claude_pm_group", "memory_group"]

#: The commands of the ``memory`` group: each is ``memdiag.cli.commands.<name>.<name>``.
COMMANDS = ("cleanup", "configure", "demo", "diagnostics", "history", "leaks", "profile", "ps", "run", "watch")


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use (click's documented
    "lazily loading subcommands" pattern): ``memdiag profile`` does not import ``run``."""

    def __init__(self, *args: Any, lazy: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = list(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module = importlib.import_module(f"{__name__}.{cmd_name}")
            command = getattr(module, cmd_name)
            if not isinstance(command, click.Command):  # pragma: no cover - a programming error
                raise TypeError(f"{module.__name__}.{cmd_name} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group("memory", cls=LazyGroup, lazy=COMMANDS, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="memdiag")
def memory_group() -> None:
    """Memory diagnostics for long-running Python services and their child processes.

    Commands find the running service by themselves (the one registered by
    memdiag.start(http=True) for this user); --pid N or --url URL chooses one.
    """


@click.group("claude-pm", context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="claude-pm (memdiag)")
def claude_pm_group() -> None:
    """Claude PM commands provided by memdiag (memory diagnostics: `claude-pm memory`)."""


claude_pm_group.add_command(memory_group, "memory")
