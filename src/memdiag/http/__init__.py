"""The memory API over HTTP: one framework-neutral core and thin adapters.

- :class:`MemoryAPI` (``memdiag.http.core``): ``handle(method, path, query, headers, body)``.
- :func:`start_api_server` / :func:`serve` (``memdiag.http.server``): the standalone server.
- ``memdiag.http.fastapi.memory_router``, ``memdiag.http.flask.memory_blueprint``,
  ``memdiag.http.aiohttp.memory_app`` / ``add_memory_routes``: framework adapters,
  imported only when used (each needs its extra: ``pip install 'memdiag[fastapi]'``).
"""

from __future__ import annotations

import importlib
from typing import Any

from .core import API_PREFIX, MemoryAPI, Response

__all__ = ["API_PREFIX", "ApiServer", "MemoryAPI", "Response", "serve", "start_api_server"]

_LAZY = {"ApiServer": ".server", "serve": ".server", "start_api_server": ".server"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memdiag.http' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
