"""``memdiag configure``: show or change settings of the running service; save them to the
config file only when asked (``--persist``), naming the file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .._format import spinner
from .._options import CONTEXT, ConfigCommand, collect_config, json_option, target_options
from ._common import call, echo_json, fail, resolve

if TYPE_CHECKING:
    from .._target import Target

__all__ = ["configure"]


@click.command(cls=ConfigCommand, context_settings=CONTEXT)
@click.option("--local", is_flag=True, help="Only save to the config file; do not contact a running service.")
@click.option(
    "--persist/--no-persist",
    default=False,
    help="Also save the change to the config file, for services started later (default: "
    "only the running service changes).",
)
@json_option
@target_options
def configure(
    local: bool,
    persist: bool,
    as_json: bool,
    pid: int | None,
    url: str | None,
    token: str | None,
    timeout: float,
    **kwargs: Any,
) -> None:
    """Show or change settings of the running service (it alone changes).

    --persist also saves the change to the config file (named in the output), which every
    service started later reads. With no flags, prints the current configuration. An
    invalid value exits with status 2, names the field, and changes nothing. With no
    service running (or --local), the change is saved to the config file for services
    started from now on.
    """
    from ...config import MemoryConfig
    from ...errors import ConfigError
    from .._target import Target

    changes = collect_config(kwargs)
    try:
        typed_cfg = MemoryConfig().updated(changes)
    except ConfigError as exc:
        fail(str(exc))
    typed = {k: getattr(typed_cfg, k) for k in changes}
    ctx = click.get_current_context()
    if local and not persist and ctx.get_parameter_source("persist") is click.core.ParameterSource.COMMANDLINE:
        fail("--local and --no-persist together would change nothing")
    target = (
        Target("machine")
        if local
        else resolve(pid, url, token, timeout, "configure --pid" if pid is not None else None)
    )
    if target.kind == "service":
        _configure_service(target, typed, persist=persist, as_json=as_json)
    else:
        _configure_file(typed, local=local, as_json=as_json)


def _configure_service(target: Target, typed: dict[str, Any], *, persist: bool, as_json: bool) -> None:
    """Show the service's settings, or change them live (and in its config file if ``persist``)."""
    from .._client import ApiError
    from .._render import render_config

    if not typed:
        resp = call(target, "GET", "/api/memory/configure")
        if as_json:
            echo_json(resp.body, resp.text)
        else:
            click.echo(render_config((resp.body or {}).get("config") or {}, source=target.label))
        return
    try:
        assert target.client is not None
        with spinner(f"configuring {target.label}"):
            resp = target.client.post("/api/memory/configure", {**typed, "persist": persist})
    except ApiError as exc:
        if exc.status == 422 and isinstance(exc.body, dict):
            fields = exc.body.get("fields") or {}
            detail = "; ".join(f"{k}: {v}" for k, v in sorted(fields.items())) or exc.body.get("error", "")
            fail(f"invalid configuration: {detail} (nothing was changed)")
        fail(f"{target.label}: {exc}", 2 if exc.unreachable or exc.status in (401, 404) else 1)
    if as_json:
        echo_json(resp.body, resp.text)
        return
    body = resp.body or {}
    changed = body.get("changed") or []
    if body.get("persisted"):
        where = f"applied, and saved to {body.get('path') or 'its config file'} for services started later"
    else:
        where = "applied to this service only (not saved; --persist saves it for services started later)"
    click.echo(f"{target.label}: {where}; changed: {', '.join(changed) or 'nothing (already set)'}")
    config = body.get("config") or {}
    for k in typed:
        click.echo(f"  {k} = {config.get(k, typed[k])}")


def _configure_file(typed: dict[str, Any], *, local: bool, as_json: bool) -> None:
    """No service (or ``--local``): show the config file, or save the changes to it."""
    from ...config import default_config_path, load_config, save_config
    from ...errors import ConfigError
    from .._render import render_config

    try:
        current = load_config()
    except ConfigError as exc:
        fail(f"the config file or environment is invalid: {exc}")
    path = default_config_path()
    if not typed:
        if as_json:
            echo_json({"config": current.to_dict(), "path": str(path), "service": None})
        else:
            click.echo(render_config(current.to_dict(), source=f"{path} (+ MEMDIAG_* environment; no service running)"))
        return
    try:
        saved = save_config(typed)
    except ConfigError as exc:
        fail(f"{exc} (nothing was changed)")
    except OSError as exc:
        fail(f"could not save {path}: {exc}", 1)
    new = load_config()
    if as_json:
        changed = sorted(current.diff(new))
        echo_json({"config": new.to_dict(), "changed": changed, "persisted": True, "path": str(saved), "service": None})
        return
    lead = "Saved" if local else "No running memdiag service; saved"
    click.echo(f"{lead} to {saved}; services started from now on use it.")
    for k in typed:
        click.echo(f"  {k} = {getattr(new, k)}")
