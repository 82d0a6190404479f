"""The server side of the control channel (see :mod:`memdiag.control`).

It reuses the standalone HTTP server (:class:`memdiag.http.server.MemoryHTTPServer`) on
a Unix socket: one HTTP/1.1 request per exchange, the same :class:`MemoryAPI` answers.
Two things differ from TCP: the peer's uid is checked when it connects, and a checked
peer is authenticated by that check (the API's bearer token is supplied for it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import registry, runtime
from ..http.core import MemoryAPI, Response
from ..http.server import MemoryHTTPServer
from ..http.wire import Connection
from .client import peer_credentials, trusted_uid

if TYPE_CHECKING:
    import asyncio

    from ..service import MemoryDiagnostics

__all__ = ["ControlChannel", "install", "uninstall"]

log = logging.getLogger("memdiag.control")

THREAD_PREFIX = "memdiag-control"
_HOOK = "control channel"


class _PeerCheckedConnection(Connection):
    """A connection that is served only if the peer is this user or root."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        try:
            pid, uid, _ = peer_credentials(sock)
        except (OSError, AttributeError, TypeError):
            pid, uid = 0, -1
        if not trusted_uid(uid):
            log.warning("memdiag control channel: refused a connection from uid %d (pid %d)", uid, pid)
            transport.abort()
            return
        super().connection_made(transport)


class _TrustedPeerAPI:
    """The API as seen by a checked local peer: authenticated by its credentials."""

    def __init__(self, api: MemoryAPI) -> None:
        self._api = api
        self.max_body = api.max_body

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def _headers(self, headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
        items = headers.items() if isinstance(headers, Mapping) else headers
        out = {str(k).lower(): str(v) for k, v in items}
        out["authorization"] = f"Bearer {self._api.token}"
        return out

    def handle(
        self, method: str, path: str, query: Any, headers: Any, body: bytes, *, client: str | None = None
    ) -> Response:
        return self._api.handle(method, path, query, self._headers(headers), body, client=client)

    def try_handle(
        self, method: str, path: str, query: Any, headers: Any, body: bytes, *, client: str | None = None
    ) -> Response | None:
        return self._api.try_handle(method, path, query, self._headers(headers), body, client=client)

    def precheck(self, method: str, path: str, query: Any, headers: Any, *, client: str | None = None) -> Any:
        return self._api.precheck(method, path, query, self._headers(headers), client=client)


def _bind(directory: Path, pid: int) -> socket.socket:
    """A listening socket at ``directory/<pid>.sock``, 0600 before anyone can connect.

    Bound under a random name through a descriptor of the (checked) directory, made 0600,
    then renamed into place: a client never sees it with another mode, and a stale socket
    of a dead process with this PID is replaced atomically.
    """
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f".{pid}.{secrets.token_hex(6)}.sock"
    try:
        sock.bind(f"/proc/self/fd/{dfd}/{tmp}")
        os.chmod(tmp, 0o600, dir_fd=dfd)
        sock.listen(64)
        os.replace(tmp, f"{pid}.sock", src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise
    finally:
        os.close(dfd)
    return sock


class ControlChannel:
    """A running control channel for ``diag`` (one per process)."""

    def __init__(self, diag: MemoryDiagnostics, *, name: str | None = None) -> None:
        self.pid = os.getpid()
        directory = runtime.runtime_dir(create=True)
        self.path = directory / f"{self.pid}.sock"
        sock = _bind(directory, self.pid)
        self._fd = sock.fileno()
        registry.own_fd(self._fd)
        registry.own_thread_prefix(THREAD_PREFIX)
        try:
            self.api = MemoryAPI(diag)
            self.server = MemoryHTTPServer(
                ("", 0),
                _TrustedPeerAPI(self.api),  # type: ignore[arg-type]
                workers=2,
                max_connections=32,
                max_per_client=32,
                sock=sock,
                connection=_PeerCheckedConnection,
            )
            self.server._workers._name = f"{THREAD_PREFIX}-worker"
        except BaseException:
            registry.disown_fd(self._fd)
            sock.close()
            raise
        self.thread = threading.Thread(target=self.server.serve_forever, name=THREAD_PREFIX, daemon=True)
        self.thread.start()
        self._closed = False
        self._loop_fds = self._mark_loop_fds()
        try:
            from ..workers import identity

            ident = identity()
        except Exception as exc:  # never stop the channel for it
            log.debug("memdiag: worker identity unknown: %r", exc)
            ident = None
        if name is None:
            name = os.path.basename(sys.argv[0] or "python")
            if ident is not None and name in ("-c", ""):  # a spawned worker: its server's name
                name = ident.server_id.rpartition("-")[0]
        try:
            runtime.update_service(
                socket=str(self.path),
                server=ident.to_dict() if ident is not None else None,
                name=name,
                started_at=time.time(),
            )
        except OSError as exc:  # serving still works; only the CLI will not list it
            log.warning("memdiag: could not announce the control channel: %s", exc)

    def _mark_loop_fds(self) -> tuple[int, ...]:
        """The event loop's own descriptors (epoll, self-pipe) are memdiag's too. The loop
        is made within milliseconds of the thread's start; if not seen in 1 s, skipped."""
        deadline = time.monotonic() + 1.0
        while self.server._loop is None and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)
        loop = self.server._loop
        fds: list[int] = []
        for obj in (getattr(loop, "_selector", None), getattr(loop, "_ssock", None), getattr(loop, "_csock", None)):
            with contextlib.suppress(Exception):
                fds.append(int(obj.fileno()))  # type: ignore[union-attr]
        for fd in fds:
            registry.own_fd(fd)
        return tuple(fds)

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving, remove the socket and withdraw it from the entry (idempotent)."""
        if self._closed or self.pid != os.getpid():
            return
        self._closed = True
        self.server.shutdown(timeout)
        for fd in (self._fd, *self._loop_fds):
            registry.disown_fd(fd)
        self.server.server_close()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            runtime.update_service(socket=None)

    def forget_after_fork(self) -> None:
        """In a forked child: close the parent's descriptors (never its socket file)."""
        for fd in (self._fd, *self._loop_fds):
            registry.disown_fd(fd)
        loop = self.server._loop
        for obj in (self.server.socket, getattr(loop, "_ssock", None), getattr(loop, "_csock", None)):
            with contextlib.suppress(Exception):
                obj.close()  # type: ignore[union-attr]
        selector = getattr(loop, "_selector", None)
        with contextlib.suppress(Exception):
            os.close(selector.fileno())  # type: ignore[union-attr]
        self._closed = True


_channel: ControlChannel | None = None
_lock = threading.Lock()
_lock_pid = os.getpid()


def _fresh_lock() -> threading.Lock:
    """The module's lock; a new one in a forked child (the parent's may have been held)."""
    global _lock, _lock_pid
    if _lock_pid != os.getpid():
        _lock, _lock_pid = threading.Lock(), os.getpid()
    return _lock


def _on_start(diag: MemoryDiagnostics) -> None:
    global _channel
    from ..service import MemoryDiagnostics

    if diag is not MemoryDiagnostics._instance:  # one channel per process: the shared monitor's
        return
    with _fresh_lock():
        if _channel is not None and _channel.pid != os.getpid():  # inherited over fork()
            _channel.forget_after_fork()
            _channel = None
        if _channel is None:
            _channel = ControlChannel(diag)


def _on_stop(diag: MemoryDiagnostics) -> None:
    global _channel
    with _fresh_lock():
        if _channel is None or _channel.api._diag is not diag:
            return
        channel, _channel = _channel, None
    if channel is not None:
        channel.close()


def install() -> None:
    """Have every start of the shared monitor open the control channel (idempotent)."""
    registry.register_lifecycle(_HOOK, _on_start, _on_stop)


def uninstall() -> None:
    """Stop opening control channels (the one open stays until its monitor stops)."""
    registry.unregister_lifecycle(_HOOK)


def current() -> ControlChannel | None:
    """This process's open control channel, if any."""
    channel = _channel
    return channel if channel is not None and channel.pid == os.getpid() else None
