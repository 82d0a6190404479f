"""``memdiag cleanup``: ask the service to free memory (the cooldown applies unless --force)."""

from __future__ import annotations

import sys

from .._spec import JSON, TARGET, Opt, Spec
from ._common import call, echo, echo_json, target_of

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["SPEC", "cleanup"]

SPEC = Spec(
    "cleanup",
    (
        Opt(("--force",), "Run now, even inside the cleanup cooldown.", "flag"),
        Opt(("--dry-run",), "Only report what would be freed.", "flag", default=None),
        JSON,
        *TARGET,
    ),
)


def cleanup(force: bool, dry_run: bool | None, as_json: bool, **target_options: Any) -> None:
    """Free memory in the service: caches, gc, malloc_trim, zombies (respects the cooldown).

    Exits 1 when the cleanup was skipped (cooldown, or one already running), saying when
    it may run again.
    """
    target = target_of(target_options, "cleanup")
    body: dict[str, Any] = {"force": force}
    if dry_run:
        body["dry_run"] = True
    resp = call(target, "POST", "/api/memory/cleanup", body, timeout=max(target_options["timeout"], 30.0))
    data = resp.body if isinstance(resp.body, dict) else {}
    refused = resp.status == 429
    result = data.get("result") if refused else data  # a refusal carries the skipped run
    if as_json:
        echo_json(data, resp.text)
    elif isinstance(result, dict):
        from .._render import render_cleanup

        echo(render_cleanup(result))
    else:  # the API's per-client rate limit, not the cleanup cooldown
        wait = data.get("retry_after_seconds") or resp.headers.get("retry-after")
        echo(f"Cleanup refused: {data.get('error', 'too many requests')}; retry in {wait}s")
    if refused:
        sys.exit(1)
