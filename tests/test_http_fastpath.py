"""The fast path for the common GET: read as h11 reads it, or left to h11; the server unharmed."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memdiag.http import fastpath
from memdiag.http.core import MemoryAPI, Response
from memdiag.http.server import MemoryHTTPServer
from memdiag.http.wire import _REASONS_B, Connection, _head
from memdiag.service import MemoryDiagnostics

from .conftest import wait_for
from .test_http_wire import _closed, _connect, _read_response

TOKEN = "fast-token-0123456789abcdef"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"
STATUS = f"GET /api/memory/status HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode()


def _h11_reading(head: bytes) -> tuple[str, str, dict[str, str], bool] | None:
    """What h11 reads from ``head``: method, target, headers (joined as the server joins
    them), and whether the connection stays open after the answer; ``None`` if refused."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    try:
        event = conn.next_event()
        end = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    assert isinstance(event, h11.Request) and isinstance(end, h11.EndOfMessage)
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    conn.send(h11.Response(status_code=200, headers=[(b"Content-Length", b"0")]))
    conn.send(h11.EndOfMessage())
    keep = conn.our_state is h11.DONE and conn.their_state is h11.DONE
    return event.method.decode(), event.target.decode("latin-1"), headers, keep


def _fast_reading(head: bytes) -> tuple[str, str, dict[str, str], bool] | None:
    end, strict = fastpath.find_end(head)
    if end != len(head) or not strict:
        return None
    parsed = fastpath.parse(head)
    return None if parsed is None else (*parsed, True)


EDGES = [
    STATUS,
    b"HEAD /api/memory/profile HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nX-A: 1\r\nx-a:  2 \r\n\r\n",
    b"GET /api/memory/status HTTP/1.1\r\nHost:\r\nConnection: Keep-Alive\r\n\r\n",
    b"GET /api/memory/status HTTP/1.1\r\nHost: x\r\nX-Spaces: a \t b\t\r\n\r\n",
    # Each of these goes to h11 (a bare LF, obs-text, a fold, a body, a second Host, no
    # Host, close, 1.0, a query, a control character, other methods, absolute form).
    b"GET /api/memory/status HTTP/1.1\nHost: x\n\n",
    b"GET /api/memory/status HTTP/1.1\r\nHost: x\n\r\n",
    b"GET /api/memory/status HTTP/1.1\r\nHost: x\r\nX-A: caf\xe9\r\n\r\n",
    b"GET /api/memory/status HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    b"GET /api/memory/status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"GET /api/memory/status HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    b"GET /api/memory/status HTTP/1.1\r\nAccept: */*\r\n\r\n",
    b"GET /api/memory/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /api/memory/status HTTP/1.0\r\nHost: x\r\n\r\n",
    b"GET /api/memory/status?pid=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/memory/status HTTP/1.1\r\nHost: x\r\nX-A: \x01\r\n\r\n",
    b"GET /api/memory/status HTTP/1.1\r\nHost: x\r\nX A: 1\r\n\r\n",
    b"GET /api/memory/status HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
    b"GET  /api/memory/status HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://x/api/memory/status HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /api/memory/status HTTP/1.1\r\nHost: x\r\n\r\n",
]


@pytest.mark.parametrize("head", EDGES)
def test_the_fast_reading_is_h11s_reading_or_none(head: bytes) -> None:
    fast = _fast_reading(head)
    assert fast is None or fast == _h11_reading(head)
    if head in EDGES[:4]:
        assert fast is not None, "a request of the fast subset was left to h11"


_pieces = st.sampled_from(
    [
        b"GET",
        b"HEAD",
        b"POST",
        b" ",
        b"  ",
        b"/api/memory/status",
        b"/a?b",
        b"/#",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"\r\n",
        b"\n",
        b"\r",
        b"Host",
        b"host",
        b"HOST",
        b":",
        b": ",
        b" x",
        b"\t",
        b"Connection",
        b"keep-alive",
        b"close",
        b"Content-Length",
        b"0",
        b"Expect",
        b"Upgrade",
        b"X-A",
        b"\x00",
        b"\x7f",
        b"\xe9",
        b",",
        b"*",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_pieces, max_size=24), st.booleans())
def test_fuzzed_heads_are_read_as_h11_reads_them(pieces: list[bytes], prefixed: bool) -> None:
    head = b"".join(pieces) + b"\r\n\r\n"
    if prefixed:
        head = b"GET /api/memory/status HTTP/1.1\r\nHost: x\r\n" + head
    fast = _fast_reading(head)
    assert fast is None or fast == _h11_reading(head)


@pytest.mark.parametrize("status", [200, 204, 401, 404])
def test_encoded_answers_are_the_bytes_h11_writes(status: int) -> None:
    body = b"" if status == 204 else b'{"a":1}'
    resp = Response(status, [("Content-Type", "application/json"), ("Allow", "GET, HEAD")], body)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.next_event()
    conn.next_event()
    expected = conn.send(_head(resp, False, shared=False))
    if body:
        expected += conn.send(h11.Data(data=body))
    for _ in range(3):  # the Date header may turn between the two encodings: then again
        second = fastpath.HttpDate.second
        first = fastpath.encode(resp, _REASONS_B, head_only=False, shared=True)
        again = fastpath.encode(resp, _REASONS_B, head_only=False, shared=True)
        if fastpath.HttpDate.second == second:
            break
    assert first == expected
    assert again is first  # a shared answer is encoded once per second, not per request


def test_a_header_that_cannot_be_sent_is_refused() -> None:
    bad = Response(200, [("X-Injected", "a\r\nSet-Cookie: b")], b"")
    with pytest.raises(ValueError, match="cannot be sent"):
        fastpath.encode(bad, _REASONS_B, head_only=False, shared=False)


# -- over sockets ------------------------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["fast", "h11"])
def srv(request: pytest.FixtureRequest, diag: MemoryDiagnostics) -> Iterator[MemoryHTTPServer]:
    """A server with the fast path on, and one with h11 reading everything (same answers)."""
    diag.start()
    conn_cls = type("C", (Connection,), {"fast_path": request.param})
    server = MemoryHTTPServer(("127.0.0.1", 0), MemoryAPI(diag, TOKEN), header_timeout=1.0, connection=conn_cls)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _status_of(server: MemoryHTTPServer, raw: bytes) -> tuple[int, str | None, bool]:
    with _connect(server) as sock:
        sock.sendall(raw)
        buf = bytearray()
        if raw.startswith(b"HEAD "):  # a head only, whatever its Content-Length says
            while b"\r\n\r\n" not in buf:
                buf += sock.recv(65536)
            head, _, rest = bytes(buf).partition(b"\r\n\r\n")
            buf[:] = rest
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        else:
            status, headers, _ = _read_response(sock, buf)
        if headers.get("connection") == "close":
            return status, "close", _closed(sock, buf)
        sock.sendall(STATUS)  # kept open: the next request is answered
        return status, None, _read_response(sock, buf)[0] != 200


CHUNKED = b"GET /api/memory/status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"


def test_requests_outside_the_subset_get_the_same_answer_as_from_h11_alone(diag: MemoryDiagnostics) -> None:
    """Status, ``Connection`` header and closing, with the fast path on and off, agree."""
    diag.start()
    servers = []
    for fast in (True, False):
        conn_cls = type("C", (Connection,), {"fast_path": fast})
        server = MemoryHTTPServer(("127.0.0.1", 0), MemoryAPI(diag, TOKEN), connection=conn_cls)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
    try:
        for head in [*EDGES, CHUNKED]:
            got = [_status_of(server, head) for server, _ in servers]
            assert got[0] == got[1], head
        for server, _ in servers:  # unharmed
            assert _status_of(server, STATUS)[0] == 200
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(5)


def test_pipelined_fast_and_slow_requests_are_answered_in_order(srv: MemoryHTTPServer) -> None:
    body = b'{"dry_run": true}'
    cleanup = (
        f"POST /api/memory/cleanup HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    health = b"GET /api/memory/health HTTP/1.1\r\nHost: x\r\n\r\n"
    head = f"HEAD /api/memory/profile HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode()
    nope = b"GET /api/memory/nope HTTP/1.1\r\nHost: x\r\n\r\n"
    noauth = b"GET /api/memory/status HTTP/1.1\r\nHost: x\r\n\r\n"
    seq = [STATUS] * 5 + [cleanup, STATUS, head, nope, noauth, health] + [STATUS] * 5
    with _connect(srv) as sock:
        sock.sendall(b"".join(seq))
        buf = bytearray()
        answers = [_read_response(sock, buf) for _ in seq]
        assert [a[0] for a in answers] == [200] * 5 + [200, 200, 200, 404, 401, 200] + [200] * 5
        assert json.loads(answers[5][2])["dry_run"] is True and "pid" in json.loads(answers[6][2])
        assert answers[7][2] == b"" and json.loads(answers[10][2])["status"] in ("pass", "warn")
        sock.sendall(STATUS)  # still open
        assert _read_response(sock, buf)[0] == 200


def test_a_request_arriving_byte_by_byte_is_answered(srv: MemoryHTTPServer) -> None:
    with _connect(srv) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(STATUS)):
            sock.send(STATUS[i : i + 1])
        status, _, body = _read_response(sock, bytearray())
        assert status == 200 and "pid" in json.loads(body)


def test_a_slowloris_head_is_cut_at_the_header_timeout(srv: MemoryHTTPServer) -> None:
    """A head of the fast subset that never ends: closed after header_timeout (1 s here),
    however steadily its bytes drip; other clients are served meanwhile."""
    with _connect(srv) as slow:
        slow.sendall(b"GET /api/memory/status HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < 10 and not closed:
            try:
                slow.sendall(b"X-Drip: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            with _connect(srv) as other:
                other.sendall(STATUS)
                assert _read_response(other, bytearray())[0] == 200
            slow.settimeout(0.1)
            try:
                closed = slow.recv(65536) == b""
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed = True
        assert closed and time.monotonic() - t0 < 5


@pytest.mark.parametrize(("size", "status"), [(9 * 1024, 200), (70 * 1024, 431)])
def test_large_heads_go_to_h11_and_its_limit(srv: MemoryHTTPServer, size: int, status: int) -> None:
    raw = STATUS[:-2] + b"X-Big: " + b"v" * size + b"\r\n\r\n"
    with _connect(srv) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading at its limit and answered
        got, headers, _ = _read_response(sock, bytearray())
    assert got == status
    assert (headers.get("connection") == "close") is (status == 431)


def test_garbage_after_fast_answers_gets_400_and_the_server_is_unharmed(srv: MemoryHTTPServer) -> None:
    with _connect(srv) as sock:
        sock.sendall(STATUS + STATUS + b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        buf = bytearray()
        assert [_read_response(sock, buf)[0] for _ in range(3)] == [200, 200, 400]
        assert _closed(sock, buf)
    wait_for(lambda: srv.connections == 0, timeout=30, what="the closed connection to go")
    with _connect(srv) as sock:
        sock.sendall(STATUS)
        assert _read_response(sock, bytearray())[0] == 200


def test_heads_are_remembered_within_bounds() -> None:
    first = fastpath.parse(STATUS)
    assert first is not None and fastpath.parse(STATUS) is first  # not parsed again
    with pytest.raises(TypeError):
        first[2]["authorization"] = "Bearer another"  # type: ignore[index]  # shared: read-only
    for i in range(1000):  # a client sending a new head every time
        assert fastpath.parse(STATUS[:-2] + b"X-N: %d\r\n\r\n" % i) is not None
    assert len(fastpath._MEMO) <= fastpath._MAX_MEMO
    big = STATUS[:-2] + b"X-Big: " + b"v" * fastpath._MAX_MEMO_HEAD + b"\r\n\r\n"
    assert fastpath.parse(big) is not None and big not in fastpath._MEMO


def test_errors_and_head_answers_do_not_push_the_shared_answers_out(srv: MemoryHTTPServer) -> None:
    noauth = b"GET /api/memory/status HTTP/1.1\r\nHost: x\r\n\r\n"
    head = f"HEAD /api/memory/status HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode()
    fastpath._SHARED.clear()
    with _connect(srv) as sock:
        buf = bytearray()
        openapi = f"GET /api/memory/openapi.json HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode()
        for _ in range(3):  # the first one builds the document on a worker (through h11)
            sock.sendall(openapi)
            assert _read_response(sock, buf)[0] == 200
        sock.sendall(noauth * 3)
        assert [_read_response(sock, buf)[0] for _ in range(3)] == [401] * 3
        for _ in range(3):
            sock.sendall(head)
            while b"\r\n\r\n" not in buf:
                buf += sock.recv(65536)
            del buf[: buf.index(b"\r\n\r\n") + 4]
    if srv._connection.fast_path:  # kept: the 200s to GETs alone
        assert fastpath._SHARED and all(r.status == 200 and not h for (_, h), (r, _, _) in fastpath._SHARED.items())


def test_heads_pipelined_behind_a_request_h11_read_are_gathered_and_limited(srv: MemoryHTTPServer) -> None:
    """A head that arrives with (behind) a request read by h11 still gets the 64 KiB limit."""
    body = b'{"dry_run": true}'
    cleanup = (
        f"POST /api/memory/cleanup HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    big = STATUS[:-2] + b"X-Big: " + b"v" * (70 * 1024) + b"\r\n\r\n"
    with _connect(srv) as sock:
        try:
            sock.sendall(cleanup + STATUS + big)
        except (BrokenPipeError, ConnectionResetError):
            pass
        buf = bytearray()
        assert [_read_response(sock, buf)[0] for _ in range(3)] == [200, 200, 431]
