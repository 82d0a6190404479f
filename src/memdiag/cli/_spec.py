"""The options of the commands that start without click, as one table each.

One source of truth for two readers: :func:`click_options` turns a table into the click
options of the command (what ``--help`` shows and what a host CLI mounts), and
:func:`parse` reads a command line with it without importing click (the fast start of
:mod:`memdiag.cli._fast`). :func:`parse` understands the plain cases only (``--opt VALUE``,
``--opt=VALUE``, flags, the option's environment variable, the same conversions and
bounds as click's types); anything else (help, a short option, an argument, a value it
cannot convert, an option it does not know) returns ``None`` and click parses the line
instead, so every error message and usage text is click's own.

This module imports nothing beyond the standard library's core.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["JSON", "TARGET", "Opt", "Spec", "click_options", "parse"]

_UNSET: Any = object()  # "not given" (None is a default some options have)


class Opt:
    """One option, as given to ``click.option``.

    Attributes:
        decls: the declarations (``("--json", "as_json")``): flags first, then the name.
        help: the help text.
        kind: ``"flag"``, ``"str"``, ``"int"``, ``"float"`` (``click.FloatRange(min=minimum)``
            with ``minimum``), ``"choice"`` (``click.Choice(choices)``) or ``"path"``
            (``click.Path(dir_okay=False, writable=True)``; parsed by click only).
        default: the default (left out of the click option when not given).
        metavar, show_default, envvar: as in click.

    (A plain class: a NamedTuple class costs a tenth of a millisecond to create, and this
    module is on the path of every command.)
    """

    __slots__ = ("choices", "decls", "default", "envvar", "help", "kind", "metavar", "minimum", "show_default")

    def __init__(
        self,
        decls: tuple[str, ...],
        help: str,
        kind: str = "str",
        *,
        default: Any = _UNSET,
        minimum: float | None = None,
        choices: tuple[str, ...] = (),
        metavar: str | None = None,
        show_default: bool = False,
        envvar: str | None = None,
    ) -> None:
        self.decls = decls
        self.help = help
        self.kind = kind
        self.default = default
        self.minimum = minimum
        self.choices = choices
        self.metavar = metavar
        self.show_default = show_default
        self.envvar = envvar

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(d for d in self.decls if d.startswith("-"))

    @property
    def dest(self) -> str:
        """The parameter's name: the declared one, else the first long flag's."""
        names = [d for d in self.decls if not d.startswith("-")]
        return names[0] if names else self.flags[0].lstrip("-").replace("-", "_")

    def click_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``click.option`` for this option (click imported here)."""
        import click

        kw: dict[str, Any] = {"help": self.help}
        if self.kind == "flag":
            kw["is_flag"] = True
        elif self.kind == "int":
            kw["type"] = int
        elif self.kind == "float":
            kw["type"] = click.FloatRange(min=self.minimum) if self.minimum is not None else float
        elif self.kind == "choice":
            kw["type"] = click.Choice(list(self.choices))
        elif self.kind == "path":
            kw["type"] = click.Path(dir_okay=False, writable=True)
        if self.default is not _UNSET:
            kw["default"] = self.default
        if self.metavar is not None:
            kw["metavar"] = self.metavar
        if self.show_default:
            kw["show_default"] = True
        if self.envvar is not None:
            kw["envvar"] = self.envvar
        return kw


class Spec:
    """A command that starts without click: its name and options (in ``--help`` order)."""

    __slots__ = ("name", "options")

    def __init__(self, name: str, options: tuple[Opt, ...]) -> None:
        self.name = name
        self.options = options


#: ``--json`` (passed to the command as ``as_json``).
JSON = Opt(("--json", "as_json"), "Print the report as JSON (the HTTP API's own JSON for a service).", "flag")

#: Which service or process: ``--pid``, ``--url``, ``--token``, ``--timeout``, ``--name``.
TARGET = (
    Opt(
        ("--pid",),
        "Target process N (a memdiag service, or any process seen from outside).",
        "int",
        default=None,
        metavar="N",
    ),
    Opt(("--url",), "Talk to the service whose API is at URL.", default=None, metavar="URL"),
    Opt(
        ("--token",),
        "API token (default: the service's 0600 token file; env MEMDIAG_API_TOKEN).",
        default=None,
        envvar="MEMDIAG_API_TOKEN",
    ),
    Opt(
        ("--timeout",),
        "Seconds to wait for the service's answer.",
        "float",
        default=5.0,
        minimum=0.1,
        show_default=True,
    ),
    Opt(
        ("--name", "target_name"),
        "Target the one running memdiag service called NAME (as `memdiag ps` shows it).",
        default=None,
        metavar="NAME",
    ),
)


def click_options(options: Sequence[Opt]) -> list[Any]:
    """The ``click.Option`` objects of ``options``, in the same order."""
    import click

    return [click.Option(list(o.decls), **o.click_kwargs()) for o in options]


def _convert(opt: Opt, text: str) -> Any:
    """``text`` converted as click's type for ``opt`` would; ``_UNSET`` when in doubt."""
    kind = opt.kind
    if kind == "str":
        return text
    if kind == "choice":
        return text if text in opt.choices else _UNSET
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            value = float(text)
            return value if opt.minimum is None or value >= opt.minimum else _UNSET
    except ValueError:
        return _UNSET
    return _UNSET  # a path: click checks it


def parse(options: Sequence[Opt], argv: Sequence[str]) -> dict[str, Any] | None:
    """``{name: value}`` for ``argv`` as click would pass them to the command, or ``None``
    when click should parse ``argv`` (see the module's docstring)."""
    by_flag = {f: o for o in options for f in o.flags}
    given: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, inline = arg.partition("=")
        opt = by_flag.get(flag) if arg.startswith("--") else None
        if opt is None:
            return None  # help, a short option, an argument, "--", a typo: click's job
        if opt.kind == "flag":
            if eq:
                return None
            given[opt.dest] = True
            i += 1
            continue
        if eq:
            text = inline
        elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            text = argv[i + 1]
            i += 1
        else:
            return None
        value = _convert(opt, text)
        if value is _UNSET:
            return None
        given[opt.dest] = value
        i += 1
    values: dict[str, Any] = {}
    for opt in options:
        if opt.dest in given:
            values[opt.dest] = given[opt.dest]
            continue
        env = os.environ.get(opt.envvar) if opt.envvar else None
        if env:
            value = _convert(opt, env)
            if value is _UNSET:
                return None
            values[opt.dest] = value
        elif opt.kind == "flag":
            values[opt.dest] = False if opt.default is _UNSET else opt.default
        else:
            values[opt.dest] = None if opt.default is _UNSET else opt.default
    return values
