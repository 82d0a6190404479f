"""The memory API against four real servers: every endpoint and error case, same answers.

Servers (all on 127.0.0.1, ephemeral ports, real sockets):
  standalone  memdiag's stdlib ThreadingHTTPServer
  fastapi     memory_router() under uvicorn in a thread
  flask       memory_blueprint() under waitress
  aiohttp     add_memory_routes() on an AppRunner in a thread's event loop
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from memdiag import registry
from memdiag.config import MemoryConfig
from memdiag.http.core import DASHBOARD_CSP, MemoryAPI
from memdiag.http.server import serve as serve_api
from memdiag.service import MemoryDiagnostics

from .conftest import wait_for

TOKEN = "test-token-0123456789abcdef"
KINDS = ("standalone", "fastapi", "flask", "aiohttp")
API = "/api/memory"


def _config(**overrides: object) -> MemoryConfig:
    base = dict(
        # Profile ticks call gc.get_objects() on the monitor thread, which can make a
        # concurrent tuple(<generator>) raise SystemError in another thread (a CPython
        # race, seen here while FastAPI built its models; reported to the lead).
        enable_profiling=False,
        sample_interval=0.1,
        profile_interval=1.0,
        sustain_seconds=0.0,
        recovery_seconds=0.0,
        cleanup_cooldown=0.0,
        enable_auto_cleanup=False,
        api_token=TOKEN,
    )
    base.update(overrides)
    return MemoryConfig(**base)  # type: ignore[arg-type]


# -- the four servers ------------------------------------------------------------------


@dataclass
class Served:
    kind: str
    url: str
    diag: MemoryDiagnostics
    api: MemoryAPI
    stop: Callable[[], None]


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _serve_standalone(api: MemoryAPI) -> tuple[str, Callable[[], None]]:
    server, thread = serve_api(api, "127.0.0.1", 0)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(10)

    return server.url, stop


def _serve_fastapi(api: MemoryAPI) -> tuple[str, Callable[[], None]]:
    import uvicorn
    from fastapi import FastAPI

    from memdiag.http.fastapi import memory_router

    app = FastAPI()
    app.include_router(memory_router(api=api))
    sock = _free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30, what="uvicorn to start")

    def stop() -> None:
        server.should_exit = True
        thread.join(10)
        sock.close()

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


def _serve_flask(api: MemoryAPI) -> tuple[str, Callable[[], None]]:
    from flask import Flask
    from waitress.server import create_server

    from memdiag.http.flask import memory_blueprint

    app = Flask("memdiag-test")
    app.register_blueprint(memory_blueprint(api=api))
    server = create_server(app, host="127.0.0.1", port=0, threads=8)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def stop() -> None:
        server.close()
        for channel in list(server._map.values()):  # open keep-alive connections
            channel.close()
        server.task_dispatcher.shutdown()
        thread.join(10)

    return f"http://127.0.0.1:{server.effective_port}", stop


def _serve_aiohttp(api: MemoryAPI) -> tuple[str, Callable[[], None]]:
    from aiohttp import web

    from memdiag.http.aiohttp import add_memory_routes

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[web.AppRunner, int]:
        app = web.Application()
        add_memory_routes(app, api=api)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, runner.addresses[0][1]

    runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    return f"http://127.0.0.1:{port}", stop


STARTERS: dict[str, Callable[[MemoryAPI], tuple[str, Callable[[], None]]]] = {
    "standalone": _serve_standalone,
    "fastapi": _serve_fastapi,
    "flask": _serve_flask,
    "aiohttp": _serve_aiohttp,
}


def serve(kind: str, config: MemoryConfig | None = None, **api_options: object) -> Served:
    """A started monitor behind a real server of ``kind``."""
    diag = MemoryDiagnostics(config or _config())
    diag.start()
    api_options.setdefault("rate_limit", None)
    api = MemoryAPI(diag, **api_options)  # type: ignore[arg-type]
    url, stop = STARTERS[kind](api)

    def stop_all() -> None:
        stop()
        diag.close()

    return Served(kind, url, diag, api, stop_all)


@pytest.fixture(scope="module")
def fleet() -> Iterator[dict[str, Served]]:
    """One server of every kind, each with its own monitor (so cooldowns don't mix)."""
    servers: dict[str, Served] = {}
    try:
        for kind in KINDS:
            servers[kind] = serve(kind)
        yield servers
    finally:
        for s in servers.values():
            s.stop()


class Client:
    """An httpx client that checks every answer never carries the token."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.http = httpx.Client(base_url=served.url, timeout=30)

    def request(self, method: str, path: str, *, auth: bool = True, **kw: object) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
        if auth:
            headers.setdefault("Authorization", f"Bearer {TOKEN}")
        r = self.http.request(method, path, headers=headers, **kw)  # type: ignore[arg-type]
        assert TOKEN not in r.text, f"{method} {path} echoed the token"
        # 501: a part not installed yet (leaks, dashboard); 503: health "fail".
        assert r.status_code < 500 or r.status_code in (501, 503), f"{method} {path}: {r.status_code} {r.text[:300]}"
        return r

    def get(self, path: str, **kw: object) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: object = None, **kw: object) -> httpx.Response:
        if body is not None:
            kw["json"] = body
        return self.request("POST", path, **kw)

    def close(self) -> None:
        self.http.close()


@pytest.fixture(params=KINDS)
def client(request: pytest.FixtureRequest, fleet: dict[str, Served]) -> Iterator[Client]:
    c = Client(fleet[request.param])
    yield c
    c.close()


def _json(r: httpx.Response, status: int = 200) -> dict:
    assert r.status_code == status, f"{r.status_code}: {r.text[:500]}"
    assert r.headers["content-type"].split(";")[0] in ("application/json", "application/health+json")
    data = r.json()
    assert isinstance(data, dict)
    return data


# -- reading endpoints -----------------------------------------------------------------


def test_status(client: Client) -> None:
    data = _json(client.get(f"{API}/status"))
    assert data["status"] in ("ok", "warning", "critical")
    assert data["pid"] == os.getpid()
    assert data["rss_bytes"] > 0
    assert data["monitor_running"] is True
    assert client.get(f"{API}/status").headers["cache-control"] == "no-store"


def test_profile(client: Client) -> None:
    data = _json(client.get(f"{API}/profile"))
    assert data["process"]["rss_bytes"] > 0
    assert {"system", "cgroup", "psi", "python", "children", "caches", "pressure", "monitor"} <= set(data)


def test_diagnostics(client: Client) -> None:
    data = _json(client.get(f"{API}/diagnostics"))
    assert {"profile", "config", "subprocesses", "trends", "cleanup", "history", "overhead"} <= set(data)
    assert data["config"]["api_token"] == "***"


def test_cache_metrics_lists_every_cache_and_a_total(client: Client) -> None:
    empty = _json(client.get(f"{API}/cache/metrics"))
    assert empty["total"]["caches"] == len(empty["caches"])

    class Cache:
        def __init__(self, name: str, size: int) -> None:
            self.name, self.size = name, size

        def metrics(self) -> dict:
            return {
                "entries": 2,
                "bytes": self.size,
                "max_bytes": 1000,
                "fill_ratio": self.size / 1000,
                "hits": 3,
                "misses": 1,
            }

        def shrink(self, fraction: float) -> int:
            return 0

        def clear(self) -> int:
            return 0

    a, b = Cache("http-test-a", 100), Cache("http-test-b", 300)
    registry.register_cache(a)
    registry.register_cache(b)
    try:
        data = _json(client.get(f"{API}/cache/metrics"))
    finally:
        registry.unregister_cache(a)
        registry.unregister_cache(b)
    mine = {c["name"]: c for c in data["caches"] if c["name"].startswith("http-test")}
    assert mine["http-test-a"]["bytes"] == 100 and mine["http-test-b"]["bytes"] == 300
    assert data["total"]["caches"] == len(data["caches"])
    assert data["total"]["bytes"] >= 400
    assert data["total"]["hits"] >= 6


def test_get_configure_shows_config_and_rules(client: Client) -> None:
    data = _json(client.get(f"{API}/configure"))
    assert data["config"]["memory_threshold_mb"] == 500.0
    assert data["config"]["api_token"] == "***"
    assert data["fields"]["memory_threshold_mb"]["type"] == "float"
    assert data["fields"]["api_token"]["read_only"] is True


def test_history(client: Client) -> None:
    served = client.served
    wait_for(lambda: len(served.diag.history) >= 3, timeout=30, what="three samples in the history")
    data = _json(client.get(f"{API}/history", params={"last": "2", "columns": "rss,children_rss"}))
    assert data["columns"] == ["time", "rss", "children_rss"]
    assert len(data["rows"]) == 2 and all(len(row) == 3 for row in data["rows"])
    assert data["rows"][0][1] > 0
    assert "rss" in data["trends"]
    since = data["rows"][-1][0]
    later = _json(client.get(f"{API}/history", params={"since": str(since)}))
    assert all(row[0] >= since for row in later["rows"]) and later["columns"][0] == "time"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"columns": "rss,bogus"}, "columns"),
        ({"last": "0"}, "last"),
        ({"last": "x"}, "last"),
        ({"since": "nan"}, "since"),
    ],
)
def test_history_bad_parameters_422(client: Client, params: dict, field: str) -> None:
    data = _json(client.get(f"{API}/history", params=params), 422)
    assert field in data["fields"]


def test_health_is_public_and_health_json(client: Client) -> None:
    r = client.get(f"{API}/health", auth=False)
    data = _json(r)
    assert r.headers["content-type"].startswith("application/health+json")
    assert data["status"] in ("pass", "warn")
    assert "memory:pressure" in data["checks"]


def test_health_fail_is_503(client: Client) -> None:
    from memdiag.health import HealthMonitor

    monitor = HealthMonitor(client.served.diag)
    monitor.add_check("db", lambda: ("fail", "connection refused"))
    client.served.api._health_monitor = monitor  # the API's health monitor, with an app check
    try:
        data = _json(client.get(f"{API}/health", auth=False), 503)
    finally:
        client.served.api._health_monitor = None
    assert data["status"] == "fail"
    assert data["checks"]["db"][0]["output"] == "connection refused"


def test_pressure_alone_is_warn_not_fail(client: Client) -> None:
    served = client.served
    served.diag.configure(memory_threshold_mb=1.0)  # RSS is far above 1 MB: critical
    try:
        wait_for(lambda: served.diag.pressure.level == "critical", timeout=30, what="critical pressure")
        data = _json(client.get(f"{API}/health", auth=False))
        assert data["status"] == "warn"
        assert data["checks"]["memory:pressure"][0]["observedValue"] == "critical"
    finally:
        served.diag.configure(memory_threshold_mb=500.0)


def test_metrics_prometheus_text(client: Client) -> None:
    r = client.get("/metrics", auth=False)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    for name in (
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
        "memdiag_pressure_level",
        'memdiag_pressure_state{level="ok"}',
        "memdiag_children ",
        "memdiag_zombie_processes",
        'memdiag_cleanup_runs_total{result="performed"}',
    ):
        assert name in text, name
    _check_exposition(text)


def _check_exposition(text: str) -> None:
    """Every sample line belongs to a family announced by HELP and TYPE; no duplicates."""
    typed: set[str] = set()
    seen: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("gauge", "counter")
            typed.add(name)
        elif line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            float(value)
            assert series.split("{")[0] in typed, line
            assert series not in seen, f"duplicate series {series}"
            seen.add(series)


def test_openapi_document(client: Client) -> None:
    data = _json(client.get(f"{API}/openapi.json"))
    assert data["openapi"].startswith("3.")
    for path in (
        "/status",
        "/profile",
        "/diagnostics",
        "/cleanup",
        "/cache/metrics",
        "/configure",
        "/health",
        "/history",
        "/leaks",
        "/leaks/trace",
        "/openapi.json",
    ):
        assert f"{API}{path}" in data["paths"], path
    assert "/metrics" in data["paths"] and "/memory/dashboard" in data["paths"]


def test_leaks(client: Client) -> None:
    r = client.get(f"{API}/leaks")
    try:
        from memdiag.leaks import leaks_report  # noqa: F401
    except ImportError:
        assert _json(r, 501)["error"] == "not implemented"
        return
    data = _json(r)
    assert isinstance(data["suspects"], list)


def test_dashboard_page(client: Client) -> None:
    r = client.get("/memory/dashboard", auth=False)
    try:
        from memdiag.dashboard import page_html  # noqa: F401
    except ImportError:
        assert _json(r, 501)["error"] == "not implemented"
        return
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == DASHBOARD_CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert "<html" in r.text.lower()


# -- auth ------------------------------------------------------------------------------

PROTECTED = [
    ("GET", f"{API}/status"),
    ("GET", f"{API}/profile"),
    ("GET", f"{API}/diagnostics"),
    ("POST", f"{API}/cleanup"),
    ("GET", f"{API}/cache/metrics"),
    ("GET", f"{API}/configure"),
    ("POST", f"{API}/configure"),
    ("GET", f"{API}/history"),
    ("GET", f"{API}/leaks"),
    ("POST", f"{API}/leaks/trace"),
    ("GET", f"{API}/openapi.json"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_token_required(client: Client, method: str, path: str) -> None:
    missing = client.request(method, path, auth=False)
    assert _json(missing, 401)["error"] == "unauthorized"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = client.request(method, path, headers={"Authorization": "Bearer " + "x" * len(TOKEN)})
    assert _json(wrong, 401)["detail"] == "invalid token"
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    basic = client.request(method, path, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401


# -- cleanup -----------------------------------------------------------------------------


def test_cleanup_dry_run(client: Client) -> None:
    data = _json(client.post(f"{API}/cleanup", {"dry_run": True}))
    assert data["performed"] is True and data["dry_run"] is True
    assert [a["name"] for a in data["actions"]][:3] == ["caches", "gc", "malloc_trim"]


def test_cleanup_cooldown_429_then_force(client: Client) -> None:
    served = client.served
    served.diag.configure(cleanup_cooldown=120.0)
    try:
        first = client.post(f"{API}/cleanup", {"force": True})
        assert _json(first)["performed"] is True
        again = client.post(f"{API}/cleanup", {})
        data = _json(again, 429)
        assert data["result"]["skipped_reason"] == "cooldown"
        assert 1 <= int(again.headers["retry-after"]) <= 120
        assert data["retry_after_seconds"] > 100
        empty_body = client.request("POST", f"{API}/cleanup")  # no body at all: {}
        assert empty_body.status_code == 429
        forced = client.post(f"{API}/cleanup", {"force": True})
        assert _json(forced)["reason"] == "forced"
    finally:
        served.diag.configure(cleanup_cooldown=0.0)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ([1, 2], 422, "body"),
        ({"force": "yes"}, 422, "force"),
        ({"dry_run": 1}, 422, "dry_run"),
        ({"forse": True}, 422, "forse"),
    ],
)
def test_cleanup_invalid_body(client: Client, body: object, status: int, field: str) -> None:
    data = _json(client.post(f"{API}/cleanup", body), status)
    assert field in data["fields"]


def test_malformed_json_400(client: Client) -> None:
    for path in (f"{API}/cleanup", f"{API}/configure", f"{API}/leaks/trace"):
        r = client.request("POST", path, content=b'{"force": tru', headers={"Content-Type": "application/json"})
        assert _json(r, 400)["error"] == "malformed JSON"
        r = client.request("POST", path, content=b'{"x": NaN}', headers={"Content-Type": "application/json"})
        assert r.status_code == 400


def test_non_json_body_415(client: Client) -> None:
    r = client.request(
        "POST", f"{API}/cleanup", content=b"force=true", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert _json(r, 415)["error"] == "unsupported media type"


def test_body_over_limit_413(client: Client) -> None:
    big = json.dumps({"force": False, "pad": "x" * (70 * 1024)}).encode()
    r = client.request("POST", f"{API}/cleanup", content=big, headers={"Content-Type": "application/json"})
    assert _json(r, 413)["error"] == "request body too large"
    # The connection (or a new one) still serves the next request.
    assert client.get(f"{API}/status").status_code == 200


def test_slow_cleanup_does_not_block_other_requests(client: Client, clean_registry: None) -> None:
    started = threading.Event()
    release = threading.Event()

    def slow(ctx: object) -> dict:
        started.set()
        release.wait(60)  # held until the other requests have been answered
        return {"detail": "slow"}

    registry.register_cleanup("http-test-slow", slow, order=99)
    result: dict[str, httpx.Response] = {}

    def run() -> None:
        with httpx.Client(base_url=client.served.url, timeout=90) as other:
            result["r"] = other.post(
                f"{API}/cleanup", json={"force": True}, headers={"Authorization": f"Bearer {TOKEN}"}
            )

    t = threading.Thread(target=run)
    t.start()
    try:
        assert started.wait(30)
        # Answered while the cleanup is still held (a condition, not a speed): requests
        # queued behind it would only be answered after the release below.
        health = client.get(f"{API}/health", auth=False)
        busy = client.post(f"{API}/cleanup", {"force": True})  # single flight, even when forced
        answered_while_running = t.is_alive() and "r" not in result
    finally:
        release.set()
        t.join(90)
    assert health.status_code == 200
    assert _json(busy, 429)["result"]["skipped_reason"] == "in_progress"
    assert answered_while_running, "requests waited behind a running cleanup"
    assert result["r"].status_code == 200


# -- configure -----------------------------------------------------------------------------


def test_configure_partial_update(client: Client) -> None:
    served = client.served
    try:
        r = client.post(f"{API}/configure", {"memory_threshold_mb": 800, "cleanup_cooldown": 10})
        data = _json(r)
        assert data["changed"] == ["cleanup_cooldown", "memory_threshold_mb"]
        assert data["config"]["memory_threshold_mb"] == 800.0 and data["persisted"] is False
        assert served.diag.config.memory_threshold_mb == 800.0
        assert _json(client.get(f"{API}/configure"))["config"]["cleanup_cooldown"] == 10.0
    finally:
        served.diag.configure(memory_threshold_mb=500.0, cleanup_cooldown=0.0)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"memory_threshold_mb": -5}, {"memory_threshold_mb"}),
        ({"memory_threshold_mb": "800"}, {"memory_threshold_mb"}),
        ({"no_such_field": 1, "cleanup_cooldown": 1}, {"no_such_field"}),
        ({"no_such_field": 1, "cache_pressure_threshold": 2}, {"no_such_field", "cache_pressure_threshold"}),
        ({"auto_cleanup_level": "sometimes"}, {"auto_cleanup_level"}),
        ({"enable_auto_cleanup": None}, {"enable_auto_cleanup"}),
        ({"api_token": "a-new-token-that-is-long-enough"}, {"api_token"}),
        ({"history_db": "/tmp/x.db"}, {"history_db"}),
        ({"persist": "yes"}, {"persist"}),
        ({"sample_interval": 120.0}, {"profile_interval"}),
    ],
)
def test_configure_invalid_422_changes_nothing(client: Client, body: dict, fields: set) -> None:
    before = client.served.diag.config
    data = _json(client.post(f"{API}/configure", body), 422)
    assert data["error"] == "invalid configuration"
    assert set(data["fields"]) == fields
    assert all(isinstance(v, str) and v for v in data["fields"].values())
    assert client.served.diag.config == before


def test_configure_persist_writes_config_file(client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "memdiag.toml"
    monkeypatch.setenv("MEMDIAG_CONFIG", str(target))
    try:
        data = _json(client.post(f"{API}/configure", {"cleanup_cooldown": 42, "persist": True}))
        assert data["persisted"] is True
        assert "cleanup_cooldown = 42.0" in target.read_text()
        assert target.stat().st_mode & 0o777 == 0o600
    finally:
        client.served.diag.configure(cleanup_cooldown=0.0)


# -- leaks/trace -----------------------------------------------------------------------------


@pytest.mark.parametrize("body", [{"seconds": -1}, {"seconds": "5"}, {"seconds": True}, {"secs": 5}])
def test_trace_invalid_422(client: Client, body: dict) -> None:
    assert client.post(f"{API}/leaks/trace", body).status_code == 422


def test_trace_window(client: Client) -> None:
    r = client.post(f"{API}/leaks/trace", {"seconds": 1.0})
    try:
        from memdiag.leaks import start_tracing  # noqa: F401
    except ImportError:
        assert _json(r, 501)["error"] == "not implemented"
        return
    # One process, one tracemalloc: another server kind may hold the window (409).
    assert r.status_code in (200, 409), r.text
    assert isinstance(r.json(), dict)


# -- HTTP mechanics ------------------------------------------------------------------------


def test_unknown_path_404(client: Client) -> None:
    for path in (f"{API}/nope", f"{API}/status/extra", f"{API}/"):
        assert _json(client.get(path), 404)["error"] == "not found"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", f"{API}/cleanup", "POST, OPTIONS"),
        ("DELETE", f"{API}/status", "GET, HEAD, OPTIONS"),
        ("PUT", f"{API}/configure", "GET, HEAD, POST, OPTIONS"),
        ("POST", "/metrics", "GET, HEAD, OPTIONS"),
    ],
)
def test_wrong_method_405(client: Client, method: str, path: str, allow: str) -> None:
    r = client.request(method, path)
    assert _json(r, 405)["error"] == "method not allowed"
    assert r.headers["allow"] == allow


def test_head_and_options(client: Client) -> None:
    head = client.request("HEAD", f"{API}/status")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == "application/json"
    options = client.request("OPTIONS", f"{API}/configure", auth=False)
    assert options.status_code == 204
    assert options.headers["allow"] == "GET, HEAD, POST, OPTIONS"


def test_nan_becomes_null(client: Client, clean_registry: None) -> None:
    registry.register_section("http_test_nan", lambda d: {"x": float("nan"), "y": [float("inf")]})
    data = _json(client.get(f"{API}/diagnostics"))
    assert data["http_test_nan"] == {"x": None, "y": [None]}


# -- secrets -----------------------------------------------------------------------------


def test_no_secrets_in_diagnostics(client: Client, children: list) -> None:
    env = {**os.environ, "SECRET_X": "env-secret-value-4711"}
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--password=hunter2", "--api-key", "k3y-v4lue"],
        env=env,
    )
    children.append(child)
    deadline = time.monotonic() + 10
    mine = None
    while mine is None and time.monotonic() < deadline:
        r = client.get(f"{API}/diagnostics")
        mine = next((p for p in _json(r)["subprocesses"] if p["pid"] == child.pid and p.get("cmdline")), None)
        if mine is None:
            time.sleep(0.1)
    assert mine is not None, "the child never appeared in the diagnostics"
    for secret in ("hunter2", "k3y-v4lue", "env-secret-value-4711", TOKEN):
        assert secret not in r.text
    assert "--password=***" in mine["cmdline"]
    for path in (f"{API}/profile", f"{API}/status", f"{API}/configure", "/metrics"):
        text = client.get(path).text
        assert "hunter2" not in text and "env-secret-value-4711" not in text


# -- every server answers alike -----------------------------------------------------------------

DETERMINISTIC = [
    ("GET", f"{API}/nope", {}, None),
    ("GET", f"{API}/status", {"auth": False}, None),
    ("GET", f"{API}/status", {"headers": {"Authorization": "Bearer wrong-token-wrong-token"}}, None),
    ("DELETE", f"{API}/status", {}, None),
    ("POST", f"{API}/cleanup", {"json": {"force": "x"}}, None),
    ("POST", f"{API}/cleanup", {"content": b"[1", "headers": {"Content-Type": "application/json"}}, None),
    ("POST", f"{API}/configure", {"json": {"memory_threshold_mb": 0, "bogus": 1}}, None),
    ("GET", f"{API}/history", {"params": {"columns": "nope"}}, None),
    ("OPTIONS", f"{API}/cleanup", {"auth": False}, None),
    ("GET", f"{API}/openapi.json", {}, None),
]


def test_all_servers_give_identical_answers(fleet: dict[str, Served]) -> None:
    answers: dict[str, list[tuple[int, str | None, str | None, bytes]]] = {}
    for kind, served in fleet.items():
        c = Client(served)
        try:
            answers[kind] = []
            for method, path, kw, _ in DETERMINISTIC:
                r = c.request(method, path, **dict(kw))
                answers[kind].append((r.status_code, r.headers.get("content-type"), r.headers.get("allow"), r.content))
        finally:
            c.close()
    reference = answers["standalone"]
    for kind, got in answers.items():
        for (method, path, _, _), want, have in zip(DETERMINISTIC, reference, got):
            assert have == want, f"{kind} differs from standalone on {method} {path}: {have[:3]} vs {want[:3]}"


# -- per-client rate limit (a fresh server of each kind, tight bucket) -------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_rate_limit_on_acting_endpoints(kind: str) -> None:
    served = serve(kind, rate_limit=(0.01, 2))
    c = Client(served)
    try:
        codes = [c.post(f"{API}/configure", {}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        limited = c.post(f"{API}/cleanup", {"dry_run": True})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert c.get(f"{API}/status").status_code == 200  # reading is not limited
    finally:
        c.close()
        served.stop()


def test_the_forwarded_client_header_counts_only_on_the_control_channel(diag: MemoryDiagnostics) -> None:
    """A forwarded ?pid= request is limited by its target as the original client: the
    control channel's API believes X-Memdiag-Client (its peers are checked); the TCP API
    never does, so a client cannot pick a fresh bucket by sending it."""
    from memdiag.http.unix import _TrustedPeerAPI

    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    tcp = MemoryAPI(diag, TOKEN, rate_limit=(0.001, 1))
    codes = [
        tcp.handle("POST", f"{API}/configure", {}, {**auth, "X-Memdiag-Client": who}, b"{}", client="10.0.0.9").status
        for who in ("10.0.0.1", "10.0.0.2")
    ]
    assert codes == [200, 429]  # one client, one bucket, whatever it claims
    channel = _TrustedPeerAPI(MemoryAPI(diag, TOKEN, rate_limit=(0.001, 1)))
    codes = [
        channel.handle("POST", f"{API}/configure", {}, {"X-Memdiag-Client": who}, b"", client="-").status
        for who in ("10.0.0.1", "10.0.0.2", "10.0.0.1")
    ]
    assert codes == [200, 200, 429]  # each original client its own bucket in the target
