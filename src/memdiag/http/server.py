"""The standalone API server: the standard library's threaded HTTP server, no framework.

``memdiag.start(http=True)`` runs it; so does :func:`start_api_server`::

    server = start_api_server(diag, port=0)      # loopback, ephemeral port
    server.url, server.token                     # "http://127.0.0.1:40123", "…"
    server.close()

It binds loopback unless told otherwise, refuses a non-loopback address unless a token
was configured (a generated one would be a secret nobody outside this host can read),
announces itself in the runtime directory so the ``memdiag`` CLI finds it, and serves
HTTP/1.1 keep-alive with one thread per connection.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .. import runtime
from ..errors import ConfigError
from .core import MemoryAPI, Response

if TYPE_CHECKING:
    from ..service import MemoryDiagnostics

__all__ = ["ApiServer", "MemoryHTTPServer", "is_loopback", "serve", "start_api_server"]

log = logging.getLogger("memdiag.http")

_REASONS = {
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
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


def is_loopback(host: str) -> bool:
    """True if ``host`` (an address or a name) resolves only to loopback addresses."""
    name = host.strip("[]")
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    addrs = {str(info[4][0]) for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients polling the API reuse connections
    server_version = "memdiag"
    sys_version = ""
    timeout = 30  # seconds a connection may sit idle or half-sent: bounds stuck threads
    server: MemoryHTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in one write; no Nagle wait for small responses.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        api = self.server.api
        split = urlsplit(self.path)
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            # The stdlib server does not decode chunked bodies; ask for a length.
            self.close_connection = True
            self._send(
                Response(
                    411,
                    [("Content-Type", "application/json")],
                    b'{"error":"length required","detail":"send Content-Length"}',
                )
            )
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send(
                Response(
                    400,
                    [("Content-Type", "application/json")],
                    b'{"error":"bad request","detail":"invalid Content-Length"}',
                )
            )
            return
        body = b""
        if 0 < length <= api.max_body:
            body = self.rfile.read(length)
        elif length > api.max_body:
            self.close_connection = True  # the unread body would be parsed as the next request
        query = parse_qs(split.query, keep_blank_values=True)
        resp = api.handle(self.command, split.path, query, self.headers, body, client=self.client_address[0])
        self._send(resp)

    def _send(self, resp: Response) -> None:
        lines = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Unknown')}"]
        lines += [f"{k}: {v}" for k, v in resp.headers]
        lines.append(f"Date: {self.date_time_string()}")
        lines.append(f"Server: {self.server_version}")
        if resp.status != 204:
            length = len(resp.body)
            if self.command == "HEAD" and not resp.body:
                length = 0
            lines.append(f"Content-Length: {length}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + (b"" if self.command == "HEAD" else resp.body))
        self.log_request(resp.status)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if log.isEnabledFor(logging.DEBUG):  # formatting every request line costs
            log.debug('%s "%s" %s', self.address_string(), self.requestline, code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class MemoryHTTPServer(ThreadingHTTPServer):
    """A :class:`ThreadingHTTPServer` that answers with a :class:`MemoryAPI`."""

    daemon_threads = True
    # The stdlib's backlog of 5 makes a burst of clients wait a second for SYN retries.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], api: MemoryAPI) -> None:
        host = address[0].strip("[]")
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.api = api
        # Open client connections, so that closing the server also ends keep-alive
        # connections (a polling dashboard would otherwise be served after close()).
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__((host, address[1]), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self._conns_lock:
            self._conns.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End every open client connection (their handler threads then finish)."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{text}]" if ":" in text else text
        return f"http://{shown}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-request is routine; never print a traceback to stderr.
        log.debug("memdiag API: connection from %s failed", client_address, exc_info=True)


def _check_bind(host: str, api: MemoryAPI) -> None:
    if not is_loopback(host) and not api.token_configured:
        raise ConfigError(
            {
                "http_host": f"{host!r} is not a loopback address: set api_token (config, "
                "MEMDIAG_API_TOKEN, or token=...) before exposing the API beyond this host"
            }
        )


def serve(api: MemoryAPI, host: str = "127.0.0.1", port: int = 0) -> tuple[MemoryHTTPServer, threading.Thread]:
    """Serve ``api`` on a daemon thread; returns ``(server, thread)``.

    Stop it with ``server.shutdown(); server.server_close()``. Nothing is announced to the
    CLI (see :func:`start_api_server`).

    Raises:
        ConfigError: for a non-loopback ``host`` when the token was not configured.
        OSError: if the address cannot be bound.
    """
    _check_bind(host, api)
    server = MemoryHTTPServer((host, port), api)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.25}, name="memdiag-http", daemon=True
    )
    thread.start()
    return server, thread


class ApiServer:
    """A running standalone API server (see :func:`start_api_server`).

    Attributes:
        url: the base URL, e.g. ``http://127.0.0.1:40123``.
        token: the bearer token the API requires.
        thread: the thread serving requests.
        server: the underlying :class:`MemoryHTTPServer`.
        api: the :class:`MemoryAPI` answering.
    """

    def __init__(
        self,
        server: MemoryHTTPServer,
        thread: threading.Thread,
        api: MemoryAPI,
        diag: MemoryDiagnostics | None,
        announced: bool,
    ) -> None:
        self.server = server
        self.thread = thread
        self.api = api
        self.url = server.url
        self.token = api.token
        self._diag = diag
        self._announced = announced
        self._closed = False
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving, join the thread and remove the CLI's entry (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.server.shutdown()
        self.server.close_connections()
        self.server.server_close()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)
        if self._announced:
            runtime.unregister_service()
        if self._diag is not None and getattr(self._diag, "http_server", None) is self:
            self._diag.http_server = None

    def __enter__(self) -> ApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ApiServer {self.url}{' closed' if self._closed else ''}>"


def start_api_server(
    diag: MemoryDiagnostics | None = None,
    host: str | None = None,
    port: int | None = None,
    *,
    token: str | None = None,
    name: str | None = None,
    announce: bool = True,
    **api_options: Any,
) -> ApiServer:
    """Start the standalone API server for ``diag`` (the shared monitor if ``None``).

    Args:
        diag: the monitor to serve.
        host: address to bind; default ``http_host`` from the config (loopback).
        port: port to bind; default ``http_port`` from the config (0: any free port).
        token: the bearer token; default ``api_token`` from the config, else a new
            random one (``server.token``), stored 0600 in the runtime directory.
        name: the service name the CLI shows (default: the program's name).
        announce: write the runtime entry the CLI reads.
        **api_options: passed to :class:`MemoryAPI` (``max_body``, ``rate_limit``, ``health``).

    Returns:
        An :class:`ApiServer` with ``url``, ``token``, ``thread`` and ``close()``.

    Raises:
        ConfigError: for a non-loopback host without a configured token.
        OSError: if the address cannot be bound.
    """
    api = MemoryAPI(diag, token, **api_options)
    cfg = api.diagnostics.config
    host = cfg.http_host if host is None else host
    port = cfg.http_port if port is None else int(port)
    server, thread = serve(api, host, port)
    announced = False
    if announce:
        try:
            runtime.register_service(
                server.url,
                api.token,
                name=name if name is not None else os.path.basename(sys.argv[0] or "python"),
                started_at=time.time(),
            )
            announced = True
        except OSError as exc:  # the API still works; only the CLI will not find it
            log.warning("memdiag: could not announce the API server for the CLI: %s", exc)
    log.info("memdiag API serving on %s", server.url)
    return ApiServer(server, thread, api, diag, announced)
