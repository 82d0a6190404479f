"""FastAPI adapter: ``app.include_router(memory_router())``.

The router holds no logic: each request's method, path, query, headers and (bounded)
body go to :meth:`MemoryAPI.try_handle` on the loop (a cached profile, an error) and,
when that has no answer ready, to :meth:`MemoryAPI.handle` in a worker thread, so the
event loop never waits on a sample or a cleanup.

It is *one* route, whose path matches every path of the API (a path convertor holding
one regular expression): FastAPI tries the routes of an app in order for every request,
and each candidate route costs the app's own requests a match, with a per-route overhead
that grew to ~17k instructions in FastAPI 0.16x. With one route per endpoint (16) the
app's requests got ~27 % more CPU once the router was included ahead of its routes
(issue 16: p50 +13 %, p99 +27 % in ``benchmarks/bench_servers.py``).
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from ..errors import MissingExtraError
from ._adapter import ALL_METHODS, API_PREFIX, PATHS, resolve_api

try:
    from fastapi import APIRouter, Request
    from fastapi import Response as FastAPIResponse
    from starlette.convertors import Convertor, register_url_convertor
    from starlette.routing import Match
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("fastapi", "fastapi", "memdiag.http.fastapi") from exc

if TYPE_CHECKING:
    from ..service import MemoryDiagnostics
    from .core import MemoryAPI

__all__ = ["memory_router"]

_CONVERTOR = "memdiag_api_path"
_PARAM = "memdiag_path"


class _APIPathConvertor(Convertor[str]):
    """Matches exactly the paths the API serves, without the leading slash: everything
    under the API prefix (unknown ones get the core's 404) and the paths outside it."""

    regex = "|".join(
        [re.escape(API_PREFIX[1:]) + "/.*"] + [re.escape(p[1:]) for p in PATHS if not p.startswith(API_PREFIX + "/")]
    )

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor(_CONVERTOR, _APIPathConvertor())

# A path that contains none of these is none of the API's, under any prefix or root path.
_MAYBE_OURS = re.compile(
    "|".join(re.escape(p) for p in sorted({API_PREFIX} | {p for p in PATHS if not p.startswith(API_PREFIX + "/")}))
).search


class _MemoryRouter(APIRouter):
    """The router, with a cheap refusal of the application's own paths.

    FastAPI 0.165 keeps an included router as one candidate of the app's routes and asks
    it to match every request that reaches it: about 40 function calls (FastAPI's scope
    bookkeeping, its route contexts, then our route's regular expression) before the
    app's own route is tried, +3 % instructions per request of a small app
    (``benchmarks/bench_servers.py --count``). A path without any of the API's paths in
    it is refused here in one regular-expression search; any other path takes FastAPI's
    full match. FastAPI versions that copy an included router's routes into the app never
    call this (there the one route's own match is the cost).
    """

    def matches(self, scope: Any) -> Any:
        path = scope.get("path")
        if type(path) is str and _MAYBE_OURS(path) is None:
            return Match.NONE, {}
        return super().matches(scope)  # type: ignore[misc]


#: The router's one path: any path of the API (a prefix given to ``include_router`` goes before it).
ROUTE_PATH = f"/{{{_PARAM}:{_CONVERTOR}}}"


async def _read_body(request: Request, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the body: enough for the core to answer 413."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return b""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)[: limit + 1]


def memory_router(
    diag: MemoryDiagnostics | None = None,
    *,
    token: str | None = None,
    api: MemoryAPI | None = None,
) -> APIRouter:
    """An ``APIRouter`` serving the memory API (``/api/memory/...``, ``/metrics``, the dashboard).

    Args:
        diag: the monitor to serve; ``None``: the shared one, resolved per request.
        token: the bearer token; ``None``: ``api_token`` from the config, else generated
            (read it from ``router.memdiag_api.token``).
        api: a ready :class:`~memdiag.http.core.MemoryAPI` instead of ``diag``/``token``.

    The routes are left out of the app's own OpenAPI document; the API describes itself
    at ``/api/memory/openapi.json``.
    """
    core = resolve_api(diag, token, api)
    router = _MemoryRouter()

    async def handle(request: Request) -> FastAPIResponse:
        target = "/" + request.path_params.get(_PARAM, "")
        body = await _read_body(request, core.max_body)
        client = request.client.host if request.client else None
        query = dict(request.query_params)
        # Cached reads and errors are answered on the loop; reports go to a thread.
        r = core.try_handle(request.method, target, query, request.headers, body, client=client)
        if r is None:
            r = await asyncio.to_thread(
                core.handle, request.method, target, query, request.headers, body, client=client
            )
        return FastAPIResponse(content=r.body, status_code=r.status, headers=dict(r.headers))

    # One route for the whole API (see the module's docstring); unknown paths under the
    # API prefix get the core's 404, not the framework's.
    router.add_api_route(ROUTE_PATH, handle, methods=list(ALL_METHODS), include_in_schema=False)
    router.memdiag_api = core  # type: ignore[attr-defined]
    return router
