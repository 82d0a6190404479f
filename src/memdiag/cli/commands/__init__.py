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

The commands people run most (:data:`FAST`) are written without click: the module
defines the function ``NAME`` and ``SPEC``, its options (:mod:`memdiag.cli._spec`); the
click command is built from them when the group needs it, and
:mod:`memdiag.cli._fast` runs them without importing click at all.

This package imports no click itself: the groups (``memory_group``, ``claude_pm_group``)
live in :mod:`._group` and are loaded on first use.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["COMMANDS", "FAST", "LazyGroup", "claude_pm_group", "memory_group"]

#: The commands of the ``memory`` group: each is ``memdiag.cli.commands.<name>.<name>``.
COMMANDS = ("cleanup", "configure", "demo", "diagnostics", "history", "leaks", "profile", "ps", "run", "watch")

#: The commands that start without click (a function and its ``SPEC`` in their module).
FAST = ("cleanup", "diagnostics", "leaks", "profile", "ps")


def __getattr__(name: str) -> Any:
    if name in ("LazyGroup", "claude_pm_group", "memory_group"):
        value = getattr(importlib.import_module(f"{__name__}._group"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
