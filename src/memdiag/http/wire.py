"""HTTP/1.1 on an asyncio event loop: the standalone server's connections.

One :class:`Connection` per client socket parses requests from its buffer, answers what
:meth:`MemoryAPI.try_handle` has ready (the current profile, errors, ``OPTIONS``) on the
loop itself, and sends everything else to :class:`Workers` (threads), one request at a
time per connection so pipelined answers keep their order.

Why not the standard library's ``ThreadingHTTPServer`` (what this replaced): a thread per
connection means fifty polling clients are fifty threads taking turns on the GIL, and the
turns, not the work, set the latency (p99 21-30 ms for a cached answer under 50 clients
on two cores, against 8-11 ms here; ``benchmarks/bench_http.py``).

What is implemented of HTTP/1.1: keep-alive (HTTP/1.0 with ``Connection: keep-alive``),
pipelining, ``Content-Length`` bodies up to the API's ``max_body`` (larger: 413 without
reading it, then close), ``Expect: 100-continue``, ``HEAD``. Refused with a JSON error and
a closed connection: chunked bodies (411), a malformed request line or header (400), a
head over 64 KiB or over 100 header lines (431), a version other than 1.0/1.1 (505).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import re
import socket
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .core import JSON_TYPE, Response, dumps

if TYPE_CHECKING:
    from .core import MemoryAPI

__all__ = ["MAX_HEAD", "MAX_HEADERS", "REASONS", "Connection", "Workers"]

log = logging.getLogger("memdiag.http")

MAX_HEAD = 64 * 1024  # request line + headers
MAX_HEADERS = 100
LINGER = 2.0  # seconds a closing connection waits for the peer's FIN (see Connection._close)

REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    417: "Expectation Failed",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSIONS = {"HTTP/1.1": 11, "HTTP/1.0": 10}


class _Reject(Exception):
    """A request the connection answers itself and then closes."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


class _Date:
    """The ``Date`` header value, formatted once per second."""

    second = -1
    text = ""

    @classmethod
    def now(cls) -> str:
        t = int(time.time())
        if t != cls.second:
            cls.second, cls.text = t, formatdate(t, usegmt=True)
        return cls.text


class Workers:
    """Up to ``size`` daemon threads running the requests that build a report.

    Daemon threads, unlike :mod:`concurrent.futures`' pool: a request still running at
    interpreter exit (a cleanup, a census) must not hold the host's exit. Threads start
    on demand and stay for reuse.
    """

    def __init__(self, size: int, name: str = "memdiag-http-worker") -> None:
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[Any], None]] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Run ``fn()`` on a worker, then ``done(result)`` on that worker."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            self._jobs.put((fn, done))
            if self._idle == 0 and len(self._threads) < self._size:
                t = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._threads.append(t)
                t.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            job = self._jobs.get()
            with self._lock:
                self._idle -= 1
            if job is None:
                return
            fn, done = job
            try:
                done(fn())
            except Exception:  # a failing callback must not end the worker
                log.debug("memdiag API: a worker job failed", exc_info=True)

    def close(self) -> None:
        """Let every worker finish its current job and exit (does not wait)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            count = len(self._threads)
        for _ in range(count):
            self._jobs.put(None)


class Connection(asyncio.Protocol):
    """One client connection: parse, answer in order, keep alive or close."""

    def __init__(
        self,
        api: MemoryAPI,
        workers: Workers,
        connections: set[Connection],
        *,
        idle_timeout: float,
        max_connections: int,
    ) -> None:
        self.api = api
        self.workers = workers
        self.connections = connections
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client = "-"
        self.buf = bytearray()
        self.busy = False  # a request is on a worker
        self.write_paused = False
        self.read_paused = False
        self.closing = False
        self.continued = False  # "100 Continue" sent for the request being received
        self.closing_after = False  # the peer sent EOF: close once the answers went out
        self.last_active = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "-"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Head and body go out in one write; no Nagle wait for small responses.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        full = len(self.connections) >= self.max_connections
        self.connections.add(self)  # rejected ones too: a shutdown closes every transport
        if full:
            self._reject(_Reject(503, "service unavailable", "too many open connections to the memdiag API"))
            return
        self.last_active = self.loop.time()
        self.timer = self.loop.call_later(self.idle_timeout, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.buf.clear()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buf += data
        if self.busy or self.write_paused:
            if len(self.buf) > MAX_HEAD + self.api.max_body and not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]
            return
        self._process()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._process()

    def eof_received(self) -> bool | None:
        if self.closing:
            return None  # our answer is out (or abandoned): close now
        # A client that half-closes after its last request still gets the answers.
        self.closing_after = True
        self._process()
        return True  # keep the transport open for writing; _process closes it

    # -- requests -----------------------------------------------------------------------

    def _process(self) -> None:
        """Answer every complete request in the buffer, in order, until one must wait."""
        try:
            while not (self.busy or self.write_paused or self.closing):
                if not self._next_request():
                    break
            if self.read_paused and not (self.busy or self.write_paused or self.closing):
                self.read_paused = False
                self.transport.resume_reading()  # type: ignore[union-attr]
            if self.closing_after and not self.busy and not self.closing:
                self._close()
        except Exception:  # never let a parsing bug escape into the loop
            log.debug("memdiag API: connection from %s failed", self.client, exc_info=True)
            self._close()

    def _next_request(self) -> bool:
        """Handle the request at the head of the buffer; False if it is not all here yet."""
        buf = self.buf
        m = _END_OF_HEAD.search(buf, 0, MAX_HEAD + 4)
        if m is None:
            if len(buf) > MAX_HEAD:
                self._reject(_Reject(431, "request header fields too large", f"the limit is {MAX_HEAD} bytes"))
            return False
        try:
            method, target, version, headers = _parse_head(bytes(buf[: m.start()]))
            length, keep_alive = _framing(version, headers)
        except _Reject as r:
            self._reject(r)
            return False
        body_at = m.end()
        max_body = self.api.max_body
        if length > max_body:
            # Not read: answered at once (413, or 404/405 first) and the connection closes,
            # since the unread body would otherwise be parsed as the next request.
            del buf[:body_at]
            self._dispatch(method, target, headers, b"", keep_alive=False)
            return True
        if len(buf) < body_at + length:
            expect = headers.get("expect", "").lower()
            if expect and not self.continued:
                if expect != "100-continue":
                    self._reject(_Reject(417, "expectation failed", "only Expect: 100-continue is supported"))
                    return False
                if version >= 11:
                    self.continued = True
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
            return False
        body = bytes(buf[body_at : body_at + length])
        del buf[: body_at + length]
        self.continued = False
        self._dispatch(method, target, headers, body, keep_alive=keep_alive)
        return True

    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes, *, keep_alive: bool) -> None:
        try:
            path, query = _split_target(target)
        except _Reject as r:
            self._reject(r)
            return
        api = self.api
        resp = api.try_handle(method, path, query, headers, body, client=self.client)
        if resp is not None:
            self._send(resp, method, keep_alive)
            return
        self.busy = True
        loop = self.loop
        assert loop is not None

        def run() -> Response:
            return api.handle(method, path, query, headers, body, client=self.client)

        def done(result: Response) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the server is gone
                loop.call_soon_threadsafe(self._finish, result, method, keep_alive)

        try:
            self.workers.submit(run, done)
        except RuntimeError:  # the server is shutting down
            self.busy = False
            self._close()

    def _finish(self, resp: Response, method: str, keep_alive: bool) -> None:
        self.busy = False
        if self.closing:
            return
        self._send(resp, method, keep_alive)
        self._process()

    # -- output -------------------------------------------------------------------------
    def _send(self, resp: Response, method: str, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        lines = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Unknown')}"]
        lines += [f"{k}: {v}" for k, v in resp.headers]
        lines.append(f"Date: {_Date.now()}")
        lines.append("Server: memdiag")
        if resp.status != 204:
            lines.append(f"Content-Length: {len(resp.body)}")
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        transport.write(head if method == "HEAD" else head + resp.body)
        self.last_active = self.loop.time()  # type: ignore[union-attr]
        if log.isEnabledFor(logging.DEBUG):  # formatting every request line costs
            log.debug('%s "%s" %s', self.client, method, resp.status)
        if not keep_alive:
            self._close()

    def _reject(self, r: _Reject) -> None:
        body = dumps({"error": r.error, "detail": r.detail})
        self._send(Response(r.status, [("Content-Type", JSON_TYPE)], body), "GET", keep_alive=False)
        self._close()

    def close_now(self) -> None:
        """Drop the connection at once (the server is shutting down)."""
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def _close(self) -> None:
        """End the connection once what is buffered is written, without a reset.

        Closing a socket that has unread input makes the kernel answer with RST, which can
        destroy the answer still in flight (a 413 to a client sending its body, a 503 to
        one sending its request). So: send FIN after the answer, keep reading and dropping
        input until the peer closes too, and close for good after ``LINGER`` seconds.
        """
        if self.closing:
            return
        self.closing = True
        transport = self.transport
        if transport is None:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.closing_after or not transport.can_write_eof() or self.loop is None:
            transport.close()  # the peer already sent its FIN: nothing more to read
            return
        try:
            transport.write_eof()
        except (OSError, RuntimeError):
            transport.close()
            return
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        self.timer = self.loop.call_later(LINGER, transport.close)

    def _check_idle(self) -> None:
        """Close a connection idle (or stuck mid-request) for ``idle_timeout`` seconds."""
        self.timer = None
        if self.closing:
            return
        loop = self.loop
        assert loop is not None
        now = loop.time()
        if self.busy:  # a request on a worker is not idleness
            delay = self.idle_timeout
        elif now < self.last_active + self.idle_timeout:
            delay = self.last_active + self.idle_timeout - now
        else:
            self._close()
            return
        self.timer = loop.call_later(max(0.05, delay), self._check_idle)


def _parse_head(head: bytes) -> tuple[str, str, int, dict[str, str]]:
    """``(method, target, version, headers)`` of a request head; headers lower-cased."""
    lines = head.decode("latin-1").split("\n")
    request_line = lines[0].rstrip("\r")
    parts = request_line.split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise _Reject(400, "bad request", "malformed request line")
    method, target, proto = parts
    version = _VERSIONS.get(proto)
    if version is None:
        if proto.startswith("HTTP/") and re.fullmatch(r"HTTP/\d\.\d", proto):
            raise _Reject(505, "http version not supported", f"{proto} is not supported; use HTTP/1.1")
        raise _Reject(400, "bad request", "malformed request line")
    if len(lines) - 1 > MAX_HEADERS:
        raise _Reject(431, "request header fields too large", f"more than {MAX_HEADERS} header lines")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        line = raw.rstrip("\r")
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):  # also rejects obsolete line folding
            raise _Reject(400, "bad request", "malformed header line")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return method, target, version, headers


def _framing(version: int, headers: dict[str, str]) -> tuple[int, bool]:
    """``(body length, keep alive)`` of a request; rejects what cannot be framed safely."""
    if headers.get("transfer-encoding", "identity").strip().lower() != "identity":
        # Chunked bodies are not decoded: ask for a length (and never guess the framing).
        raise _Reject(411, "length required", "send Content-Length")
    length = 0
    declared = headers.get("content-length")
    if declared is not None:
        values = {v.strip() for v in declared.split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise _Reject(400, "bad request", "invalid Content-Length")
        length = int(values.pop())
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in tokens if version >= 11 else "keep-alive" in tokens
    return length, keep_alive


def _split_target(target: str) -> tuple[str, dict[str, list[str]]]:
    """``(path, query)`` of a request target (origin, absolute or asterisk form)."""
    if target.startswith("/"):
        path, _, query = target.partition("#")[0].partition("?")
    elif "://" in target:
        parts = urlsplit(target)
        path, query = parts.path or "/", parts.query
    elif target == "*":
        path, query = "*", ""
    else:
        raise _Reject(400, "bad request", "the request target must be a path")
    return path, parse_qs(query, keep_blank_values=True) if query else {}
