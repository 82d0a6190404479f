"""``memdiag leaks``: the service's leak report."""

from __future__ import annotations

from .._spec import JSON, TARGET, Spec
from ._common import show, target_of

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["SPEC", "leaks"]

SPEC = Spec("leaks", (JSON, *TARGET))


def leaks(as_json: bool, **target_options: Any) -> None:
    """Leak report: growth trends, suspects and their allocation sites."""
    target = target_of(target_options, "leaks")
    show(target, "/api/memory/leaks", as_json, "render_leaks", timeout=max(target_options["timeout"], 30.0))
