"""The standalone API server: HTTP/1.1 (parsed by h11) on an asyncio loop in one thread, no framework.

``memdiag.start(http=True)`` runs it; so does :func:`start_api_server`::

    server = start_api_server(diag, port=0)      # loopback, ephemeral port
    server.url, server.token                     # "http://127.0.0.1:40123", "…"
    server.close()

It binds loopback unless told otherwise, refuses a non-loopback address unless a token
was configured (a generated one would be a secret nobody outside this host can read),
and announces itself in the runtime directory so the ``memdiag`` CLI finds it.

One thread runs a private event loop (never the host's) that holds every connection
and answers cached reads itself; requests that build a report run on a few worker
threads (:mod:`memdiag.http.wire` has the protocol and the reasons).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import runtime
from .._logging import get_logger
from .._net import loopback_ip
from ..errors import ConfigError
from .core import MemoryAPI
from .wire import Connection, ConnectionTable, Limits, Workers

if TYPE_CHECKING:
    from ..service import MemoryDiagnostics

__all__ = ["ApiServer", "MemoryHTTPServer", "is_loopback", "serve", "start_api_server"]

log = get_logger("memdiag.http")


def is_loopback(host: str) -> bool:
    """True if ``host`` (an address or a name) resolves only to loopback addresses."""
    name = host.strip().strip("[]")
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        pass  # a name, "localhost" included: what we would bind is what it resolves to
    else:
        return loopback_ip(name) is not None
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    addrs = {str(info[4][0]) for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


class MemoryHTTPServer:
    """A listening socket and the event loop that serves a :class:`MemoryAPI` on it.

    The socket is bound in the constructor (so a busy port fails there);
    :meth:`serve_forever` runs the loop in the calling thread until :meth:`shutdown`.

    Args:
        address: ``(host, port)``; an IPv6 host may be bracketed.
        api: what answers.
        workers: threads for requests that build a report (cleanup, diagnostics, ...).
        max_connections: open connections in all; beyond this, the oldest connection that
            has not sent a whole request yet is closed to make room, else the new one gets
            503 (see :class:`~memdiag.http.wire.ConnectionTable`).
        max_per_client: open connections from one address, with the same rule.
        header_timeout: seconds a request (head and body) may take to arrive.
        idle_timeout: seconds a keep-alive connection may wait between requests.
        sock: a bound, listening socket to serve instead of binding ``address`` (the
            local control channel passes its Unix socket; ``address`` is then ignored).
        connection: the protocol class per connection (a subclass may check the peer).
    """

    def __init__(
        self,
        address: tuple[str, int],
        api: MemoryAPI,
        *,
        workers: int = 4,
        max_connections: int = 256,
        max_per_client: int = 128,
        header_timeout: float = 5.0,
        idle_timeout: float = 30.0,
        sock: socket.socket | None = None,
        connection: type[Connection] = Connection,
    ) -> None:
        self.limits = Limits(max_connections, max_per_client, header_timeout, idle_timeout)
        self.api = api
        self._connection = connection
        if sock is not None:
            sock.setblocking(False)
            self.socket = sock
        else:
            self.socket = self._bind(address)
        self.server_address: tuple[Any, ...] = self.socket.getsockname()
        self._workers = Workers(workers)
        self._table = ConnectionTable(self.limits)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self._done = threading.Event()
        self._lock = threading.Lock()

    @staticmethod
    def _bind(address: tuple[str, int]) -> socket.socket:
        host = address[0].strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(address[1])))
            # The stdlib's backlog of 5 makes a burst of clients wait a second for SYN retries.
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        text = str(host)
        shown = f"[{text}]" if ":" in text else text
        return f"http://{shown}:{port}"

    @property
    def connections(self) -> int:
        """Open client connections."""
        return len(self._table)

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (call it from another thread)."""
        with self._lock:
            if self._stop_requested or self._loop is not None:
                self._done.set()
                return
            loop = self._loop = asyncio.new_event_loop()
        loop.set_exception_handler(_log_loop_error)
        try:
            try:
                server = loop.run_until_complete(
                    loop.create_server(self._protocol, sock=self.socket, backlog=128, start_serving=True)
                )
            except RuntimeError:
                if self._stop_requested:  # shutdown() stopped the loop while it started
                    return
                raise
            # shutdown() sets the flag before it queues loop.stop(); a stop that the
            # start-up above already consumed would leave run_forever() running for good.
            if not self._stop_requested:
                loop.run_forever()
            server.close()
            self._close_connections()
            # Let the transports run their close callbacks before the loop goes. A stop
            # still queued by shutdown() ends the first turn early; the second one runs.
            for _ in range(2):
                with contextlib.suppress(RuntimeError):
                    loop.run_until_complete(asyncio.sleep(0))
                    break
        finally:
            loop.close()
            self._workers.close()
            self._done.set()

    def _protocol(self) -> Connection:
        return self._connection(self.api, self._workers, self._table)

    def _close_connections(self) -> None:
        for conn in list(self._table.every):
            conn.close_now()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop serving and close every connection; waits for :meth:`serve_forever` to return."""
        with self._lock:
            self._stop_requested = True
            loop = self._loop
        if loop is None:  # never served
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        if threading.current_thread().name != "memdiag-http":
            self._done.wait(timeout)

    def server_close(self) -> None:
        """Close the listening socket and let the worker threads end."""
        self._workers.close()
        self.socket.close()


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # Resets and half-sent requests are routine for a server; never print to stderr.
    log.debug("memdiag API: %s", context.get("message"), exc_info=context.get("exception"))


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
    thread = threading.Thread(target=server.serve_forever, name="memdiag-http", daemon=True)
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
        self.server.shutdown(timeout)
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
