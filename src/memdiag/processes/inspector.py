"""Opt-in inspector mode: heaps of Node.js processes not started with ``spawn_node``.

Two ways in, both only for processes this service owns:

* :func:`spawn_inspected_node` starts ``node --inspect=127.0.0.1:0 ...``: the kernel picks
  a free loopback port, and the ``Debugger listening on ws://...`` line is read from the
  child's stderr, which is forwarded on (minus node's inspector status lines) so the
  child never blocks and none of the program's own output is lost.
* :func:`inspect_node` attaches to a running owned ``node`` child: if it has no inspector,
  it gets ``SIGUSR1`` (node then opens one on its debug port: 9229 unless started with
  ``--inspect-port``) for each session, and memdiag closes it again
  (``process._debugEnd()``) when the session ends, so it is open only for milliseconds.

Sessions are short: connect, ``process.memoryUsage()`` through ``Runtime.evaluate`` (or
``Runtime.getHeapUsage`` if that fails), ``HeapProfiler.collectGarbage`` for the GC rung,
disconnect. Each has a deadline; a failing or hung inspector leaves the figures missing
with a reason in ``error``, never an exception in the host or a blocked tick: the
monitor's tick only starts a session in a short-lived thread, at most every
``node_inspect_interval`` seconds. Inspected processes appear in ``heaps()``, the
``node_heap`` signal and the ``node_gc`` rung beside ``spawn_node`` children.

Safety: memdiag only connects to an inspector whose listening socket belongs to the
target process (checked in ``/proc`` before each session), and only to loopback. It
only signals owned processes inside this service's tree, only a ``node`` binary that
catches ``SIGUSR1`` (for anything else the default action of ``SIGUSR1`` is to die), and
never one whose inspector options name a non-loopback host or whose debug port another
process holds.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable
from typing import IO, Any, TypeVar

from .._logging import get_logger
from ..config import MemoryConfig
from ..errors import ProcessNotOwnedError
from ..units import MIB
from . import node as _node
from . import procnet
from .cdp import CDPSession, Deadline, InspectorError, http_get_json, loopback_host, split_url
from .ownership import OwnedProcess, is_descendant, owner_of
from .sanitize import safe_node_argv
from .spawn import Popen

__all__ = ["InspectedNode", "InspectedNodeProcess", "inspect_node", "inspected_nodes", "spawn_inspected_node"]

log = get_logger("memdiag.processes")
T = TypeVar("T")

_USAGE_JS = (
    "(() => { const m = process.memoryUsage(); return {rss: m.rss, heapTotal: m.heapTotal,"
    " heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers}; })()"
)
# node's SIGUSR1 handler asks for the inspector twice: through the event loop and through
# a V8 interrupt, which stays pending while the inspector runs our calls and fires on the
# next ordinary JS run. Closed before that, the inspector would reopen by itself (seen 1
# time in 15 right after start-up). One loop turn with JS in it spends both requests.
_SETTLE_JS = "new Promise((resolve) => setImmediate(resolve))"
# Ends the inspector (``inspector.close()`` is this function); the server drops the
# connection at once.
_END_JS = "typeof process._debugEnd === 'function' ? process._debugEnd() : 'no _debugEnd'"
# Signal-mode sessions share node's default debug port: one at a time, process-wide.
_SIGNAL_LOCK = threading.Lock()
_HANDLES: dict[int, InspectedNode] = {}
_HANDLES_LOCK = threading.Lock()


# -- ownership ----------------------------------------------------------------------------


def _owned_entry(target: Any) -> OwnedProcess:
    pid = target if isinstance(target, int) and not isinstance(target, bool) else getattr(target, "pid", None)
    if not isinstance(pid, int):
        raise ValueError(f"inspect_node() takes an owned Popen or a PID, not {type(target).__name__}")
    entry = getattr(target, "ownership", None) or owner_of(pid)
    if entry is None or not entry.is_same_process():
        raise ProcessNotOwnedError(f"process {pid} is not owned by this service: memdiag will not inspect it")
    if not is_descendant(pid):
        raise ProcessNotOwnedError(f"process {pid} is outside this service's process tree")
    return entry


# -- one inspected process ----------------------------------------------------------------


class InspectedNode:
    """A Node.js process whose heap memdiag reads through its inspector, in short sessions.

    Made by :func:`inspect_node` or :func:`spawn_inspected_node` (``proc.inspector``).
    No method raises: a failed session sets ``usage`` to ``None`` and ``error`` to why.

    Attributes:
        pid: the process.
        usage: the last ``process.memoryUsage()`` figures (with ``time``), or ``None``
            when the last session failed.
        error: why the last session failed, or ``None``.
        heap_limit_bytes: this process's own heap threshold, or ``None`` (config's).
        mode: ``"spawned"`` (a persistent loopback inspector on a kernel-chosen port),
            ``"url"`` (an inspector it already had) or ``"signal"`` (opened by
            ``SIGUSR1`` and closed again for each session).
        sessions: sessions that succeeded; ``failures``: those that did not.
        last_session_ms: the wall time of the last successful session.
    """

    stale_after = 30.0

    def __init__(
        self,
        entry: OwnedProcess,
        *,
        mode: str,
        url: str | None = None,
        heap_limit_mb: float | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.pid = entry.pid
        self.mode = mode
        self.url = url
        self.usage: dict[str, Any] | None = None
        self.error: str | None = None
        self.heap_limit_bytes = int(heap_limit_mb * MIB) if heap_limit_mb is not None else None
        self.timeout = timeout
        self.sessions = 0
        self.failures = 0
        self.last_session_ms: float | None = None
        self._entry = entry
        self._url_ready = threading.Event()
        if url is not None:
            self._url_ready.set()
        self._lock = threading.Lock()  # one session at a time for this process
        self._opened_port: int | None = None  # the port our SIGUSR1 last opened
        self._last_attempt = 0.0
        self._busy = False

    # -- state ------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True when the last session succeeded."""
        return self.usage is not None

    @property
    def returncode(self) -> int | None:
        """The exit status once memdiag has seen the process end, else ``None``."""
        if self._entry.returncode is not None:
            return self._entry.returncode
        owner = self._entry.owner
        rc = getattr(owner, "returncode", None) if owner is not None else None
        if rc is None and not self._entry.is_same_process():
            return -1 << 30  # gone, and reaped by someone we cannot ask
        return rc

    def _set_url(self, url: str) -> None:
        if self.url is None:
            self.url = url
            self._url_ready.set()

    # -- sessions ---------------------------------------------------------------------------
    def read_usage(self, timeout: float | None = None) -> dict[str, Any] | None:
        """Run a session now and return ``process.memoryUsage()`` (``None``: see ``error``)."""
        usage = self._run(self._usage, timeout or self.timeout)
        return usage

    def gc(self, timeout: float = 10.0) -> dict[str, Any]:
        """A full collection through ``HeapProfiler.collectGarbage``; the heap before and after.

        Returns:
            ``{"ok", "before", "after", "freed_bytes", "gc_ms"}`` like
            :meth:`NodeProcess.gc`; ``ok`` False with an ``error`` when it failed.
        """

        def collect(cdp: CDPSession, budget: Deadline) -> dict[str, Any]:
            before = self._usage(cdp, budget)
            t0 = time.perf_counter()
            cdp.call("HeapProfiler.collectGarbage", timeout=budget)
            ms = (time.perf_counter() - t0) * 1000
            return {"before": before, "after": self._usage(cdp, budget), "ms": round(ms, 3)}

        got = self._run(collect, timeout)
        if got is None:
            return {"ok": False, "error": self.error, "freed_bytes": 0}
        before, after = got["before"], got["after"]
        freed = max(0, int(before["heapUsed"]) - int(after["heapUsed"]))
        return {"ok": True, "before": before, "after": after, "freed_bytes": freed, "gc_ms": got["ms"]}

    def refresh(self, cfg: MemoryConfig) -> None:
        """Start a session in a background thread if one is due; returns at once.

        Called by the ``node_heap`` signal on every monitor tick; a session starts at most
        every ``cfg.node_inspect_interval`` seconds, and never while one is running.
        """
        interval = cfg.node_inspect_interval
        self.stale_after = max(30.0, 3 * interval)
        now = time.monotonic()
        if self._busy or now - self._last_attempt < interval:
            return
        self._busy = True
        self._last_attempt = now
        try:
            threading.Thread(target=self._refresh, name=f"memdiag-inspect-{self.pid}", daemon=True).start()
        except RuntimeError:  # interpreter shutting down
            self._busy = False

    def _refresh(self) -> None:
        try:
            self.read_usage()
        finally:
            self._busy = False

    def _usage(self, cdp: CDPSession, budget: Deadline) -> dict[str, Any]:
        try:
            got = cdp.call("Runtime.evaluate", {"expression": _USAGE_JS, "returnByValue": True}, budget)
            value = (got.get("result") or {}).get("value")
            if isinstance(value, dict) and isinstance(value.get("heapUsed"), int):
                return value
            reason = (got.get("exceptionDetails") or {}).get("text", "no value")
        except InspectorError as exc:
            if "no answer" in str(exc):
                raise
            reason = str(exc)
        # process.memoryUsage() is not reachable (a shadowed global?): V8's own figures.
        log.debug("node pid %d: memoryUsage() failed (%s); using Runtime.getHeapUsage", self.pid, reason)
        heap = cdp.call("Runtime.getHeapUsage", timeout=budget)
        if not isinstance(heap.get("usedSize"), (int, float)):
            raise InspectorError(f"node pid {self.pid}: neither memoryUsage() nor getHeapUsage answered ({reason})")
        return {
            "heapUsed": heap.get("usedSize"),
            "heapTotal": heap.get("totalSize"),
            "external": None,
            "arrayBuffers": None,
            "rss": None,
        }

    def _run(self, ops: Callable[[CDPSession, Deadline], T], timeout: float) -> T | None:
        budget = Deadline(timeout)
        t0 = time.perf_counter()
        try:
            if not self._lock.acquire(timeout=budget.remaining()):
                raise InspectorError(f"node pid {self.pid}: another session is still running")
            try:
                if self.returncode is not None:
                    raise InspectorError(f"node pid {self.pid} has exited")
                session = self._signal_session if self.mode == "signal" else self._url_session
                result = session(ops, budget)
            finally:
                self._lock.release()
        except Exception as exc:  # never into the host: a missing figure and the reason
            self.failures += 1
            self.usage = None
            self.error = str(exc) or type(exc).__name__
            log.debug("inspector session with pid %d failed: %s", self.pid, self.error)
            return None
        self.sessions += 1
        self.error = None
        self.last_session_ms = round((time.perf_counter() - t0) * 1000, 3)
        after = result.get("after") if isinstance(result, dict) and "after" in result else result
        if isinstance(after, dict):
            self.usage = {**after, "time": time.time()}
        return result

    def _url_session(self, ops: Callable[[CDPSession, Deadline], T], budget: Deadline) -> T:
        if not self._url_ready.wait(budget.remaining()):
            raise InspectorError(f"node pid {self.pid}: no 'Debugger listening' line on its stderr yet")
        url = self.url or ""
        _, port, _ = split_url(url)
        if procnet.listener_of(self.pid, port) is None:
            raise InspectorError(f"node pid {self.pid}: nothing listens on {url} any more")
        with CDPSession.connect(url, budget) as cdp:
            return ops(cdp, budget)

    def _signal_session(self, ops: Callable[[CDPSession, Deadline], T], budget: Deadline) -> T:
        if not _SIGNAL_LOCK.acquire(timeout=budget.remaining()):
            raise InspectorError("another SIGUSR1 inspector session is still running")
        try:
            port, opened = self._open_by_signal(budget)
            try:
                url = _target_url(self.pid, port, budget)
                with CDPSession.connect(url, budget) as cdp:
                    try:
                        if opened:
                            cdp.call("Runtime.evaluate", {"expression": _SETTLE_JS, "awaitPromise": True}, budget)
                        return ops(cdp, budget)
                    finally:
                        if opened:
                            _end_inspector(cdp)
            finally:
                if opened:
                    _wait_closed(self.pid, port)
        finally:
            _SIGNAL_LOCK.release()

    def _open_by_signal(self, budget: Deadline) -> tuple[int, bool]:
        """Open the inspector with SIGUSR1; ``(port, opened_by_us)``."""
        entry = _owned_entry(self.pid)  # again: ownership can end between sessions
        active, host, port = procnet.inspector_options(self.pid)
        loopback_host(host)
        before = procnet.tcp_listeners(self.pid)
        for known in {p for p in (port, self._opened_port) if p}:
            held = procnet.listener_of(self.pid, known, before)
            if held is not None:
                if not procnet.is_loopback_ip(held[0]):
                    raise InspectorError(f"node pid {self.pid} listens on {held[0]}:{known}, not loopback")
                # Open already: left open by an earlier session of ours (close it again),
                # or opened by the program or its flags (not ours to close).
                return known, known == self._opened_port
        if active:
            raise InspectorError(f"node pid {self.pid} was started with an inspector on port {port}; pass url=")
        if not entry.send_signal(signal.SIGUSR1):
            raise InspectorError(f"node pid {self.pid} has exited")
        while True:
            now = procnet.tcp_listeners(self.pid)
            for inode, (ip, p) in now.items():
                if inode not in before and (not port or p == port) and procnet.owns_socket(self.pid, inode):
                    if not procnet.is_loopback_ip(ip):
                        log.warning("node pid %d opened its inspector on %s:%d, not loopback", self.pid, ip, p)
                    self._opened_port = p
                    return p, True
            if budget.remaining() <= 0:
                raise InspectorError(
                    f"node pid {self.pid} opened no inspector within {budget.timeout:g} s of SIGUSR1 (port "
                    f"{port or 'any'} busy, a SIGUSR1 listener in the program, or node's --disable-sigusr1?)"
                )
            time.sleep(min(0.002, budget.remaining()))

    # -- reports ----------------------------------------------------------------------------
    def heap(self) -> dict[str, Any]:
        """The latest figures as a plain dict for reports, with ``error`` and ``mode``."""
        return {
            **_node.heap_report(self),
            "inspector": {
                "mode": self.mode,
                "error": self.error,
                "sessions": self.sessions,
                "failures": self.failures,
                "last_session_ms": self.last_session_ms,
            },
        }

    def detach(self) -> None:
        """Stop inspecting: no more sessions, gone from the reports and the cleanup rung."""
        with _HANDLES_LOCK:
            if _HANDLES.get(self.pid) is self:
                del _HANDLES[self.pid]
        _node.unregister_heap_source(self)

    def __repr__(self) -> str:
        return f"<InspectedNode pid={self.pid} mode={self.mode} error={self.error!r}>"


def _target_url(pid: int, port: int, timeout: float | Deadline) -> str:
    """The WebSocket URL of ``pid``'s inspector on ``port`` (``/json/list``, by title)."""
    targets = http_get_json(f"http://127.0.0.1:{port}/json/list", timeout)
    if not isinstance(targets, list):
        raise InspectorError(f"/json/list on port {port} is not a list")
    ours = [t for t in targets if isinstance(t, dict) and t.get("title") == f"node[{pid}]"] or (
        targets if len(targets) == 1 else []
    )
    url = ours[0].get("webSocketDebuggerUrl") if ours and isinstance(ours[0], dict) else None
    if not isinstance(url, str):
        raise InspectorError(f"no inspector target for node pid {pid} on port {port}")
    return url


def _end_inspector(cdp: CDPSession) -> None:
    try:
        got = cdp.call("Runtime.evaluate", {"expression": _END_JS, "returnByValue": True}, timeout=1.0)
    except InspectorError:
        return  # the expected end: node closed the connection with the inspector
    log.warning("could not close a Node.js inspector memdiag opened: %s", (got.get("result") or {}).get("value"))


def _wait_closed(pid: int, port: int, timeout: float = 1.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if procnet.listener_of(pid, port) is None:
                return
        except InspectorError:
            return  # someone else holds the port now: ours is closed
        time.sleep(0.002)
    log.warning("the inspector memdiag opened in node pid %d is still listening on port %d", pid, port)


# -- the registry of inspected processes --------------------------------------------------


def _register(handle: InspectedNode) -> InspectedNode:
    inspected_nodes()  # forgets the handles of processes that have exited
    with _HANDLES_LOCK:
        old = _HANDLES.get(handle.pid)
        if old is not None:
            _node.unregister_heap_source(old)
        _HANDLES[handle.pid] = handle
    _node.register_heap_source(handle)
    return handle


def inspected_nodes() -> list[InspectedNode]:
    """The inspected Node processes still running (exited ones are forgotten here)."""
    with _HANDLES_LOCK:
        handles = list(_HANDLES.values())
    live = []
    for h in handles:
        if h.returncode is None:
            live.append(h)
        else:
            h.detach()
    return live


def _after_fork_in_child() -> None:
    global _SIGNAL_LOCK, _HANDLES_LOCK
    _SIGNAL_LOCK, _HANDLES_LOCK = threading.Lock(), threading.Lock()
    _HANDLES.clear()  # the parent's children are not this process's to inspect


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def inspect_node(
    target: Any,
    *,
    url: str | None = None,
    heap_limit_mb: float | None = None,
    timeout: float = 2.0,
) -> InspectedNode:
    """Read an owned, running ``node`` process's heap through its inspector (opt-in).

    Without ``url``, each session opens the inspector with ``SIGUSR1`` and closes it
    again. Start such processes with ``--inspect-port=127.0.0.1:0`` so node picks a free
    port; without it node uses 127.0.0.1:9229, and a session fails while anyone else
    holds that port. One session runs now, so a process that cannot be inspected is
    refused here rather than later.

    Args:
        target: a ``memdiag.Popen`` (or a PID tracked with ``memdiag.track``) running node.
        url: the ``ws://127.0.0.1:PORT/ID`` of an inspector it already has (node prints it
            on its stderr); it must be loopback and the port must belong to ``target``.
        heap_limit_mb: its own ``heapUsed`` threshold (default: ``node_heap_threshold_mb``).
        timeout: seconds one session may take.

    Returns:
        The :class:`InspectedNode` (also kept by memdiag until the process exits or
        :meth:`InspectedNode.detach`).

    Raises:
        ProcessNotOwnedError: the process is not owned, or outside this service's tree.
        InspectorError: not node, a ``url`` that is not loopback, or the first session
            failed (the message says why).
    """
    entry = _owned_entry(target)
    if url is not None:
        split_url(url)  # refused here if it is not ws:// on loopback
        handle = InspectedNode(entry, mode="url", url=url, heap_limit_mb=heap_limit_mb, timeout=timeout)
    else:
        if not procnet.is_node(entry.pid):
            raise InspectorError(f"process {entry.pid} is not node: SIGUSR1 would not open an inspector")
        if not procnet.catches_signal(entry.pid, signal.SIGUSR1):
            raise InspectorError(f"node pid {entry.pid} does not handle SIGUSR1 (yet): it could die of it")
        handle = InspectedNode(entry, mode="signal", heap_limit_mb=heap_limit_mb, timeout=timeout)
    if handle.read_usage() is None:
        raise InspectorError(handle.error or "the first inspector session failed")
    return _register(handle)


# -- spawn mode ---------------------------------------------------------------------------

# What node prints about its inspector; not forwarded (a session every few seconds would
# otherwise add three lines to the program's stderr each time).
_EXACT = (
    b"Debugger attached.",
    b"For help, see: https://nodejs.org/en/docs/inspector",
    b"Waiting for the debugger to disconnect...",
)
_PREFIX = (b"Debugger listening on ws://", b"Debugger ending on ws://")
_ALL = _EXACT + _PREFIX
_HOLD_MAX = 4096


class _StderrForwarder:
    """Drains the child's stderr, picks out the inspector URL, forwards everything else."""

    def __init__(self, source: IO[bytes], dest_fd: int | None, on_url: Callable[[str], None]) -> None:
        self._src = source
        self._dest = dest_fd
        self._on_url = on_url
        self._pending = b""  # the start of a line that may be node's inspector chatter
        self._midline = False  # the current line was partly forwarded: forward the rest

    def run(self) -> None:
        try:
            fd = self._src.fileno()
            while True:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                self._write(self.feed(data))
            self._write(self._pending)
        except Exception as exc:  # a thread of ours must never die noisily in the host
            log.debug("forwarding a Node.js child's stderr failed: %r", exc)
        finally:
            for close in (self._src.close, self._close_dest):
                try:
                    close()
                except OSError:
                    pass

    def _close_dest(self) -> None:
        if self._dest is not None:
            os.close(self._dest)

    def feed(self, data: bytes) -> bytes:
        """The bytes to forward for ``data``; chatter lines are dropped (the URL kept)."""
        buf, self._pending = self._pending + data, b""
        out: list[bytes] = []
        while buf:
            nl = buf.find(b"\n")
            if self._midline:
                if nl < 0:
                    out.append(buf)
                    break
                out.append(buf[: nl + 1])
                buf, self._midline = buf[nl + 1 :], False
                continue
            if nl < 0:
                if len(buf) < _HOLD_MAX and (buf.startswith(_PREFIX) or any(c.startswith(buf) for c in _ALL)):
                    self._pending = buf
                else:
                    out.append(buf)
                    self._midline = True
                break
            line, buf = buf[: nl + 1], buf[nl + 1 :]
            text = line.rstrip(b"\r\n")
            if text in _EXACT:
                continue
            if text.startswith(_PREFIX):
                if text.startswith(_PREFIX[0]):
                    self._on_url(text[len(b"Debugger listening on ") :].decode("ascii", "replace"))
                continue
            out.append(line)
        return b"".join(out)

    def _write(self, data: bytes) -> None:
        if self._dest is None or not data:
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._dest, view)
            except OSError:  # the reader went away: keep draining, stop forwarding
                self._dest = None
                return
            view = view[n:]


class InspectedNodeProcess(Popen):
    """A ``memdiag.Popen`` running ``node --inspect=127.0.0.1:0``; see :func:`spawn_inspected_node`.

    Attributes:
        inspector: the :class:`InspectedNode` (``usage``, ``error``, ``gc()``, ...).
    """

    _memdiag_kind = "node"

    def __init__(
        self,
        args: list[str],
        *,
        node: str = "node",
        heap_limit_mb: float | None = None,
        timeout: float = 2.0,
        role: str = "node",
        **kwargs: Any,
    ) -> None:
        want = kwargs.pop("stderr", None)
        if want == subprocess.STDOUT:
            raise ValueError("spawn_inspected_node() reads node's stderr: use stderr=PIPE, not STDOUT")
        text = bool(kwargs.get("text") or kwargs.get("universal_newlines") or kwargs.get("encoding"))
        text = text or bool(kwargs.get("errors"))
        if want == subprocess.PIPE:
            read_end, dest = os.pipe()
        elif want == subprocess.DEVNULL:
            read_end, dest = -1, None
        elif want is None:
            read_end, dest = -1, _dup(2)
        else:
            read_end, dest = -1, _dup(want if isinstance(want, int) else want.fileno())
        try:
            super().__init__(
                [node, "--inspect=127.0.0.1:0", *safe_node_argv(args)], stderr=subprocess.PIPE, role=role, **kwargs
            )
        except BaseException:
            for fd in (read_end, dest):
                if fd is not None and fd >= 0:
                    os.close(fd)
            raise
        child_err: Any = self.stderr  # a pipe: Popen opened it
        source: IO[bytes] = child_err.detach() if text else child_err
        self.stderr = None
        if read_end >= 0:
            pipe: IO[Any] = open(read_end, "rb")  # noqa: SIM115 - proc.stderr, closed by its user
            if text:
                pipe = io.TextIOWrapper(pipe, encoding=kwargs.get("encoding"), errors=kwargs.get("errors"))
            self.stderr = pipe
        self.inspector = InspectedNode(self.ownership, mode="spawned", heap_limit_mb=heap_limit_mb, timeout=timeout)
        forwarder = _StderrForwarder(source, dest, self.inspector._set_url)
        self._forwarder = threading.Thread(target=forwarder.run, name=f"memdiag-node-stderr-{self.pid}", daemon=True)
        self._forwarder.start()
        _register(self.inspector)
        weakref.finalize(self, self.inspector.detach)

    @property
    def usage(self) -> dict[str, Any] | None:
        """The last heap figures read through the inspector (see :class:`InspectedNode`)."""
        return self.inspector.usage

    def gc(self, timeout: float = 10.0) -> dict[str, Any]:
        """A full collection in the child (:meth:`InspectedNode.gc`)."""
        return self.inspector.gc(timeout)


def _dup(fd: int) -> int | None:
    try:
        return os.dup(fd)
    except OSError:  # the parent has no such descriptor: drop the child's output
        return None


def spawn_inspected_node(args: list[str], **kwargs: Any) -> InspectedNodeProcess:
    """Start ``node --inspect=127.0.0.1:0 *args``: its heap is read over the inspector.

    For Node processes that cannot take the ``spawn_node`` agent. The inspector listens on
    loopback, on a port the kernel picks, for the life of the process: anyone on this
    host who finds the port can run code in it (see ``docs/processes.md``).

    Args:
        args: node's arguments, e.g. ``["server.js"]``.
        **kwargs: ``node`` (the binary), ``heap_limit_mb``, ``timeout`` (seconds per
            session), ``role``, and any ``memdiag.Popen`` argument. ``stderr`` may be
            ``None`` (this process's stderr), ``DEVNULL``, ``PIPE`` or a file; node's
            inspector status lines are left out of it.

    Example::

        proc = memdiag.spawn_inspected_node(["server.js"], heap_limit_mb=400)
        proc.inspector.read_usage()["heapUsed"]; proc.gc()["freed_bytes"]
    """
    return InspectedNodeProcess(args, **kwargs)
