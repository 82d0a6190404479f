"""The click groups: ``memory`` (``memdiag``) and ``claude-pm``, their commands loaded lazily.

A command's module defines either a click command named after it, or (the commands of
:data:`~memdiag.cli.commands.FAST`) a plain function and its ``SPEC``, from which
:func:`spec_command` builds the click command: the same options, help and behaviour.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

try:
    import click
except ModuleNotFoundError as exc:  # pragma: no cover - exercised by test_cli_missing_click
    from ...errors import MissingExtraError

    raise MissingExtraError("click", "cli", "the memdiag command line") from exc

from ... import __version__
from .._options import CONTEXT
from .._spec import click_options
from . import COMMANDS
from ._common import CommandError

__all__ = ["LazyGroup", "claude_pm_group", "memory_group", "spec_command"]


class _ClickCommandError(click.ClickException):
    """A :class:`CommandError` as click shows it: ``Error: ...`` and its exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@contextmanager
def _click_errors() -> Iterator[None]:
    try:
        yield
    except CommandError as exc:
        raise _ClickCommandError(exc.message, exc.exit_code) from None


def spec_command(module: ModuleType, name: str) -> click.Command:
    """The click command of a command written without click (``module.SPEC`` and the
    function ``module.<name>``)."""
    fn: Callable[..., Any] = getattr(module, name)

    @functools.wraps(fn)
    def callback(**kwargs: Any) -> Any:
        with _click_errors():
            return fn(**kwargs)

    return click.command(name, context_settings=CONTEXT, params=click_options(module.SPEC.options))(callback)


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
            module = importlib.import_module(f"{__package__}.{cmd_name}")
            command = getattr(module, cmd_name)
            if not isinstance(command, click.Command):
                if not hasattr(module, "SPEC"):  # pragma: no cover - a programming error
                    raise TypeError(f"{module.__name__}.{cmd_name} is not a click command")
                command = spec_command(module, cmd_name)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        with _click_errors():  # a click command's fail() too
            return super().invoke(ctx)


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
