"""Mounting the memory API in an application adds no work to the application's own requests.

FastAPI tries an app's routes in order for every request, and each candidate route costs
it a match (~17k instructions per route in FastAPI 0.16x, before the app's route is even
reached when the router was included first). ``memory_router()`` is therefore one route
whose path matches exactly the API's paths (issue 16: with one route per endpoint the
app's own requests cost ~27 % more CPU, p50 +13 % and p99 +27 % under uvicorn).

The app runs for real in-process: its ASGI callable is driven with real requests (no
socket is needed to see which handler answers; the served API over sockets is in
tests/test_http_api.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from memdiag.http.core import API_PREFIX, PATHS, MemoryAPI
from memdiag.service import MemoryDiagnostics

TOKEN = "test-token-0123456789abcdef"


def _get(app: Any, path: str, token: str | None = None) -> tuple[int, bytes]:
    """One real ``GET path`` through the ASGI app: (status, body)."""
    headers = [(b"host", b"test")] + ([(b"authorization", f"Bearer {token}".encode())] if token else [])
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": headers,
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


FASTAPI_404 = {"detail": "Not Found"}


@pytest.fixture
def api(diag: MemoryDiagnostics) -> Iterator[MemoryAPI]:
    yield MemoryAPI(diag, TOKEN)


def test_fastapi_router_is_one_route_and_leaves_the_apps_requests_alone(api: MemoryAPI) -> None:
    from fastapi import FastAPI

    from memdiag.http.fastapi import memory_router

    calls: list[str] = []
    try_handle = api.try_handle

    def counting_try(method: str, target: str, *a: object, **kw: object) -> object:
        calls.append(target)
        return try_handle(method, target, *a, **kw)  # type: ignore[arg-type]

    api.try_handle = counting_try  # type: ignore[method-assign]

    router = memory_router(api=api)
    assert len(router.routes) == 1, "each route memdiag adds is matched against every request of the app"

    app = FastAPI()
    app.include_router(router)  # first: ahead of the app's own routes
    app.include_router(memory_router(api=api), prefix="/ops")

    @app.get("/")
    def index() -> dict[str, str]:
        return {"app": "index"}

    @app.get("/metrics-of-the-app")
    def own_metrics() -> dict[str, str]:
        return {"app": "metrics"}

    # The application's paths, including ones that start like the API's: the app answers.
    for path in ("/", "/metrics-of-the-app"):
        status, body = _get(app, path)
        assert status == 200 and json.loads(body)["app"], path
    for path in (API_PREFIX + "x", "/metrics/x", "/memory/dashboardx", "/ops", "/ops/api/memoryx"):
        status, body = _get(app, path)
        assert status == 404 and json.loads(body) == FASTAPI_404, path
    assert _get(app, API_PREFIX)[0] == 307  # FastAPI's redirect to the API's "/api/memory/"
    assert calls == [], "memdiag's handler ran for a request of the application"

    # Every path of the API, with and without the prefix, reaches memdiag with its own path.
    for prefix in ("", "/ops"):
        for path in (*PATHS, API_PREFIX + "/no-such-endpoint", API_PREFIX + "/"):
            calls.clear()
            status, body = _get(app, prefix + path, TOKEN)
            assert calls == [path], (prefix, path, status)
            assert b'"detail":"Not Found"' not in body.replace(b" ", b""), (prefix, path)
    status, body = _get(app, API_PREFIX + "/no-such-endpoint")
    assert status == 404 and json.loads(body)["error"] == "not found"  # the core's 404, not FastAPI's
    assert _get(app, API_PREFIX + "/health")[0] in (200, 503)


def _calls_per_request(app: Any, path: str, n: int = 40) -> float:
    """Python and C function calls made by the app for one ``GET path`` (after a warm-up)."""
    import sys

    for _ in range(5):
        _get(app, path)
    counted = [0]
    loop = asyncio.new_event_loop()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"test")], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def requests() -> None:
        def count(frame: Any, event: str, arg: Any) -> None:
            if event in ("call", "c_call"):
                counted[0] += 1

        sys.setprofile(count)
        try:
            for _ in range(n):
                await app(dict(scope), receive, send)
        finally:
            sys.setprofile(None)

    try:
        loop.run_until_complete(requests())
    finally:
        loop.close()
    return counted[0] / n


def test_fastapi_router_included_first_costs_the_apps_requests_a_few_calls(api: MemoryAPI) -> None:
    """The included router refuses the app's paths at once (FastAPI 0.165 asked it through
    ~40 calls of route bookkeeping per request of the app: +3 % instructions)."""
    from fastapi import FastAPI

    from memdiag.http.fastapi import memory_router

    def app_with(router: bool, prefix: str = "") -> Any:
        app = FastAPI()
        if router:
            app.include_router(memory_router(api=api), prefix=prefix)

        @app.get("/items/{n}")
        def item(n: int) -> dict[str, int]:
            return {"n": n}

        return app

    base = _calls_per_request(app_with(False), "/items/7")
    for prefix in ("", "/ops"):
        extra = _calls_per_request(app_with(True, prefix), "/items/7") - base
        assert extra <= 15, f"memory_router(prefix={prefix!r}) costs each request of the app {extra:.0f} calls"
    # ... and the API's own paths still take FastAPI's full match
    assert _get(app_with(True), API_PREFIX + "/health")[0] in (200, 503)
    assert _get(app_with(True, "/ops"), "/ops" + API_PREFIX + "/health")[0] in (200, 503)
    assert _get(app_with(True, "/ops"), API_PREFIX + "/health")[0] == 404
