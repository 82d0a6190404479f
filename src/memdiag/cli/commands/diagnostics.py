"""``memdiag diagnostics``: the full report of a service (or the outside view)."""

from __future__ import annotations

from .._spec import JSON, TARGET, Spec
from ._common import outside, show, source, target_of

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["SPEC", "diagnostics"]

SPEC = Spec("diagnostics", (JSON, *TARGET))


def diagnostics(as_json: bool, **target_options: Any) -> None:
    """Full diagnostics: thresholds, subprocesses, allocations, leaks, trends, cleanups."""
    target = target_of(target_options)
    if target.kind != "service":
        outside(target, as_json, diagnostics=True)
        return
    show(target, "/api/memory/diagnostics", as_json, "render_diagnostics", source=source(target))
