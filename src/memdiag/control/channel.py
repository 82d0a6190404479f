"""The server side of the control channel (see :mod:`memdiag.control`).

An idle channel is one socket and one thread blocked in ``poll()``: nothing of the HTTP
stack is imported until the first connection arrives. Then the server that
:func:`install` was given (:mod:`memdiag.http.unix`: the standalone HTTP server on the
Unix socket, with the peer check) takes over on the same thread. Importing it costs about 9 MiB (``benchmarks/bench_control.py``), paid only
by a service that was actually queried.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import registry, runtime
from .._logging import get_logger

if TYPE_CHECKING:
    from ..service import MemoryDiagnostics

__all__ = ["ControlChannel", "install", "uninstall"]

log = get_logger("memdiag.control")

THREAD_PREFIX = "memdiag-control"
_HOOK = "control channel"

# serve(diag, listening socket, own_fds) -> (server with serve_forever(), api)
ServerFactory = Callable[[Any, socket.socket, Callable[[tuple[int, ...]], None]], tuple[Any, Any]]
_serve: ServerFactory | None = None  # set by install()


def _bind(directory: Path, pid: int) -> socket.socket:
    """A listening socket at ``directory/<pid>.sock``, 0600 before anyone can connect.

    Bound under a random name through a descriptor of the (checked) directory, made 0600,
    then renamed into place: a client never sees it with another mode, and a stale socket
    of a dead process with this PID is replaced atomically.
    """
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f".{pid}.{os.urandom(6).hex()}.sock"  # not secrets: it pulls in hmac and hashlib
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
        self.diag = diag
        directory = runtime.runtime_dir(create=True)
        self.path = directory / f"{self.pid}.sock"
        self.socket = _bind(directory, self.pid)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._fds: list[int] = [self.socket.fileno(), self._wake_r, self._wake_w]
        for fd in self._fds:
            registry.own_fd(fd)
        registry.own_thread_prefix(THREAD_PREFIX)
        self.server: Any = None  # the HTTP server, once a client came
        self.api: Any = None
        self._lock = threading.Lock()
        self._stopping = False
        self._closed = False
        self.thread = threading.Thread(target=self._run, name=THREAD_PREFIX, daemon=True)
        self.thread.start()
        self._announce(name)

    def _announce(self, name: str | None) -> None:
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

    def _run(self) -> None:
        """Wait for the first client without importing anything, then serve HTTP."""
        poller = select.poll()
        poller.register(self.socket.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            try:
                events = dict(poller.poll())
            except InterruptedError:
                continue
            if self._wake_r in events:
                return
            if events:
                break
        with self._lock:
            if self._stopping:
                return
            try:
                if _serve is None:
                    raise RuntimeError("no server installed for the control channel")
                self.server, self.api = _serve(self.diag, self.socket, self._own_fds)
            except Exception as exc:
                log.warning("memdiag control channel could not serve: %r", exc)
                return
        self.server.serve_forever()

    def _own_fds(self, fds: tuple[int, ...]) -> None:
        # Called on the loop's thread; a close() that already disowned our descriptors
        # must not see new ones marked after it (they would stay marked for good, and an
        # application fd reusing the number would be hidden from its counts).
        with self._lock:
            if self._closed:
                return
            for fd in fds:
                registry.own_fd(fd)
                self._fds.append(fd)

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving, remove the socket and withdraw it from the entry (idempotent)."""
        if self._closed or self.pid != os.getpid():
            return
        self._closed = True
        with self._lock:
            self._stopping = True
            server = self.server
        if server is not None:
            server.shutdown(timeout)
        else:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)
        with self._lock:
            for fd in self._fds:
                registry.disown_fd(fd)
        if server is not None:
            server.server_close()
        self.socket.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            runtime.update_service(socket=None)

    def forget_after_fork(self) -> None:
        """In a forked child: close the parent's descriptors (never its socket file)."""
        for fd in self._fds:
            registry.disown_fd(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(Exception):
            self.socket.detach()  # its fd is closed above
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
        if _channel is None or _channel.diag is not diag:
            return
        channel, _channel = _channel, None
    if channel is not None:
        channel.close()


def install(serve: ServerFactory) -> None:
    """Have every start of the shared monitor open the control channel (idempotent).

    ``serve(diag, sock, own_fds)`` builds the server that answers on the channel's
    listening socket once a client connects (:func:`memdiag.http.unix.make_server`, passed
    in by :func:`memdiag.start` so that this module, below the HTTP layer, never imports it).
    """
    global _serve
    _serve = serve
    registry.register_lifecycle(_HOOK, _on_start, _on_stop)


def uninstall() -> None:
    """Stop opening control channels (the one open stays until its monitor stops)."""
    registry.unregister_lifecycle(_HOOK)


def current() -> ControlChannel | None:
    """This process's open control channel, if any."""
    channel = _channel
    return channel if channel is not None and channel.pid == os.getpid() else None
