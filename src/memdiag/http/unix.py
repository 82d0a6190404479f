"""The API served on the control channel's Unix socket, imported on its first connection.

The standalone HTTP server (:class:`memdiag.http.server.MemoryHTTPServer`) on the Unix
socket that :mod:`memdiag.control.channel` opened: one HTTP/1.1 exchange per request, the same :class:`MemoryAPI` answers. Two things
differ from TCP: the peer's uid is checked when it connects, and a checked peer is
authenticated by that check (the API's bearer token is supplied for it). Importing this
(the HTTP core, asyncio) costs about 9 MiB, which is why a service that nobody queries
never does (:mod:`memdiag.control.channel` waits for the first connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .. import registry
from .._logging import get_logger
from ..control.client import CLIENT_HEADER, peer_credentials, trusted_uid
from .core import MemoryAPI, Response
from .server import MemoryHTTPServer
from .wire import Connection

if TYPE_CHECKING:
    from ..service import MemoryDiagnostics

__all__ = ["make_server"]

log = get_logger("memdiag.control")

_CLIENT_HEADER = CLIENT_HEADER.lower()


class _PeerCheckedConnection(Connection):
    """A connection that is served only if the peer is this user or root."""

    on_loop: Callable[[asyncio.AbstractEventLoop], None] | None = None  # told the loop once

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cls = type(self)
        if cls.on_loop is not None:
            hook, cls.on_loop = cls.on_loop, None
            with contextlib.suppress(Exception):
                hook(asyncio.get_running_loop())
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


def _client(headers: Mapping[str, str], peer: str | None) -> str | None:
    """The client a request is rate-limited as: the original client a forwarding worker
    names (a checked peer of this user, so it is believed), else the local peer."""
    forwarded = headers.get(_CLIENT_HEADER)
    return f"forwarded:{forwarded}" if forwarded else peer


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
        checked = self._headers(headers)
        return self._api.handle(method, path, query, checked, body, client=_client(checked, client))

    def try_handle(
        self, method: str, path: str, query: Any, headers: Any, body: bytes, *, client: str | None = None
    ) -> Response | None:
        checked = self._headers(headers)
        return self._api.try_handle(method, path, query, checked, body, client=_client(checked, client))

    def try_handle_parsed(
        self, method: str, path: str, headers: Mapping[str, str], *, client: str | None = None
    ) -> Response | None:
        checked = self._headers(headers)
        return self._api.try_handle_parsed(method, path, checked, client=_client(checked, client))

    def precheck(self, method: str, path: str, query: Any, headers: Any, *, client: str | None = None) -> Any:
        return self._api.precheck(method, path, query, self._headers(headers), client=client)


def loop_fds(loop: asyncio.AbstractEventLoop) -> tuple[int, ...]:
    """The event loop's own descriptors (epoll, self-pipe), to mark as memdiag's."""
    fds: list[int] = []
    for obj in (getattr(loop, "_selector", None), getattr(loop, "_ssock", None), getattr(loop, "_csock", None)):
        with contextlib.suppress(Exception):
            fds.append(int(obj.fileno()))  # type: ignore[union-attr]
    return tuple(fds)


def make_server(
    diag: MemoryDiagnostics, sock: socket.socket, own_fds: Callable[[tuple[int, ...]], None]
) -> tuple[MemoryHTTPServer, MemoryAPI]:
    """The server for ``diag`` on the listening Unix socket ``sock`` (not yet serving).

    ``own_fds(fds)`` is told the event loop's own descriptors (epoll, self-pipe), on the
    loop's thread, when the first connection arrives, so they count as memdiag's.
    """
    api = MemoryAPI(diag)

    def on_loop(loop: asyncio.AbstractEventLoop) -> None:
        own_fds(loop_fds(loop))

    connection = type("PeerCheckedConnection", (_PeerCheckedConnection,), {"on_loop": staticmethod(on_loop)})
    server = MemoryHTTPServer(
        ("", 0),
        _TrustedPeerAPI(api),  # type: ignore[arg-type]
        workers=2,
        max_connections=32,
        max_per_client=32,
        sock=sock,
        connection=connection,
    )
    server._workers._name = "memdiag-control-worker"
    registry.own_thread_prefix("memdiag-control")
    return server, api
