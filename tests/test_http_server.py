"""The standalone server's own duties, concurrency, and the adapters' packaging."""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import pytest

import memdiag
from memdiag import registry, runtime
from memdiag.config import MemoryConfig
from memdiag.errors import ConfigError, MemdiagError
from memdiag.http.core import MemoryAPI
from memdiag.http.server import is_loopback, start_api_server
from memdiag.service import MemoryDiagnostics

from .test_http_api import KINDS, serve

TOKEN = "server-token-0123456789abcdef"


def _cfg(**kw: object) -> MemoryConfig:
    base: dict[str, object] = {"enable_profiling": False, "sample_interval": 0.1, "enable_auto_cleanup": False}
    base.update(kw)
    return MemoryConfig(**base)  # type: ignore[arg-type]


def test_binds_loopback_and_announces_a_generated_token(diag: MemoryDiagnostics) -> None:
    server = start_api_server(diag, port=0, name="svc-test")
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.thread.is_alive() and server.thread.daemon
        assert len(server.token) >= 32
        entries = [e for e in runtime.list_services() if e.pid == os.getpid()]
        assert len(entries) == 1
        entry = entries[0]
        assert entry.url == server.url and entry.name == "svc-test"
        assert entry.token() == server.token
        assert stat.S_IMODE(os.stat(entry.token_file).st_mode) == 0o600  # type: ignore[arg-type]
        # The CLI's view works: the token it reads opens the API.
        r = httpx.get(f"{entry.url}/api/memory/status", headers={"Authorization": f"Bearer {entry.token()}"})
        assert r.status_code == 200
    finally:
        server.close()
    assert not server.thread.is_alive()
    assert [e for e in runtime.list_services() if e.pid == os.getpid()] == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/api/memory/health")
    server.close()  # idempotent


def test_configured_token_is_used(diag: MemoryDiagnostics) -> None:
    diag.configure(api_token=TOKEN)
    with start_api_server(diag, port=0, announce=False) as server:
        assert server.token == TOKEN
        assert (
            httpx.get(f"{server.url}/api/memory/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code
            == 200
        )


def test_non_loopback_without_token_is_refused(diag: MemoryDiagnostics) -> None:
    with pytest.raises(ConfigError) as info:
        start_api_server(diag, host="0.0.0.0", port=0, announce=False)
    assert "api_token" in str(info.value) and "0.0.0.0" in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, MemdiagError)
    # With a configured token it binds.
    with start_api_server(diag, host="0.0.0.0", port=0, token=TOKEN, announce=False) as server:
        assert server.url.startswith("http://0.0.0.0:")
        r = httpx.get(f"http://127.0.0.1:{server.port}/api/memory/health")
        assert r.status_code == 200


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.1.2.3")
    assert not is_loopback("no-such-host.invalid")  # a name that does not resolve


@pytest.mark.parametrize(
    ("host", "ip"),
    [
        ("localhost", "127.0.0.1"),
        (" LocalHost ", "127.0.0.1"),
        ("127.0.0.2", "127.0.0.2"),
        ("[::1]", "::1"),
        ("::1%lo", "::1"),
        ("0.0.0.0", None),
        ("::", None),
        ("10.1.2.3", None),
        ("::ffff:10.1.2.3", None),
        ("example.com", None),  # names other than localhost: never trusted unresolved
        ("", None),
    ],
)
def test_one_loopback_predicate_for_the_server_the_inspector_and_node_argv(host: str, ip: str | None) -> None:
    # The same answer decides whether the server needs a token to bind, whether the
    # inspector client may connect, and whether node's --inspect host is rewritten.
    from memdiag._net import loopback_ip
    from memdiag.processes.cdp import InspectorError, loopback_host
    from memdiag.processes.sanitize import sanitize_node_argv

    assert loopback_ip(host) == ip
    if ip is None:
        with pytest.raises(InspectorError):
            loopback_host(host)
    else:
        assert loopback_host(host) == ip
    if host.strip() and "%" not in host and host.strip() == host:
        arg = f"--inspect=[{host.strip('[]')}]:9229" if ":" in host else f"--inspect={host}:9229"
        assert (sanitize_node_argv([arg, "app.js"])[0][0] == arg) == (ip is not None)


def test_memdiag_start_http(fast_config: MemoryConfig) -> None:
    diag = memdiag.start(fast_config.updated(enable_profiling=False), http="127.0.0.1:0")
    try:
        server = diag.http_server
        assert server is not None and server.url.startswith("http://127.0.0.1:")
        r = httpx.get(f"{server.url}/api/memory/profile", headers={"Authorization": f"Bearer {server.token}"})
        assert r.status_code == 200 and r.json()["pid"] == os.getpid()
        assert memdiag.start(http=True).http_server is server  # idempotent
    finally:
        memdiag.stop()
    assert diag.http_server is None
    assert not server.thread.is_alive()
    assert [e for e in runtime.list_services() if e.pid == os.getpid()] == []


def test_ipv6_loopback(diag: MemoryDiagnostics) -> None:
    probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"this machine has no IPv6 loopback ({exc}); the server cannot be checked on it")
    finally:
        probe.close()
    with start_api_server(diag, host="::1", port=0, announce=False) as server:
        assert server.url.startswith("http://[::1]:")
        assert httpx.get(f"{server.url}/api/memory/health").status_code == 200


def test_keep_alive_and_raw_protocol_edges(diag: MemoryDiagnostics) -> None:
    with start_api_server(diag, port=0, token=TOKEN, announce=False) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for _ in range(3):  # one connection, several requests
            conn.request("GET", "/api/memory/status", headers=auth)
            r = conn.getresponse()
            assert r.status == 200 and json.loads(r.read())["pid"] == os.getpid()
        # An over-limit body is not read: 413 and the connection is closed.
        conn.putrequest("POST", "/api/memory/cleanup")
        conn.putheader("Authorization", auth["Authorization"])
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(10 * 1024 * 1024))
        conn.endheaders()
        r = conn.getresponse()
        assert r.status == 413 and r.getheader("Connection") == "close"
        r.read()
        conn.close()
        # Chunked bodies are refused with 411 (the stdlib server cannot decode them).
        raw = (
            f"POST /api/memory/cleanup HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(raw)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 411 ")


def test_handle_never_raises_and_hides_internal_errors(diag: MemoryDiagnostics, clean_registry: None) -> None:
    def broken(d: object) -> object:
        raise RuntimeError("secret-internal-detail")

    api = MemoryAPI(diag, TOKEN)
    diag.diagnostics = lambda: broken(diag)  # type: ignore[method-assign]
    r = api.handle("GET", "/api/memory/diagnostics", {}, {"authorization": f"Bearer {TOKEN}"}, b"")
    assert r.status == 500
    assert b"secret-internal-detail" not in r.body
    assert json.loads(r.body)["error"] == "internal error"


def test_query_lists_and_header_case(diag: MemoryDiagnostics) -> None:
    api = MemoryAPI(diag, TOKEN)
    diag.tick()
    r = api.handle(
        "GET", "/api/memory/history", {"columns": ["bogus", "rss"]}, {"AUTHORIZATION": f"bearer {TOKEN}"}, b""
    )
    assert r.status == 200 and json.loads(r.body)["columns"] == ["time", "rss"]


@pytest.mark.parametrize("kind", KINDS)
def test_100_concurrent_cleanups_exactly_one_runs(kind: str, clean_registry: None) -> None:
    """100 clients POST /cleanup at once: one runs, 99 get 429 with Retry-After."""

    def slow(ctx: object) -> dict:
        time.sleep(0.3)  # keep the run open while the others arrive
        return {"detail": "slow rung"}

    registry.register_cleanup("http-test-slow-rung", slow, order=99)
    # The default per-client bucket stays on: it must not change the outcome.
    served = serve(kind, _cfg(cleanup_cooldown=300.0, api_token=TOKEN), rate_limit=(5.0, 20))
    barrier = threading.Barrier(100)
    results: list[tuple[int, str | None, dict]] = []
    lock = threading.Lock()
    host, port = served.url.removeprefix("http://").split(":")

    def one() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.connect()
            barrier.wait(30)
            conn.request(
                "POST",
                "/api/memory/cleanup",
                body=b"{}",
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )
            r = conn.getresponse()
            item = (r.status, r.getheader("Retry-After"), json.loads(r.read()))
        finally:
            conn.close()
        with lock:
            results.append(item)

    threads = [threading.Thread(target=one) for _ in range(100)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        served.stop()
    statuses = Counter(status for status, _, _ in results)
    assert statuses == {200: 1, 429: 99}, statuses
    assert served.diag.ladder.runs["performed"] == 1
    for status, retry_after, body in results:
        if status == 429:
            assert retry_after is not None and int(retry_after) >= 1
            assert body["retry_after_seconds"] > 0
        else:
            assert body["performed"] is True


def test_adapters_name_their_extra_when_missing() -> None:
    for module, extra in (("fastapi", "fastapi"), ("flask", "flask"), ("aiohttp", "aiohttp")):
        code = (
            "import sys\n"
            f"sys.modules[{module!r}] = None  # simulate the extra not being installed\n"
            "try:\n"
            f"    import memdiag.http.{module}\n"
            "except ImportError as exc:\n"
            "    print(type(exc).__name__, exc)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        assert out.startswith("MissingExtraError"), out
        assert f"pip install 'memdiag[{extra}]'" in out


def test_without_h11_the_core_imports_and_the_server_says_what_is_missing() -> None:
    code = (
        "import sys\n"
        "sys.modules['h11'] = None  # simulate a broken install\n"
        "import memdiag, memdiag.http.core\n"
        "api = memdiag.http.MemoryAPI()\n"
        "try:\n"
        "    import memdiag.http.server\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "needs the 'h11' package" in out and "pip install h11" in out


def test_core_import_loads_no_framework() -> None:
    code = (
        "import sys, memdiag, memdiag.http, memdiag.http.core\n"
        "api = memdiag.http.MemoryAPI()\n"
        "bad = [m for m in ('fastapi', 'flask', 'aiohttp', 'starlette', 'werkzeug', 'http.server', 'prometheus_client')"
        " if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_adapter_api_can_announce_itself_for_the_cli(diag: MemoryDiagnostics) -> None:
    from memdiag.http.fastapi import memory_router

    router = memory_router(diag)
    api = router.memdiag_api  # type: ignore[attr-defined]
    path = api.announce("http://127.0.0.1:8000/", name="mounted")
    try:
        entry = next(e for e in runtime.list_services() if e.pid == os.getpid())
        assert entry.url == "http://127.0.0.1:8000" and entry.name == "mounted"
        assert entry.token() == api.token and len(api.token) >= 32  # generated: no token configured
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        runtime.unregister_service()


def test_close_also_ends_keep_alive_connections() -> None:
    diag = MemoryDiagnostics(MemoryConfig(sample_interval=0.1, enable_auto_cleanup=False))
    server = start_api_server(diag, announce=False)
    host, port = server.url.rsplit("/", 1)[-1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/api/memory/health")
        first = conn.getresponse()
        first.read()
        assert first.status == 200 and first.getheader("Connection") != "close"
        server.close()
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            conn.request("GET", "/api/memory/health")
            conn.getresponse().read()
    finally:
        conn.close()
        server.close()
        diag.close()
