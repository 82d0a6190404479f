"""Command-line flags for every configuration field, generated from ``FIELD_INFO``.

Each field gets ``--field-name VALUE`` (``--flag/--no-flag`` for booleans), plus the
specification's aliases:

* ``--threshold MB`` is ``memory_threshold_mb``;
* ``--auto-cleanup/--no-auto-cleanup`` is ``enable_auto_cleanup``;
* ``--interval S`` is ``sample_interval``: how often the background monitor samples,
  which is what decides how soon pressure is noticed. The heavier profile keeps its own
  ``--profile-interval``.

Values are taken as text and converted by :meth:`memdiag.MemoryConfig.updated`, so a bad
value is reported with the *field's* name and reason, exactly as the API and the
environment report it. ``none`` clears a nullable field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..config import FIELD_INFO, FieldInfo

__all__ = ["ALIASES", "collect_config", "config_options"]

_PREFIX = "cfg__"
ALIASES: dict[str, tuple[str, str, str | None]] = {
    # param name: (field, flag declaration, help override)
    "threshold": ("memory_threshold_mb", "--threshold", "Memory threshold in MB (memory_threshold_mb)."),
    "auto_cleanup": (
        "enable_auto_cleanup",
        "--auto-cleanup/--no-auto-cleanup",
        "Enable or disable automatic cleanup on pressure (enable_auto_cleanup).",
    ),
    "interval": (
        "sample_interval",
        "--interval",
        "Seconds between monitoring samples (sample_interval); see also --profile-interval.",
    ),
}


def _metavar(info: FieldInfo) -> str:
    if info.type is str:
        return "CHOICE" if info.choices else "TEXT"
    if info.ratio:
        return "RATIO"
    name = info.name
    if name.endswith("_mb"):
        return "MB"
    if name.endswith(("_seconds", "_interval", "_cooldown")) or name == "cleanup_cooldown":
        return "SECONDS"
    if name.endswith("_days"):
        return "DAYS"
    return "N" if info.type is int else "NUMBER"


def _help(info: FieldInfo) -> str:
    text = info.help.rstrip(".")
    extra = []
    if info.choices:
        extra.append("one of " + ", ".join(info.choices))
    if info.nullable:
        extra.append("'none' clears it")
    default = info.default
    extra.append(f"default {default!r}" if default is not None else "default none")
    return f"{text} ({'; '.join(extra)})."


def config_options(*, aliases: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator adding one option per config field (and the spec's aliases)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        # click shows options in the order applied from the bottom up: add fields in
        # reverse so --help lists them in FIELD_INFO's order, aliases first.
        for name, info in reversed(list(FIELD_INFO.items())):
            flag = "--" + name.replace("_", "-")
            param = _PREFIX + name
            if info.type is bool:
                fn = click.option(f"{flag}/--no-{flag[2:]}", param, default=None, help=_help(info))(fn)
            else:
                fn = click.option(flag, param, default=None, metavar=_metavar(info), help=_help(info))(fn)
        if aliases:
            for param, (field, decl, help_text) in reversed(list(ALIASES.items())):
                info = FIELD_INFO[field]
                if info.type is bool:
                    fn = click.option(decl, _PREFIX + "alias__" + param, default=None, help=help_text)(fn)
                else:
                    fn = click.option(
                        decl, _PREFIX + "alias__" + param, default=None, metavar=_metavar(info), help=help_text
                    )(fn)
        return fn

    return decorate


def collect_config(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the config options from a command's ``kwargs``: ``{field: raw value}``.

    Raises:
        click.UsageError: an alias and its field were given different values.
    """
    changes: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key in [k for k in kwargs if k.startswith(_PREFIX)]:
        value = kwargs.pop(key)
        if value is None:
            continue
        name = key[len(_PREFIX) :]
        if name.startswith("alias__"):
            alias = name[len("alias__") :]
            field, decl, _ = ALIASES[alias]
            label = decl.split("/")[0]
        else:
            field, label = name, "--" + name.replace("_", "-")
        if field in changes and changes[field] != value:
            raise click.UsageError(f"{label} and {given_as[field]} set {field} to different values")
        changes[field] = value
        given_as[field] = label
    return changes
