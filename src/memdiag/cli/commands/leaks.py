"""``memdiag leaks``: the service's leak report."""

from __future__ import annotations

from typing import Any

from .._spec import JSON, TARGET, Spec
from ._common import show, target_of

__all__ = ["SPEC", "leaks"]

SPEC = Spec("leaks", (JSON, *TARGET))


def leaks(as_json: bool, **target_options: Any) -> None:
    """Leak report: growth trends, suspects and their allocation sites."""
    target = target_of(target_options, "leaks")
    show(target, "/api/memory/leaks", as_json, "render_leaks", timeout=max(target_options["timeout"], 30.0))
