"""The options commands share: the target (``--pid``/``--url``/``--token``/``--timeout``),
``--json``, the context settings, and one flag for every configuration field.

The target options and ``--json`` are declared in :mod:`._spec` (the commands that start
without click parse them from there too). The configuration flags are generated from ``FIELD_INFO``. Each field gets
``--field-name VALUE`` (``--flag/--no-flag`` for booleans), plus the specification's
aliases:

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
from typing import TYPE_CHECKING, Any

import click

from ._spec import JSON, TARGET

if TYPE_CHECKING:
    from ..config import FieldInfo

__all__ = ["ALIASES", "CONTEXT", "ConfigCommand", "collect_config", "json_option", "target_options"]

CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None:
        ctx.meta[f"memdiag_{param.name}"] = value
    return value


def target_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--pid N``, ``--name NAME``, ``--url URL``, ``--token`` and ``--timeout``: which
    service or process (the options of :data:`memdiag.cli._spec.TARGET`). ``--name`` is
    not passed to the command: :func:`resolve` reads it from the context."""
    for opt in reversed(TARGET):
        extra: dict[str, Any] = {}
        if opt.dest == "target_name":
            extra = {"expose_value": False, "callback": _remember}
        fn = click.option(*opt.decls, **opt.click_kwargs(), **extra)(fn)
    return fn


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: the report as JSON (passed to the command as ``as_json``)."""
    return click.option(*JSON.decls, **JSON.click_kwargs())(fn)


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
        return "MiB"
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


def _field_param(info: FieldInfo) -> click.Option:
    flag = "--" + info.name.replace("_", "-")
    if info.type is bool:
        return click.Option([f"{flag}/--no-{flag[2:]}", _PREFIX + info.name], default=None, help=_help(info))
    return click.Option([flag, _PREFIX + info.name], default=None, metavar=_metavar(info), help=_help(info))


def _alias_param(param: str) -> click.Option:
    from ..config import FIELD_INFO

    field, decl, help_text = ALIASES[param]
    info = FIELD_INFO[field]
    metavar = None if info.type is bool else _metavar(info)
    return click.Option([decl, _PREFIX + "alias__" + param], default=None, metavar=metavar, help=help_text)


class ConfigCommand(click.Command):
    """A command that also takes one option per config field (and the spec's aliases).

    The ~40 options are built on first use (parsing or help), not at import: a command
    that does not take them (``profile``) does not pay for them at start-up.
    """

    _config_params_added = False

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not self._config_params_added:
            from ..config import FIELD_INFO

            self._config_params_added = True
            fields = [_alias_param(a) for a in ALIASES] + [_field_param(i) for i in FIELD_INFO.values()]
            self.params[:0] = fields
        return super().get_params(ctx)


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
