"""aiohttp adapter: ``add_memory_routes(app)`` or ``app.add_subapp("/ops", memory_app())``.

The handlers hold no logic: what :meth:`MemoryAPI.try_handle` has ready (a cached
profile, an error) is answered on the loop; every other request goes to
:meth:`MemoryAPI.handle` in the loop's default executor, so the event loop never waits on
a sample or a cleanup.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..errors import MissingExtraError
from ._adapter import API_PREFIX, PATHS, resolve_api

try:
    from aiohttp import web
    from multidict import CIMultiDict
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("aiohttp", "aiohttp", "memdiag.http.aiohttp") from exc

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..service import MemoryDiagnostics
    from .core import MemoryAPI

__all__ = ["API_KEY", "add_memory_routes", "memory_app"]

#: Where :func:`memory_app` keeps its :class:`MemoryAPI` (``app[API_KEY].token``).
API_KEY: web.AppKey[MemoryAPI] = web.AppKey("memdiag_api")


async def _read_body(request: web.Request, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the body: enough for the core to answer 413."""
    if request.content_length is not None and request.content_length > limit:
        return b""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def add_memory_routes(
    app: web.Application | web.UrlDispatcher,
    diag: MemoryDiagnostics | None = None,
    *,
    token: str | None = None,
    api: MemoryAPI | None = None,
) -> MemoryAPI:
    """Add the memory API's routes to ``app`` (or its router); returns the :class:`MemoryAPI`.

    Args:
        app: the application or its ``router``.
        diag: the monitor to serve; ``None``: the shared one, resolved per request.
        token: the bearer token; ``None``: ``api_token`` from the config, else generated
            (read it from the returned API's ``token``).
        api: a ready :class:`~memdiag.http.core.MemoryAPI` instead of ``diag``/``token``.
    """
    core = resolve_api(diag, token, api)
    router = app.router if isinstance(app, web.Application) else app

    def handler(path: str | None) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            target = path if path is not None else f"{API_PREFIX}/{request.match_info.get('rest', '')}"
            body = await _read_body(request, core.max_body)
            query = {k: request.query.getall(k) for k in request.query}
            # Cached reads and errors are answered on the loop; reports go to the executor.
            r = core.try_handle(request.method, target, query, request.headers, body, client=request.remote)
            if r is None:
                loop = asyncio.get_running_loop()
                r = await loop.run_in_executor(
                    None,
                    lambda: core.handle(request.method, target, query, request.headers, body, client=request.remote),
                )
            out = web.Response(body=r.body, status=r.status, headers=CIMultiDict(r.headers))
            if r.status == 413:  # the unread body must not be parsed as the next request
                out.force_close()
            return out

        return handle

    for path in PATHS:
        router.add_route("*", path, handler(path))
    router.add_route("*", f"{API_PREFIX}/{{rest:.*}}", handler(None))
    return core


def memory_app(
    diag: MemoryDiagnostics | None = None,
    *,
    token: str | None = None,
    api: MemoryAPI | None = None,
) -> web.Application:
    """A sub-application serving the memory API: ``app.add_subapp("/ops", memory_app())``.

    Its :class:`MemoryAPI` (and token) is ``sub_app[API_KEY]``. Arguments as for
    :func:`add_memory_routes`.
    """
    sub = web.Application()
    sub[API_KEY] = add_memory_routes(sub, diag, token=token, api=api)
    return sub
