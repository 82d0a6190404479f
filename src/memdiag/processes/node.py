"""Node.js children whose heaps memdiag can see and collect.

:func:`spawn_node` starts ``node`` with a small preload agent (``memdiag/node/agent.js``,
through ``NODE_OPTIONS=--require agent.js --expose-gc``) and an IPC channel: a Unix
socketpair whose child end is passed as ``NODE_CHANNEL_FD``, the same channel
``child_process.fork()`` sets up, with JSON-lines serialisation. The agent reports
``process.memoryUsage()`` (``heapUsed``, ``heapTotal``, ``external``, ``arrayBuffers``,
``rss``) every ``report_interval`` seconds; a reader thread keeps the latest figures.
:meth:`NodeProcess.gc` asks the agent for a full collection and returns the heap before
and after (answered in well under a millisecond plus the collection itself).

Each Node child's ``heapUsed`` is a pressure signal (``node_heap``, per child, against
``node_heap_threshold_mb`` or the child's own ``heap_limit_mb``), and the ``node_gc``
rung (order 50) collects every Node child's heap. Node processes read through the
inspector (:mod:`memdiag.processes.inspector`) join both through
:func:`register_heap_source`.

Limits: the agent's messages use ``cmd: "NODE_MEMDIAG"``, which node delivers as
``internalMessage``, so the program's own ``process.on('message')`` never sees them and
its ``process.send()`` messages reach ``on_message``. A program that calls
``process.disconnect()`` ends the reports. ``--expose-gc`` makes ``global.gc`` visible
to the program. Node processes this one starts do not inherit the agent.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .. import registry as _registry
from .._logging import get_logger
from ..config import MemoryConfig
from ..registry import CleanupContext, SignalReading
from ..units import MIB
from .sanitize import join_node_options, safe_node_argv, sanitize_node_options, split_node_options
from .spawn import Popen

if TYPE_CHECKING:
    from ..sample import Sample

__all__ = [
    "AGENT_PATH",
    "NodeHeapSource",
    "NodeProcess",
    "heaps",
    "node_processes",
    "register_heap_source",
    "spawn_node",
    "unregister_heap_source",
]

log = get_logger("memdiag.processes")
AGENT_PATH = str(Path(__file__).resolve().parent.parent / "node" / "agent.js")
_CMD = "NODE_MEMDIAG"
_NODES: weakref.WeakSet[NodeHeapSource] = weakref.WeakSet()
_ids = itertools.count(1)


class NodeHeapSource(Protocol):
    """A Node.js process whose heap memdiag reads: a :class:`NodeProcess`, or one read
    through its inspector. ``refresh`` is called on every monitor tick and must return at
    once; figures older than ``stale_after`` seconds are not a pressure reading."""

    pid: int
    usage: dict[str, Any] | None
    heap_limit_bytes: int | None
    stale_after: float

    @property
    def connected(self) -> bool: ...

    @property
    def returncode(self) -> int | None: ...

    def refresh(self, cfg: MemoryConfig) -> None: ...

    def gc(self, timeout: float = ...) -> dict[str, Any]: ...

    def heap(self) -> dict[str, Any]: ...


class NodeProcess(Popen):
    """A ``memdiag.Popen`` running ``node`` with the memdiag agent and an IPC channel.

    Create it with :func:`spawn_node`. Besides the ``Popen`` API it offers:

    Attributes:
        usage: the latest ``process.memoryUsage()`` report (with ``time``), or ``None``.
        agent: the agent's hello (node version, whether ``gc`` is exposed), or ``None``.
        heap_limit_bytes: this child's own heap threshold, or ``None`` (config's).
    """

    _memdiag_kind = "node"
    stale_after = 30.0

    def __init__(
        self,
        args: list[str],
        *,
        node: str = "node",
        report_interval: float = 1.0,
        heap_limit_mb: float | None = None,
        on_message: Callable[[Any], None] | None = None,
        role: str = "node",
        **kwargs: Any,
    ) -> None:
        install()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        base = dict(kwargs.pop("env", None) or os.environ)
        orig, _ = sanitize_node_options(base.get("NODE_OPTIONS", ""))
        words = [*split_node_options(orig), "--require", AGENT_PATH, "--expose-gc"]
        base.update(
            NODE_OPTIONS=join_node_options(words),
            MEMDIAG_NODE_OPTIONS_ORIG=orig,
            MEMDIAG_NODE_AGENT="1",
            MEMDIAG_NODE_INTERVAL_MS=str(max(50, int(report_interval * 1000))),
            NODE_CHANNEL_FD=str(child.fileno()),
            NODE_CHANNEL_SERIALIZATION_MODE="json",
        )
        pass_fds = (*kwargs.pop("pass_fds", ()), child.fileno())
        self.usage: dict[str, Any] | None = None
        self.agent: dict[str, Any] | None = None
        self.heap_limit_bytes = int(heap_limit_mb * MIB) if heap_limit_mb is not None else None
        self.on_message = on_message
        self._sock = parent
        self._send_lock = threading.Lock()
        self._replies: dict[int, tuple[threading.Event, list[Any]]] = {}
        self._closed = threading.Event()
        try:
            super().__init__([node, *safe_node_argv(args)], env=base, pass_fds=pass_fds, role=role, **kwargs)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self._reader = threading.Thread(target=self._read, name=f"memdiag-node-{self.pid}", daemon=True)
        self._reader.start()
        _NODES.add(self)

    # -- the channel -----------------------------------------------------------------------
    def refresh(self, cfg: MemoryConfig) -> None:
        """Nothing to do: the agent reports by itself."""

    @property
    def connected(self) -> bool:
        """True while the IPC channel is open."""
        return not self._closed.is_set()

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self._dispatch(line)
        except OSError:
            pass
        finally:
            self._closed.set()
            for event, _ in list(self._replies.values()):
                event.set()
            try:
                self._sock.close()
            except OSError:
                pass

    def _dispatch(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            return
        if isinstance(msg, dict) and msg.get("cmd") == _CMD:
            op = msg.get("op")
            if op == "hello":
                self.agent = {k: msg.get(k) for k in ("node", "gc")}
            usage = msg.get("usage") or msg.get("after")
            if isinstance(usage, dict):
                self.usage = {**usage, "time": time.time()}
            rid = msg.get("id")
            waiter = self._replies.pop(rid, None) if isinstance(rid, int) else None
            if waiter is not None:
                waiter[1].append(msg)
                waiter[0].set()
        elif isinstance(msg, dict) and str(msg.get("cmd", "")).startswith("NODE_"):
            return  # node's own internal traffic
        elif self.on_message is not None:
            try:
                self.on_message(msg)
            except Exception as exc:
                log.debug("on_message handler failed: %r", exc)

    def send(self, message: Any) -> None:
        """Send a message to the program's ``process.on('message')`` (JSON-serialisable).

        Raises:
            BrokenPipeError: the channel is closed.
        """
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with self._send_lock:
            if self._closed.is_set():
                raise BrokenPipeError("the Node.js IPC channel is closed")
            self._sock.sendall(data)

    def _request(self, op: str, timeout: float) -> dict[str, Any] | None:
        rid = next(_ids)
        event: threading.Event = threading.Event()
        box: list[Any] = []
        self._replies[rid] = (event, box)
        try:
            self.send({"cmd": _CMD, "op": op, "id": rid})
        except OSError:
            self._replies.pop(rid, None)
            return None
        event.wait(timeout)
        self._replies.pop(rid, None)
        return box[0] if box else None

    def request_usage(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """Ask for ``process.memoryUsage()`` now; ``None`` if no answer within ``timeout``."""
        msg = self._request("usage", timeout)
        return None if msg is None else msg.get("usage")

    def gc(self, timeout: float = 10.0) -> dict[str, Any]:
        """Run a full garbage collection in the child; the heap before and after.

        Returns:
            ``{"ok", "before", "after", "freed_bytes", "gc_ms"}`` (``ok`` False with an
            ``error`` when the child did not answer or has no exposed ``gc``).
        """
        msg = self._request("gc", timeout)
        if msg is None:
            return {"ok": False, "error": "no answer (channel closed or timed out)", "freed_bytes": 0}
        before, after = msg.get("before") or {}, msg.get("after") or {}
        freed = max(0, int(before.get("heapUsed", 0)) - int(after.get("heapUsed", 0)))
        out = {
            "ok": bool(msg.get("ok")),
            "before": before,
            "after": after,
            "freed_bytes": freed,
            "gc_ms": msg.get("ms"),
        }
        if not msg.get("ok"):
            out["error"] = "global.gc is not exposed"
        return out

    def heap(self) -> dict[str, Any]:
        """The latest report as a plain dict for reports (pid, figures, age, limit)."""
        return heap_report(self, (self.agent or {}).get("node"))


def heap_report(source: NodeHeapSource, node_version: str | None = None) -> dict[str, Any]:
    """``source``'s latest ``process.memoryUsage()`` figures as a plain dict for reports."""
    u = source.usage or {}
    return {
        "pid": source.pid,
        "heap_used_bytes": u.get("heapUsed"),
        "heap_total_bytes": u.get("heapTotal"),
        "external_bytes": u.get("external"),
        "array_buffers_bytes": u.get("arrayBuffers"),
        "rss_bytes": u.get("rss"),
        "age_seconds": round(time.time() - u["time"], 3) if u else None,
        "heap_limit_bytes": source.heap_limit_bytes,
        "connected": source.connected,
        "node_version": node_version,
    }


def spawn_node(args: list[str], **kwargs: Any) -> NodeProcess:
    """Start ``node *args`` with the memdiag agent; its heap appears in the samples.

    Args:
        args: node's arguments, e.g. ``["server.js", "--port", "3000"]``.
        **kwargs: ``node`` (the binary), ``report_interval`` (s), ``heap_limit_mb``,
            ``on_message`` (called with the program's own ``process.send()`` messages),
            ``role``, and any ``memdiag.Popen``/``subprocess.Popen`` argument.

    Example::

        proc = memdiag.spawn_node(["renderer.js"], heap_limit_mb=400)
        proc.usage["heapUsed"]; proc.gc()["freed_bytes"]
    """
    return NodeProcess(args, **kwargs)


def node_processes() -> list[NodeHeapSource]:
    """The running Node children: started with :func:`spawn_node`, or inspected."""
    return [p for p in list(_NODES) if p.returncode is None]


def register_heap_source(source: NodeHeapSource) -> None:
    """Add a Node process to ``heaps()``, the ``node_heap`` signal and the ``node_gc``
    rung (held weakly: the caller keeps it alive)."""
    install()
    _NODES.add(source)


def unregister_heap_source(source: NodeHeapSource) -> None:
    """Take a source out again (idempotent)."""
    _NODES.discard(source)


def heaps() -> dict[int, dict[str, Any]]:
    """``{pid: heap report}`` of the running Node children."""
    return {p.pid: p.heap() for p in node_processes()}


# -- pressure signal and cleanup rung -----------------------------------------------------


def node_heap_signal(sample: Sample, cfg: MemoryConfig) -> list[SignalReading]:
    """One ``node_heap`` reading per Node child with a fresh report."""
    out = []
    now = time.time()
    for p in node_processes():
        p.refresh(cfg)
        u = p.usage
        if not u or now - u["time"] > p.stale_after or not p.connected:
            continue
        crit = float(p.heap_limit_bytes or cfg.node_heap_threshold_mb * MIB)
        out.append(
            SignalReading("node_heap", float(u["heapUsed"]), crit * cfg.warning_ratio, crit, "bytes", f"pid {p.pid}")
        )
    return out


def node_gc_rung(ctx: CleanupContext) -> dict[str, Any]:
    """Collect the heap of every Node child, in parallel; freed = heapUsed drop."""
    nodes = [p for p in node_processes() if p.connected]
    if ctx.dry_run:
        used = sum(int((p.usage or {}).get("heapUsed", 0)) for p in nodes)
        return {"count": len(nodes), "detail": f"would collect {len(nodes)} Node.js heaps ({used // MIB} MiB in use)"}
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda p=p: results.append(p.gc()), daemon=True) for p in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15.0)
    ok = [r for r in results if r.get("ok")]
    freed = sum(r["freed_bytes"] for r in ok)
    return {
        "freed_bytes": freed,
        "scope": "children",
        "count": len(ok),
        "detail": f"collected {len(ok)} of {len(nodes)} Node.js heaps",
    }


def install() -> None:
    """Register the ``node_heap`` signal and the ``node_gc`` rung (idempotent)."""
    if "node_heap" not in _registry.signal_sources():
        _registry.register_signal("node_heap", node_heap_signal)
    if "node_gc" not in {a.name for a in _registry.cleanup_actions()}:
        _registry.register_cleanup("node_gc", node_gc_rung, order=50)
