"""Connecting to a control channel: a Unix socket inside the private runtime directory.

The directory is opened with ``O_NOFOLLOW`` and the socket reached through that
descriptor (``/proc/self/fd/N/<name>``): no symlink is followed, and a long runtime path
does not hit the 108-byte limit of ``sun_path``. The server's credentials are checked
too: a socket served by another user (not root) is refused before anything is sent.

Only the C module ``_socket`` is imported here: the ``socket`` module (its enums and
``selectors``) is loaded when a :class:`socket.socket` is asked for, not by the CLI,
which takes the bare socket (``raw=True``).
"""

from __future__ import annotations

import _socket
import os
import struct

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    import socket
    from typing import Any

__all__ = ["CLIENT_HEADER", "UnixHTTPConnection", "connect_unix", "peer_credentials"]

#: The header a forwarded request names its original client in (``?pid=``, see
#: :mod:`memdiag.control.fleet`). Honoured only on the control channel, whose peers are
#: checked: the target rate-limits the request as that client.
CLIENT_HEADER = "X-Memdiag-Client"
_UCRED = struct.Struct("3i")


def peer_credentials(sock: socket.socket | _socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


def trusted_uid(uid: int) -> bool:
    """The peers the control channel talks to: this user, or root."""
    return uid == os.geteuid() or uid == 0


def connect_unix(path: str | os.PathLike[str], timeout: float | None = 5.0, *, raw: bool = False) -> Any:
    """A connected socket to the control channel at ``path``: a :class:`socket.socket`,
    or with ``raw`` the bare ``_socket.socket`` (``sendall``, ``recv``, ``close``; no
    ``socket`` module import).

    Raises:
        PermissionError: the socket is served by another user.
        OSError: it is not there or nobody listens (``ConnectionRefusedError``).
    """
    parent, name = os.path.split(os.fspath(path))
    dfd = os.open(parent or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    if raw:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    else:
        import socket

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(f"/proc/self/fd/{dfd}/{name}")
        _, uid, _ = peer_credentials(sock)
        if not trusted_uid(uid):
            raise PermissionError(f"{path} is served by uid {uid}, not by this user; not talking to it")
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(dfd)
    return sock


def _unix_http_connection() -> type:
    import http.client

    class UnixHTTPConnection(http.client.HTTPConnection):
        """``http.client`` over a control channel's Unix socket."""

        def __init__(self, path: str, timeout: float | None = 5.0) -> None:
            super().__init__("localhost", timeout=timeout)
            self.socket_path = path

        def connect(self) -> None:
            self.sock = connect_unix(self.socket_path, self.timeout)

    UnixHTTPConnection.__module__ = __name__
    UnixHTTPConnection.__qualname__ = "UnixHTTPConnection"
    return UnixHTTPConnection


def __getattr__(name: str) -> Any:
    # ``UnixHTTPConnection`` is built on first use: ``http.client`` imports ``email`` and
    # ``ssl`` (~20 ms), and the CLI, which reaches services through ``connect_unix`` with
    # its own h11 client, must not pay for them at every start.
    if name == "UnixHTTPConnection":
        cls = globals()[name] = _unix_http_connection()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
