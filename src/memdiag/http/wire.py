"""HTTP/1.1 on an asyncio event loop: the standalone server's connections.

The protocol itself is h11's (sans-IO, pure Python; the parser under httpx and uvicorn):
request lines, headers, framing, keep-alive and pipelining are parsed and checked there,
except for the common poll: a request in :mod:`.fastpath`'s strict subset (a bodiless
``GET``/``HEAD`` that h11 would read the same way) whose answer is ready is read and
answered without h11, in one write. What this module adds is what h11 leaves to its
user, the limits and the routing:

- One :class:`Connection` per client socket feeds h11 and answers, in order, what
  :meth:`MemoryAPI.try_handle` has ready (the current profile and status, errors,
  ``OPTIONS``) on the loop itself; everything else goes to :class:`Workers` (threads),
  one request at a time per connection so pipelined answers keep their order.
- A request that declares a body is checked before the body is read
  (:meth:`MemoryAPI.precheck`: route, size, token): ``100 Continue`` is sent only to an
  authenticated request within the limits, and a refused one is answered unread.
- :class:`ConnectionTable` admits connections: ``max_connections`` in all and
  ``max_per_client`` from one address; when either is full, the oldest connection that
  has not yet sent a whole request is closed to make room, so half-open connections
  cannot lock health checks out (a new connection gets 503 only when every slot holds a
  client that completed a request or is being answered).
- Timeouts: a request (head and body) must arrive within ``header_timeout`` of its first
  byte (of the connection, for the first request); between requests a keep-alive
  connection may stay idle ``idle_timeout``.

Why not the standard library's ``ThreadingHTTPServer`` (what this replaced first): a thread
per connection means fifty polling clients are fifty threads taking turns on the GIL, and
the turns, not the work, set the latency (``benchmarks/bench_http.py``).

Refused with a JSON error and a closed connection: what h11 rejects (400), a head over
64 KiB (431: heads are gathered here before h11 reads them, so the limit holds however
the bytes were split), a missing ``Host`` on HTTP/1.1 (400, RFC 9112 3.2), over 100 header
lines (431), chunked bodies (411: send ``Content-Length``), an ``Expect`` other than
``100-continue`` (417), a version other than 1.0/1.1 (505). HTTP/1.0 gets one request per
connection (h11 does not implement HTTP/1.0 keep-alive).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .._record import record

try:
    import h11
except ImportError as exc:  # a broken install: h11 is one of memdiag's own dependencies
    raise ImportError(
        "memdiag's standalone API server needs the 'h11' package, a dependency of memdiag: "
        "pip install h11 (or reinstall memdiag); the framework adapters do not need it",
        name="h11",
    ) from exc

from .._logging import get_logger
from . import fastpath
from .core import JSON_TYPE, Response, dumps
from .fastpath import HttpDate

if TYPE_CHECKING:
    from .core import MemoryAPI

__all__ = ["MAX_HEAD", "MAX_HEADERS", "REASONS", "Connection", "ConnectionTable", "Limits", "Workers"]

log = get_logger("memdiag.http")

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
_REASONS_B = {k: v.encode() for k, v in REASONS.items()}
_CONTINUE = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
_ANSWERED, _WAIT, _FALLBACK = object(), object(), object()  # what Connection._fast did


@record
class Limits:
    """What one server allows its clients.

    Attributes:
        max_connections: open connections in all.
        max_per_client: open connections from one address.
        header_timeout: seconds a request (head and body) may take to arrive, counted
            from its first byte (from the connection's start, for the first request).
        idle_timeout: seconds a keep-alive connection may wait between two requests.
    """

    max_connections: int = 256
    max_per_client: int = 128
    header_timeout: float = 5.0
    idle_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_client < 1:
            raise ValueError("max_connections and max_per_client must be >= 1")
        if not (self.header_timeout > 0 and self.idle_timeout > 0):
            raise ValueError("header_timeout and idle_timeout must be > 0")


class _Reject(Exception):
    """A request the connection answers itself and then closes."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


_HEADS: dict[tuple[int, bool], tuple[Response, bytes, h11.Response]] = {}
_MAX_HEADS = 8


def _head(resp: Response, close: bool, *, shared: bool) -> h11.Response:
    """The h11 event of ``resp``'s head.

    A ``shared`` answer (one :meth:`MemoryAPI.try_handle` returned: the status or profile
    of the current sample goes to every client until the next) has its head built and
    checked by h11 once per second, not once per client. At most ``_MAX_HEADS`` entries,
    each holding its answer so that an ``id`` is not reused while it is remembered; a
    stale or raced entry is only a miss (every step is one atomic dict operation).
    """
    date = HttpDate.now()
    key = (id(resp), close)
    hit = _HEADS.get(key) if shared else None
    if hit is not None and hit[0] is resp and hit[1] is date:
        return hit[2]
    headers: list[tuple[bytes | str, bytes | str]] = list(resp.headers)
    headers += [(b"Date", date), (b"Server", b"memdiag")]
    if resp.status != 204:
        headers.append((b"Content-Length", str(len(resp.body)).encode()))
    if close:
        headers.append((b"Connection", b"close"))
    event = h11.Response(status_code=resp.status, headers=headers, reason=_REASONS_B.get(resp.status, b"Unknown"))
    if shared:
        if len(_HEADS) >= _MAX_HEADS:
            _HEADS.clear()
        _HEADS[key] = (resp, date, event)
    return event


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


class ConnectionTable:
    """The open connections of one server and the admission rule (see the module doc).

    Touched only on the server's loop thread. ``every`` holds all transports, refused
    ones included, so a shutdown closes them all; the limits count admitted ones.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.every: set[Connection] = set()
        self._admitted: dict[Connection, None] = {}  # oldest first
        self._per_client: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.every)

    def admit(self, conn: Connection) -> bool:
        """Admit ``conn``, closing a half-open connection if that makes room; False if full."""
        self.every.add(conn)
        limits = self.limits
        if self._per_client.get(conn.client, 0) >= limits.max_per_client:
            if not self._evict(conn.client):
                return False
        if len(self._admitted) >= limits.max_connections and not self._evict(None):
            return False
        self._admitted[conn] = None
        self._per_client[conn.client] = self._per_client.get(conn.client, 0) + 1
        return True

    def _evict(self, client: str | None) -> bool:
        for other in self._admitted:
            if other.half_open and (client is None or other.client == client):
                log.debug("memdiag API: closing a half-open connection from %s to admit another", other.client)
                self.discard(other)
                other.close_now()
                return True
        return False

    def discard(self, conn: Connection) -> None:
        self.every.discard(conn)
        if self._admitted.pop(conn, 0) is None:
            left = self._per_client[conn.client] - 1
            if left:
                self._per_client[conn.client] = left
            else:
                del self._per_client[conn.client]


class Connection(asyncio.Protocol):
    """One client connection: h11 parses, the API answers in order, keep alive or close.

    ``fast_path`` (a class attribute, on by default): read the common request without h11
    (:mod:`.fastpath`); off, h11 reads every request (the benchmark's ablation).
    """

    fast_path = True

    def __init__(self, api: MemoryAPI, workers: Workers, table: ConnectionTable) -> None:
        self.api = api
        self.workers = workers
        self.table = table
        self.limits = table.limits
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client = "-"
        self.buf = bytearray()  # received, not yet given to h11
        self.fed = False  # h11 holds a request or bytes of one: what follows goes to it too
        self.scanned = 0  # where to look for the end of the head in buf next
        self.request: tuple[str, str, dict[str, str], list[bytes]] | None = None  # head being answered
        self.answered = 0  # requests answered on this connection
        self.busy = False  # a request is on a worker
        self.write_paused = False
        self.read_paused = False
        self.closing = False
        self.request_started: float | None = None  # first byte of the request being received
        self.last_active = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self._eof = False  # the peer half-closed
        self._eof_fed = False

    @property
    def half_open(self) -> bool:
        """Connected, but no request was ever completed or is being answered."""
        return self.answered == 0 and not self.busy and not self.closing and self.h11.their_state is h11.IDLE

    # -- asyncio callbacks -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.loop = loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "-"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Head and body go out in one write; no Nagle wait for small responses.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self.table.admit(self):
            self._reject(_Reject(503, "service unavailable", "too many open connections to the memdiag API"))
            return
        self.last_active = self.request_started = loop.time()
        self.timer = loop.call_later(min(self.limits.header_timeout, self.limits.idle_timeout), self._check_timeouts)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.table.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.buf.clear()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.request_started is None and self.request is None:
            self.request_started = self.loop.time()  # type: ignore[union-attr]
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
        # A client that half-closes after its last request still gets the answers:
        # h11 reports ConnectionClosed once it has handed out every complete request.
        self._eof = True
        self._process()
        return True  # keep the transport open for writing; _process closes it

    # -- requests -----------------------------------------------------------------------
    def _process(self) -> None:
        """Answer every complete request received, in order, until one must wait.

        A request in :mod:`.fastpath`'s subset is answered here without h11 when the API
        has its answer ready; every other one, and all that follows it in the buffer,
        goes to h11 (which then holds the connection until its request is answered).
        """
        try:
            while not (self.busy or self.write_paused or self.closing):
                if not self.fed:  # h11 holds nothing: the next request starts in buf
                    if not (self.buf or self._eof):
                        break
                    got = self._fast() if self.buf else _FALLBACK
                    if got is _ANSWERED:
                        continue
                    if got is _WAIT and not self._eof:
                        break
                if self.buf:  # not for the fast path: h11 reads it, and what follows
                    self._feed()
                if self._eof and not self._eof_fed:
                    self._eof_fed = True
                    self.h11.receive_data(b"")
                if not self._next_event():
                    break
            if self.read_paused and not (self.busy or self.write_paused or self.closing):
                self.read_paused = False
                self.transport.resume_reading()  # type: ignore[union-attr]
        except _Reject as r:
            self._reject(r)
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            if status == 431:
                self._reject(_Reject(431, "request header fields too large", f"the limit is {MAX_HEAD} bytes"))
            else:
                self._reject(_Reject(400, "bad request", str(exc)[:200] or "malformed request"))
        except Exception:  # never let a bug escape into the loop
            log.debug("memdiag API: connection from %s failed", self.client, exc_info=True)
            self._close()

    def _feed(self) -> None:
        self.h11.receive_data(bytes(self.buf))
        self.buf.clear()
        self.fed = True
        self.scanned = 0

    def _fast(self) -> object:
        """Read the head at the start of ``buf``: ``_WAIT`` while it arrives, 431 past
        ``MAX_HEAD``; answer it here if it is in :mod:`.fastpath`'s subset and the API has
        its answer ready (``_ANSWERED``), else ``_FALLBACK``: h11 reads it.

        Heads are gathered here, not in h11, so that h11 always gets a whole head and the
        limit holds however the bytes were split (h11 checks its limit only on an
        incomplete head: a 70 KiB head read at once passed it). A first byte that cannot
        start a request goes to h11 at once, which refuses it without waiting.
        """
        buf = self.buf
        if buf[0] < 0x21:
            return _FALLBACK
        end, strict = fastpath.find_end(buf, self.scanned)
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise _Reject(431, "request header fields too large", f"the limit is {MAX_HEAD} bytes")
            self.scanned = max(0, len(buf) - 2)
            return _WAIT
        self.scanned = 0
        if end > MAX_HEAD:
            raise _Reject(431, "request header fields too large", f"the limit is {MAX_HEAD} bytes")
        parsed = fastpath.parse(bytes(buf[:end])) if strict and self.fast_path else None
        if parsed is None:
            return _FALLBACK
        method, path, headers = parsed
        resp = self.api.try_handle_parsed(method, path, headers, client=self.client)
        if resp is None:
            return _FALLBACK  # built on a worker: h11 takes this request
        # Only a 200 to a GET is the same object for every client (an answer of the per-tick
        # cache or the OpenAPI document); errors and HEAD answers are made per request and
        # would only push those out of the encoded answers kept.
        shared = resp.status == 200 and method == "GET"
        out = fastpath.encode(resp, _REASONS_B, head_only=method == "HEAD", shared=shared)
        del buf[:end]
        self.transport.write(out)  # type: ignore[union-attr]
        self._sent(method, resp.status)
        self.request_started = self.last_active if buf else None
        return _ANSWERED

    def _next_event(self) -> bool:
        """Act on h11's next event; False when more input (or our answer) is needed."""
        event = self.h11.next_event()
        if event is h11.NEED_DATA or event is h11.PAUSED:
            return False
        if isinstance(event, h11.Request):
            self._on_head(event)
        elif isinstance(event, h11.Data):
            self.request[3].append(event.data)  # type: ignore[index]
        elif isinstance(event, h11.EndOfMessage):
            method, target, headers, chunks = self.request  # type: ignore[misc]
            self._dispatch(method, target, headers, b"".join(chunks))
        elif isinstance(event, h11.ConnectionClosed):
            self._close()
            return False
        return True

    def _on_head(self, event: h11.Request) -> None:
        """Check a request head (limits h11 leaves to us); answer it unread if refused."""
        if event.http_version not in (b"1.1", b"1.0"):
            version = event.http_version.decode("ascii", "replace")
            raise _Reject(505, "http version not supported", f"HTTP/{version} is not supported; use HTTP/1.1")
        if len(event.headers) > MAX_HEADERS:
            raise _Reject(431, "request header fields too large", f"more than {MAX_HEADERS} header lines")
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        if "transfer-encoding" in headers:
            # Chunked bodies have no size to check before reading: ask for a length.
            raise _Reject(411, "length required", "send Content-Length")
        expect = headers.get("expect", "").lower()
        if expect and expect != "100-continue":
            raise _Reject(417, "expectation failed", "only Expect: 100-continue is supported")
        method = event.method.decode("ascii")
        target = event.target.decode("latin-1")
        self.request = (method, target, headers, [])
        if headers.get("content-length", "0") == "0":
            return  # no body: try_handle/handle check everything
        path, query = _split_target(target)
        early = self.api.precheck(method, path, query, headers, client=self.client)
        if early is not None:
            # Refused before its body was read (404, 405, 413, 401): the unread body
            # would be parsed as the next request, so the connection closes.
            self._send(early, method, close=True)
        elif self.h11.they_are_waiting_for_100_continue:
            self.transport.write(self.h11.send(_CONTINUE))  # type: ignore[union-attr]

    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        path, query = _split_target(target)
        api = self.api
        resp = api.try_handle(method, path, query, headers, body, client=self.client)
        if resp is not None:
            self._send(resp, method, shared=True)
            return
        self.busy = True
        loop = self.loop
        assert loop is not None

        def run() -> Response:
            return api.handle(method, path, query, headers, body, client=self.client)

        def done(result: Response) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the server is gone
                loop.call_soon_threadsafe(self._finish, result, method)

        try:
            self.workers.submit(run, done)
        except RuntimeError:  # the server is shutting down
            self.busy = False
            self._close()

    def _finish(self, resp: Response, method: str) -> None:
        self.busy = False
        if self.closing:
            return
        try:
            self._send(resp, method)
        except Exception:  # h11 refused to frame it: never let that escape into the loop
            log.debug("memdiag API: answer to %s failed", self.client, exc_info=True)
            self._close()
            return
        self._process()

    # -- output -------------------------------------------------------------------------
    def _send(self, resp: Response, method: str, *, close: bool = False, shared: bool = False) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        conn = self.h11
        out = conn.send(_head(resp, close, shared=shared))
        if resp.body and method != "HEAD":
            out += conn.send(h11.Data(data=resp.body))
        out += conn.send(h11.EndOfMessage())
        transport.write(out)
        self._sent(method, resp.status)
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
            self._close()
            return
        data, _ = conn.trailing_data
        if data:
            # What h11 received past this request goes back in front of buf, and a fresh
            # h11 (a finished keep-alive cycle keeps no state) reads from the next head on:
            # the next head is gathered (its limit) and may take the fast path.
            self.buf[:0] = data
            self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
            self._eof_fed = False
        else:
            conn.start_next_cycle()
        self.fed = False
        self.request_started = self.last_active if self.buf else None

    def _sent(self, method: str, status: int) -> None:
        self.answered += 1
        self.request = None
        self.last_active = self.loop.time()  # type: ignore[union-attr]
        if log.isEnabledFor(logging.DEBUG):  # formatting every request line costs
            log.debug('%s "%s" %s', self.client, method, status)

    def _reject(self, r: _Reject) -> None:
        body = dumps({"error": r.error, "detail": r.detail})
        resp = Response(r.status, [("Content-Type", JSON_TYPE)], body)
        try:
            self._send(resp, "GET", close=True)
        except h11.LocalProtocolError:  # h11 cannot frame an answer in this state: just close
            pass
        self._close()

    def close_now(self) -> None:
        """Drop the connection at once (shutdown, or evicted to admit another)."""
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
        if self._eof or not transport.can_write_eof() or self.loop is None:
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

    def _check_timeouts(self) -> None:
        """Close a connection whose request is late, or that sat idle too long."""
        self.timer = None
        if self.closing:
            return
        loop = self.loop
        assert loop is not None
        now = loop.time()
        limits = self.limits
        if self.busy:  # a request on a worker is not idleness
            delay = limits.idle_timeout
        elif self.request_started is not None:  # a request (or the first one) is arriving
            delay = self.request_started + min(limits.header_timeout, limits.idle_timeout) - now
        else:
            delay = self.last_active + limits.idle_timeout - now
        if delay <= 0:
            self._close()
            return
        self.timer = loop.call_later(max(0.05, delay), self._check_timeouts)


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
