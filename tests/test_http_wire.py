"""The standalone server's HTTP/1.1 handling, byte for byte over real sockets."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from memdiag import registry
from memdiag.config import MemoryConfig
from memdiag.http.core import MemoryAPI
from memdiag.http.server import MemoryHTTPServer, start_api_server
from memdiag.service import MemoryDiagnostics

from .conftest import wait_for

TOKEN = "wire-token-0123456789abcdef"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"


@pytest.fixture
def server(diag: MemoryDiagnostics) -> Iterator[MemoryHTTPServer]:
    diag.start()
    with start_api_server(diag, port=0, token=TOKEN, announce=False) as api_server:
        yield api_server.server


def _connect(server: MemoryHTTPServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response from ``sock`` (``buf`` holds what was read past the previous one)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full head: {bytes(buf)!r}")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    buf[:] = rest[length:]
    return status, headers, rest[:length]


def _closed(sock: socket.socket, buf: bytearray) -> bool:
    """True if the peer closed the connection (after what is in ``buf``)."""
    sock.settimeout(5)
    try:
        return sock.recv(1) == b"" and not buf
    except (ConnectionResetError, TimeoutError):
        return False


def _exchange(server: MemoryHTTPServer, raw: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    with _connect(server) as sock:
        sock.sendall(raw)
        buf = bytearray()
        status, headers, body = _read_response(sock, buf)
        return status, headers, body, _closed(sock, buf)


def test_pipelined_requests_are_answered_in_order_even_when_the_first_is_slow(
    server: MemoryHTTPServer, clean_registry: None
) -> None:
    def slow(ctx: object) -> dict:
        time.sleep(0.5)
        return {"detail": "slow"}

    registry.register_cleanup("wire-test-slow", slow, order=99)
    body = b'{"force": true}'
    raw = (
        f"POST /api/memory/cleanup HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    raw += f"GET /api/memory/status HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode()
    raw += b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\n\r\n"
    with _connect(server) as sock:
        sock.sendall(raw)
        buf = bytearray()
        answers = [_read_response(sock, buf) for _ in range(3)]
    cleanup, status, health = (json.loads(b) for _, _, b in answers)
    assert [s for s, _, _ in answers] == [200, 200, 200]
    assert cleanup["performed"] is True and "wire-test-slow" in [a["name"] for a in cleanup["actions"]]
    assert "pid" in status and health["status"] in ("pass", "warn")


def test_cached_profile_is_served_while_workers_are_busy(server: MemoryHTTPServer, clean_registry: None) -> None:
    """A long report on the workers never stalls the loop that answers cached reads."""
    release = threading.Event()
    started = threading.Event()

    def stuck(ctx: object) -> dict:
        started.set()
        release.wait(20)
        return {}

    registry.register_cleanup("wire-test-stuck", stuck, order=99)
    warm = f"GET /api/memory/profile HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode()
    assert _exchange(server, warm)[0] == 200
    body = b'{"force": true}'
    stuck_req = (
        f"POST /api/memory/cleanup HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    blocker = _connect(server)
    try:
        blocker.sendall(stuck_req)
        assert started.wait(20), "the cleanup never reached its stuck rung"
        times = []
        with _connect(server) as sock:
            buf = bytearray()
            for _ in range(20):
                t0 = time.perf_counter()
                sock.sendall(warm)
                assert _read_response(sock, buf)[0] == 200
                times.append(time.perf_counter() - t0)
        assert sorted(times)[10] < 0.05, times
    finally:
        release.set()
        blocker.close()


def test_http10_gets_one_request_per_connection(server: MemoryHTTPServer) -> None:
    # h11 implements no HTTP/1.0 keep-alive (a pre-1997 extension): answered, then closed.
    for extra in (b"", b"Connection: keep-alive\r\n"):
        raw = b"GET /api/memory/health HTTP/1.0\r\n" + extra + b"\r\n"
        status, headers, _, closed = _exchange(server, raw)
        assert status == 200 and headers["connection"] == "close" and closed


def test_connection_close_is_honoured(server: MemoryHTTPServer) -> None:
    raw = b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    status, headers, _, closed = _exchange(server, raw)
    assert status == 200 and headers["connection"] == "close" and closed


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /api/memory/health\r\n\r\n", 400),
        (b"GET /api/memory/health HTTP/2.0\r\n\r\n", 505),
        (b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"GET /api/memory/health HTTP/1.1\r\n\r\n", 400),  # no Host (RFC 9112 3.2)
        (b"POST /api/memory/cleanup HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n", 400),
        (b"POST /api/memory/cleanup HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
        (b"POST /api/memory/cleanup HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
        (b"POST /api/memory/cleanup HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 2\r\n\r\n", 417),
        (b"GET healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ],
)
def test_malformed_requests_get_a_json_error_and_a_closed_connection(
    server: MemoryHTTPServer, raw: bytes, status: int
) -> None:
    got, headers, body, closed = _exchange(server, raw)
    assert got == status
    assert headers["content-type"] == "application/json" and json.loads(body)["error"]
    assert headers["connection"] == "close" and closed


def test_oversized_head_431(server: MemoryHTTPServer) -> None:
    raw = b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\n"
    raw += b"".join(b"X-%d: %s\r\n" % (i, b"v" * 900) for i in range(80))
    with _connect(server) as sock:
        try:
            sock.sendall(raw)  # no end of head: the server stops reading at its limit
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, headers, _ = _read_response(sock, bytearray())
    assert status == 431 and headers["connection"] == "close"
    many = b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(150))
    many += b"\r\n"
    assert _exchange(server, many)[0] == 431


def test_expect_100_continue(server: MemoryHTTPServer) -> None:
    body = b'{"dry_run": true}'
    head = (
        f"POST /api/memory/cleanup HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    with _connect(server) as sock:
        sock.sendall(head)
        buf = bytearray()
        interim = _read_response(sock, buf)
        assert interim[0] == 100
        sock.sendall(body)
        status, _, answer = _read_response(sock, buf)
    assert status == 200 and json.loads(answer)["dry_run"] is True
    # Over the limit: 413 at once, no 100 Continue, the body is never read.
    big = (
        f"POST /api/memory/cleanup HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: {10**8}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    status, headers, _, closed = _exchange(server, big)
    assert status == 413 and headers["connection"] == "close" and closed


def test_half_closed_client_still_gets_its_answer(server: MemoryHTTPServer) -> None:
    with _connect(server) as sock:
        sock.sendall(f"GET /api/memory/status HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode())
        sock.shutdown(socket.SHUT_WR)
        buf = bytearray()
        status, _, body = _read_response(sock, buf)
        assert status == 200 and json.loads(body)["pid"]
        assert _closed(sock, buf)


def test_idle_connections_are_closed(diag: MemoryDiagnostics) -> None:
    api = MemoryAPI(diag, TOKEN)
    srv = MemoryHTTPServer(("127.0.0.1", 0), api, idle_timeout=0.3)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        with _connect(srv) as idle, _connect(srv) as partial:
            partial.sendall(b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\n")  # never finished
            t0 = time.monotonic()
            assert _closed(idle, bytearray()) and _closed(partial, bytearray())
            assert time.monotonic() - t0 < 3
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)
    assert not thread.is_alive()


def test_connections_beyond_the_limit_get_503(diag: MemoryDiagnostics) -> None:
    srv = MemoryHTTPServer(("127.0.0.1", 0), MemoryAPI(diag, TOKEN), max_connections=3)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    socks = []
    try:
        for _ in range(3):
            s = _connect(srv)
            s.sendall(b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(s, bytearray())[0] == 200
            socks.append(s)
        status, _, _, closed = _exchange(srv, b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503 and closed
        socks.pop().close()
        wait_for(lambda: srv.connections < 3, timeout=30, what="the server to see the hang-up")
        assert _exchange(srv, b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0] == 200
    finally:
        for s in socks:
            s.close()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def test_shutdown_without_serving_and_twice(diag: MemoryDiagnostics) -> None:
    srv = MemoryHTTPServer(("127.0.0.1", 0), MemoryAPI(diag, TOKEN))
    srv.shutdown()  # never served: returns at once
    srv.serve_forever()  # after shutdown: returns at once
    srv.shutdown()
    srv.server_close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=2).close()


def test_busy_port_fails_in_the_constructor(diag: MemoryDiagnostics) -> None:
    srv = MemoryHTTPServer(("127.0.0.1", 0), MemoryAPI(diag, TOKEN))
    try:
        with pytest.raises(OSError):
            MemoryHTTPServer(("127.0.0.1", srv.server_address[1]), MemoryAPI(diag, TOKEN))
    finally:
        srv.server_close()


def test_config_of_the_serving_monitor_is_unchanged_by_bad_requests(server: MemoryHTTPServer) -> None:
    before = server.api.diagnostics.config
    chunked = b"POST /api/memory/configure HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    for raw in (chunked, b"\x00\xff\r\n\r\n"):
        assert _exchange(server, raw)[0] in (400, 411)
    assert server.api.diagnostics.config == before
    assert isinstance(before, MemoryConfig)


def test_try_handle_answers_only_what_is_ready_and_never_acts(diag: MemoryDiagnostics) -> None:
    api = MemoryAPI(diag, TOKEN, rate_limit=(0.001, 1))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # Errors every endpoint shares are ready at once.
    assert api.try_handle("GET", "/api/memory/nope", {}, auth, b"").status == 404  # type: ignore[union-attr]
    assert api.try_handle("GET", "/api/memory/status", {}, {}, b"").status == 401  # type: ignore[union-attr]
    assert api.try_handle("DELETE", "/api/memory/status", {}, auth, b"").status == 405  # type: ignore[union-attr]
    # A report is not: the caller must run handle() off its I/O thread.
    assert api.try_handle("GET", "/api/memory/status", {}, auth, b"") is None
    # Acting endpoints are never run here, and their rate limit is not spent here.
    for _ in range(3):
        assert api.try_handle("POST", "/api/memory/cleanup", {}, auth, b'{"dry_run": true}') is None
    assert api.handle("POST", "/api/memory/cleanup", {}, auth, b"").status == 200
    assert api.handle("POST", "/api/memory/cleanup", {}, auth, b"").status == 429  # burst of one spent
    # The profile is ready once a running monitor's current sample was reported (a slow
    # monitor here, so that no tick falls between the two requests).
    slow = MemoryDiagnostics(MemoryConfig(sample_interval=30.0, enable_auto_cleanup=False))
    api = MemoryAPI(slow, TOKEN)
    slow.start()
    try:
        wait_for(lambda: slow.last_sample is not None, timeout=30, what="the first sample")
        assert api.try_handle("GET", "/api/memory/profile", {}, auth, b"") is None
        first = api.handle("GET", "/api/memory/profile", {}, auth, b"")
        again = api.try_handle("GET", "/api/memory/profile", {}, auth, b"")
        assert first.status == 200 and again is first
        head = api.try_handle("HEAD", "/api/memory/profile", {}, auth, b"")
        assert head is not None and head.status == 200 and head.body == b""
    finally:
        slow.close()


def test_close_right_after_start_is_clean(diag: MemoryDiagnostics) -> None:
    """A server closed while its loop is still starting stops without an error."""
    errors: list[BaseException] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)  # type: ignore[assignment,return-value]
    try:
        for _ in range(20):
            server = start_api_server(diag, port=0, token=TOKEN, announce=False)
            server.close()
            assert not server.thread.is_alive()
    finally:
        threading.excepthook = previous
    assert errors == []


def _serve(diag: MemoryDiagnostics, **limits: float) -> tuple[MemoryHTTPServer, threading.Thread]:
    srv = MemoryHTTPServer(("127.0.0.1", 0), MemoryAPI(diag, TOKEN), **limits)  # type: ignore[arg-type]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    return srv, thread


def _stop(srv: MemoryHTTPServer, thread: threading.Thread, socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def test_100_continue_only_after_authentication(server: MemoryHTTPServer) -> None:
    """No token, or a wrong one: 401 at once, never an invitation to send the body (issue 16.10)."""
    for auth in ("", "Authorization: Bearer wrong-token-0123456789\r\n"):
        head = (
            f"POST /api/memory/cleanup HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
            "Content-Length: 17\r\nExpect: 100-continue\r\n\r\n"
        ).encode()
        status, headers, _, closed = _exchange(server, head)
        assert status == 401 and headers["connection"] == "close" and closed


def test_half_open_connections_do_not_lock_out_health_checks(diag: MemoryDiagnostics) -> None:
    """256 connections that never finish a request (the default limit): health still answers 200 (issue 16.4).

    The header timeout is long here so that it is not what frees the slots.
    """
    srv, thread = _serve(diag, header_timeout=60.0)
    socks = []
    try:
        for i in range(256):
            s = _connect(srv)
            if i % 2:
                s.sendall(b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\n")  # never finished
            socks.append(s)
        # Accepted in order: the health check below comes after all 256.
        t0 = time.monotonic()
        status, _, body, _ = _exchange(srv, b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status == 200 and json.loads(body)["status"] in ("pass", "warn")
        assert time.monotonic() - t0 < 5
    finally:
        _stop(srv, thread, socks)


def test_per_client_limit_leaves_room_for_other_clients(diag: MemoryDiagnostics) -> None:
    """One address holding its share of busy keep-alive connections gets 503; another does not."""
    srv, thread = _serve(diag, max_per_client=2)
    socks = []
    try:
        for _ in range(2):  # 127.0.0.2 is loopback too: a second client on this host
            s = socket.create_connection(
                ("127.0.0.1", srv.server_address[1]), timeout=10, source_address=("127.0.0.2", 0)
            )
            s.sendall(b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(s, bytearray())[0] == 200
            socks.append(s)
        with socket.create_connection(
            ("127.0.0.1", srv.server_address[1]), timeout=10, source_address=("127.0.0.2", 0)
        ) as third:
            third.sendall(b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(third, bytearray())[0] == 503
        assert _exchange(srv, b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0] == 200
    finally:
        _stop(srv, thread, socks)


def test_header_timeout_is_shorter_than_the_keep_alive_idle_timeout(diag: MemoryDiagnostics) -> None:
    """A request arriving byte by byte is cut at header_timeout; an idle keep-alive connection is not."""
    srv, thread = _serve(diag, header_timeout=0.3, idle_timeout=30.0)
    socks = []
    try:
        keep = _connect(srv)
        socks.append(keep)
        keep.sendall(b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = bytearray()
        assert _read_response(keep, buf)[0] == 200
        with _connect(srv) as fresh, _connect(srv) as slow:
            slow.sendall(b"GET /api/memory/health HTTP/1.1\r\n")  # and nothing more
            t0 = time.monotonic()
            assert _closed(fresh, bytearray()) and _closed(slow, bytearray())
            assert time.monotonic() - t0 < 3
        keep.sendall(b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\n\r\n")  # still open
        assert _read_response(keep, buf)[0] == 200
    finally:
        _stop(srv, thread, socks)


def test_status_and_profile_are_encoded_once_per_sample(clean_registry: None) -> None:
    """Every client gets the same bytes until the next sample; a tick or a cleanup renews them."""
    slow = MemoryDiagnostics(MemoryConfig(sample_interval=30.0, enable_auto_cleanup=False))
    api = MemoryAPI(slow, TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    slow.start()
    try:
        wait_for(lambda: slow.last_sample is not None, what="the first sample")
        for path in ("/api/memory/status", "/api/memory/profile"):
            assert api.try_handle("GET", path, {}, auth, b"") is None  # not built yet
            first = api.handle("GET", path, {}, auth, b"")
            assert first.status == 200
            assert api.handle("GET", path, {}, auth, b"") is first
            assert api.try_handle("GET", path, {}, auth, b"") is first
        before = {p: api.try_handle("GET", p, {}, auth, b"") for p in ("/api/memory/status", "/api/memory/profile")}
        slow.tick()  # a new sample: new answers, rebuilt by the monitor right after its tick
        for path in ("/api/memory/status", "/api/memory/profile"):
            renewed = api.try_handle("GET", path, {}, auth, b"")
            assert renewed is not None and renewed is not before[path]
            assert api.handle("GET", path, {}, auth, b"") is renewed
        status = api.handle("GET", "/api/memory/status", {}, auth, b"")
        assert json.loads(status.body)["last_cleanup"] is None
        cleanup = api.handle("POST", "/api/memory/cleanup", {}, auth, b"")
        assert cleanup.status == 200
        assert api.try_handle("GET", "/api/memory/status", {}, auth, b"") is None  # the cleanup shows at once
        assert json.loads(api.handle("GET", "/api/memory/status", {}, auth, b"").body)["last_cleanup"]["performed"]
    finally:
        slow.close()


def test_health_is_encoded_once_per_sample_unless_the_application_added_checks(clean_registry: None) -> None:
    """A load balancer's health polls are answered from the per-sample answer (on the
    loop, no worker thread, no report); a check the application added runs every time."""
    from memdiag import HealthMonitor

    slow = MemoryDiagnostics(MemoryConfig(sample_interval=30.0, enable_auto_cleanup=False))
    health = HealthMonitor(slow)
    api = MemoryAPI(slow, TOKEN, health=health)
    slow.start()
    try:
        wait_for(lambda: slow.last_sample is not None, what="the first sample")
        path = "/api/memory/health"
        assert api.try_handle("GET", path, {}, {}, b"") is None  # not built yet (no token needed)
        first = api.handle("GET", path, {}, {}, b"")
        assert first.status == 200 and json.loads(first.body)["status"] == "pass"
        assert api.try_handle("GET", path, {}, {}, b"") is first
        head = api.try_handle("HEAD", path, {}, {}, b"")
        assert head is not None and head.status == 200 and head.body == b""
        slow.tick()
        renewed = api.try_handle("GET", path, {}, {}, b"")
        assert renewed is not None and renewed is not first  # rebuilt after the tick
        runs: list[int] = []
        health.add_check("db", lambda: runs.append(1) or ("fail", "db down"))  # type: ignore[func-returns-value]
        assert api.try_handle("GET", path, {}, {}, b"") is None  # the check must run: a worker thread
        answers = [api.handle("GET", path, {}, {}, b"") for _ in range(2)]
        assert [a.status for a in answers] == [503, 503] and len(runs) == 2
        assert json.loads(answers[0].body)["checks"]["db"][0]["output"] == "db down"
        health.remove_check("db")
        assert api.handle("GET", path, {}, {}, b"").status == 200
    finally:
        slow.close()


def test_until_the_rebuild_a_poll_gets_the_previous_samples_answer(clean_registry: None) -> None:
    """Between a tick and the monitor's rebuild (held back here), a poll is answered on the
    loop with the previous sample's answer; a change beyond the sample (a cleanup) is not."""
    slow = MemoryDiagnostics(MemoryConfig(sample_interval=30.0, enable_auto_cleanup=False))
    api = MemoryAPI(slow, TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    slow.start()
    try:
        wait_for(lambda: slow.last_sample is not None, what="the first sample")
        first = api.handle("GET", "/api/memory/status", {}, auth, b"")
        assert api.try_handle("GET", "/api/memory/status", {}, auth, b"") is first  # polled: rebuilt after ticks
        api._tick.prebuild = lambda diag: None  # type: ignore[method-assign]  # the rebuild, held back
        sample = slow.last_sample
        slow.tick()
        assert slow.last_sample is not sample
        assert api.try_handle("GET", "/api/memory/status", {}, auth, b"") is first  # no worker thread
        assert api.handle("POST", "/api/memory/cleanup", {}, auth, b"").status == 200
        assert api.try_handle("GET", "/api/memory/status", {}, auth, b"") is None  # shown at once, built anew
    finally:
        slow.close()


def test_an_answer_not_polled_lately_is_built_for_the_current_sample(clean_registry: None) -> None:
    slow = MemoryDiagnostics(MemoryConfig(sample_interval=30.0, enable_auto_cleanup=False))
    api = MemoryAPI(slow, TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    slow.start()
    try:
        wait_for(lambda: slow.last_sample is not None, what="the first sample")
        first = api.handle("GET", "/api/memory/profile", {}, auth, b"")
        api._tick._asked.clear()  # nobody polled it lately (so the monitor does not rebuild it)
        slow.tick()
        assert api.try_handle("GET", "/api/memory/profile", {}, auth, b"") is None  # not the old one
        assert api.handle("GET", "/api/memory/profile", {}, auth, b"") is not first
    finally:
        slow.close()


def test_the_monitors_prebuild_never_waits_for_a_request_building_the_answer() -> None:
    """The monitor thread rebuilds polled answers after its tick. A request thread holds the
    build lock while it makes an answer, and making one can wait for the monitor (or take a
    sample itself, whose listeners run the prebuild on the same thread): the prebuild must
    give way, not wait. It waited, and requests timed out in a full test run."""
    from memdiag.http.tick import PerTick

    diag = MemoryDiagnostics(MemoryConfig(sample_interval=0.05, history_persist=False)).start()
    try:
        wait_for(lambda: diag.last_sample is not None, 10.0, "a first sample")
        per = PerTick()
        per.get("status", diag)  # asked: the monitor will rebuild it after its ticks
        per.build("status", diag, diag.status)
        done = threading.Event()
        with per._lock:  # a request thread in the middle of a build
            t = threading.Thread(target=lambda: (per.prebuild(diag), done.set()), daemon=True)
            t.start()
            assert done.wait(2.0), "prebuild waited for the build lock"
        # and a sample taken inside make() (on the requesting thread) does not deadlock it
        answer: list[object] = []
        worker = threading.Thread(target=lambda: answer.append(per.build("tick", diag, lambda: diag.tick())), daemon=True)
        worker.start()
        worker.join(5.0)
        assert answer, "a build whose make() takes a sample deadlocked"
    finally:
        diag.close()
