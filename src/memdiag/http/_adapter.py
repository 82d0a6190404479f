"""What the framework adapters share: the routes to mount and the API to mount them for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .core import API_PREFIX, PATHS, MemoryAPI

if TYPE_CHECKING:
    from ..service import MemoryDiagnostics

__all__ = ["ALL_METHODS", "API_PREFIX", "PATHS", "resolve_api"]

# Every route takes every method, so the core answers 405 (with Allow) the same way
# in each framework instead of the framework's own error page.
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def resolve_api(diag: MemoryDiagnostics | None, token: str | None, api: MemoryAPI | None) -> MemoryAPI:
    """``api`` if given, else a new :class:`MemoryAPI` over ``diag`` with ``token``."""
    if api is not None:
        if diag is not None or token is not None:
            raise TypeError("pass either api=... or diag/token, not both")
        return api
    return MemoryAPI(diag, token)
