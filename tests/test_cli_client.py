"""The CLI's API client (plain HTTP/1.1, else h11, over a socket) against real servers that answer badly:
every failure is one :class:`ApiError` saying what happened, never a traceback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from memdiag.cli._client import MAX_ANSWER_BYTES, ApiClient, ApiError


def serve_once(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A loopback TCP server: reads the request head, then lets ``answer`` reply."""
    srv = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def run() -> None:
        conn, _ = srv.accept()
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                buf += chunk
            answer(conn)
            done.wait(10)  # keep the connection until the client is done with it

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        done.set()
        t.join(10)
        srv.close()


@pytest.fixture
def chunked() -> Iterator[str]:
    body = b'{"ok": true, "n": 1}'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    yield from serve_once(lambda c: c.sendall(head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)))


def test_a_chunked_answer_is_read_whole(chunked: str) -> None:
    resp = ApiClient(chunked, timeout=10).get("/api/memory/status")
    assert resp.status == 200 and resp.body == {"ok": True, "n": 1}
    assert resp.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP answer"),
        (b"", "closed without an answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{", "not an HTTP answer"),  # cut short
        (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_ANSWER_BYTES + 1), "larger than"),
    ],
    ids=["not-http", "closed", "truncated", "oversized"],
)
def test_a_bad_answer_is_one_api_error(reply: bytes, says: str) -> None:
    def answer(conn: socket.socket) -> None:
        conn.sendall(reply)
        if says == "larger than":
            chunk = b" " * (1 << 20)
            try:
                for _ in range((MAX_ANSWER_BYTES >> 20) + 2):
                    conn.sendall(chunk)
            except OSError:
                pass  # the client hung up, as it should
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:  # ENOTCONN when the client already hung up (the oversized case)
            pass

    for url in serve_once(answer):
        with pytest.raises(ApiError) as info:
            ApiClient(url, timeout=10).get("/api/memory/status")
        assert info.value.unreachable and says in str(info.value), str(info.value)


def test_a_silent_server_is_a_timeout() -> None:
    for url in serve_once(lambda c: None):
        with pytest.raises(ApiError) as info:
            ApiClient(url, timeout=0.3).get("/api/memory/status")
        assert info.value.unreachable and "did not answer within 0.3s" in str(info.value)


def h11_reads(raw: bytes) -> tuple[int, str, dict[str, str], bytes]:
    """What h11 makes of the answer ``raw`` to a GET (the reference for the plain reader)."""
    import h11

    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x"), ("Connection", "close")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")
    status, reason, fields, body = 0, "", {}, b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            status, reason = event.status_code, event.reason.decode("latin-1")
            fields = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return status, reason, fields, body


@pytest.mark.parametrize(
    "raw",
    [
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}',
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 12\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 404 \r\ncontent-length:  0 \r\nX-A: 1\r\nx-a: 2\r\n\r\n",  # empty reason, spaces, repeats
        b"HTTP/1.1 200 Fine\r\nContent-Length: 3\r\nX-Latin: caf\xe9\r\n\r\nabcEXTRA",  # bytes after the body
    ],
)
def test_a_plain_answer_is_read_as_h11_reads_it(raw: bytes) -> None:
    from memdiag.cli._client import plain_answer

    assert plain_answer(raw) == h11_reads(raw)
    assert plain_answer(raw[:-1]) is None or raw.endswith(b"EXTRA")  # not whole yet


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n folded\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\n\r\n{}",  # no length: until the server closes
        b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: 1\r\nContent-Length: 2\r\n\r\n{}",
    ],
    ids=["chunked", "informational", "http-1.0", "folded", "two-lengths", "no-length", "204", "bad-name"],
)
def test_anything_else_is_left_to_h11(raw: bytes) -> None:
    from memdiag.cli._client import plain_answer

    assert plain_answer(raw) is None


def test_a_request_h11_would_check_is_left_to_it() -> None:
    from memdiag.cli._client import plain_request

    ok = plain_request("GET", "/api/memory/status", [("Host", "localhost"), ("Accept", "application/json")], b"")
    assert ok == b"GET /api/memory/status HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n"
    odd = [("Authorization", "Bearer a\r\nX: y"), ("Authorization", "Bearer caf\u00e9"), ("Bad Name", "x")]
    for header in odd:
        assert plain_request("GET", "/", [("Host", "x"), header], b"") is None
