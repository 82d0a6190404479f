"""The local control channel: every running service answers the CLI on a Unix socket.

``memdiag.start()`` (with or without ``http=``) opens ``<runtime dir>/<pid>.sock`` (the
directory private and checked, the socket 0600) and serves the same API as the HTTP
server on it, on memdiag's own thread (never the host's event loop). Peers are checked
with ``SO_PEERCRED``: the same user or root; a connection from anyone else is closed
unanswered. A checked peer needs no token. The socket is announced in the service's
runtime entry (``socket``), so ``memdiag ps`` lists services without HTTP too, and every
CLI command reaches them (``--pid``, by name, or the only one).

After ``fork()`` the child closes what it inherited and opens its own socket when its
monitor restarts (gunicorn workers each get one). The socket, its descriptor and its
threads (``memdiag-control*``) are marked as memdiag's own in :mod:`memdiag.registry`
and never show in the application's figures.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

    from .channel import ControlChannel, install, uninstall
    from .client import UnixHTTPConnection, connect_unix, peer_credentials

__all__ = ["ControlChannel", "UnixHTTPConnection", "connect_unix", "install", "peer_credentials", "uninstall"]

# Imported on first use: the CLI reaches a service through ``.client`` alone, and must not
# load the server side (``.channel``: the HTTP core, asyncio, history) at every start.
_LAZY = {
    "ControlChannel": ".channel",
    "install": ".channel",
    "uninstall": ".channel",
    "UnixHTTPConnection": ".client",
    "connect_unix": ".client",
    "peer_credentials": ".client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
