"""Flask adapter: ``app.register_blueprint(memory_blueprint())``.

The blueprint holds no logic: each request goes to :meth:`MemoryAPI.handle`, with the
body read only up to the API's limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import MissingExtraError
from ._adapter import ALL_METHODS, API_PREFIX, PATHS, resolve_api

try:
    from flask import Blueprint, request
    from flask import Response as FlaskResponse
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("flask", "flask", "memdiag.http.flask") from exc

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..service import MemoryDiagnostics
    from .core import MemoryAPI

__all__ = ["memory_blueprint"]


class _Response(FlaskResponse):
    default_mimetype = None  # the core sets Content-Type; a 204 has none


def memory_blueprint(
    diag: MemoryDiagnostics | None = None,
    *,
    token: str | None = None,
    api: MemoryAPI | None = None,
    name: str = "memdiag",
) -> Blueprint:
    """A ``Blueprint`` serving the memory API (``/api/memory/...``, ``/metrics``, the dashboard).

    Args:
        diag: the monitor to serve; ``None``: the shared one, resolved per request.
        token: the bearer token; ``None``: ``api_token`` from the config, else generated
            (read it from ``blueprint.memdiag_api.token``).
        api: a ready :class:`~memdiag.http.core.MemoryAPI` instead of ``diag``/``token``.
        name: the blueprint's name (change it to register two of them).
    """
    core = resolve_api(diag, token, api)
    bp = Blueprint(name, __name__)

    def view(path: str | None) -> Callable[..., FlaskResponse]:
        def handle(rest: str = "") -> FlaskResponse:
            target = path if path is not None else f"{API_PREFIX}/{rest}"
            length = request.content_length
            body = b"" if length is not None and length > core.max_body else request.stream.read(core.max_body + 1)
            query = {k: request.args.getlist(k) for k in request.args}
            r = core.handle(request.method, target, query, request.headers, body, client=request.remote_addr)
            return _Response(r.body, status=r.status, headers=r.headers)

        handle.provide_automatic_options = False  # type: ignore[attr-defined]  # the core answers OPTIONS
        return handle

    for i, path in enumerate(PATHS):
        bp.add_url_rule(path, endpoint=f"route{i}", view_func=view(path), methods=list(ALL_METHODS))
    unknown = view(None)
    bp.add_url_rule(f"{API_PREFIX}/", endpoint="unknown_root", view_func=unknown, methods=list(ALL_METHODS))
    bp.add_url_rule(f"{API_PREFIX}/<path:rest>", endpoint="unknown", view_func=unknown, methods=list(ALL_METHODS))
    bp.memdiag_api = core  # type: ignore[attr-defined]
    return bp
