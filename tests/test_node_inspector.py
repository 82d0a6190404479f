"""Inspector mode: the CDP client's codec and deadlines, and real `node` processes read
through their inspector (spawned with --inspect=127.0.0.1:0, or attached by SIGUSR1)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import memdiag
from memdiag.config import MemoryConfig
from memdiag.errors import ConfigError, ProcessNotOwnedError
from memdiag.processes import inspector, procnet
from memdiag.processes.cdp import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    CDPSession,
    InspectorError,
    WebSocket,
    decode_frame,
    encode_frame,
    http_get_json,
    loopback_host,
)
from memdiag.processes.inspector import InspectedNodeProcess, inspect_node, spawn_inspected_node
from memdiag.processes.node import heaps, node_processes
from memdiag.processes.sanitize import sanitize_node_options
from memdiag.service import MemoryDiagnostics

from .conftest import wait_for

MIB = 1024 * 1024
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Grows or drops ~1 MiB arrays on stdin commands; says so on stderr (which memdiag forwards).
HOARD_JS = """
let hoard = [];
console.error('hoard ready');
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  for (const cmd of d.split('\\n')) {
    const [op, n] = cmd.split(' ');
    if (op === 'fill') { for (let i = 0; i < Number(n); i++) hoard.push(new Array(128 * 1024).fill(i)); }
    if (op === 'drop') hoard = [];
    if (op) console.error('done ' + op + ' ' + hoard.length);
  }
});
"""


@pytest.fixture
def hoard_js(tmp_path: Path) -> str:
    path = tmp_path / "hoard.js"
    path.write_text(HOARD_JS)
    return str(path)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    out: list[subprocess.Popen] = []
    yield out
    for p in out:
        try:
            os.kill(p.pid, signal.SIGCONT)
        except OSError:
            pass
        if p.poll() is None:
            p.kill()
        p.wait(5)
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream is not None:
                stream.close()
    for h in inspector.inspected_nodes():
        h.detach()


def read_stderr_until(proc: subprocess.Popen, needle: bytes, timeout: float = 10.0) -> bytes:
    """Read ``proc.stderr`` (a pipe) until ``needle`` appears; everything read."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    got = b""
    end = time.monotonic() + timeout
    while needle not in got:
        assert time.monotonic() < end, f"no {needle!r} on stderr; got {got!r}"
        import select

        if select.select([fd], [], [], 0.1)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"stderr closed before {needle!r}; got {got!r}"
            got += chunk
    return got


# -- the frame codec ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("masked", [True, False])
def test_frames_round_trip_with_7_16_and_64_bit_lengths(size: int, masked: bool) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    key = b"\x01\x82\x43\xf4" if masked else b""
    raw = encode_frame(OP_BINARY, payload, mask_key=key)
    header = 2 + (0 if size < 126 else 2 if size < 65536 else 8) + (4 if masked else 0)
    assert len(raw) == header + size
    assert raw[1] & 0x7F == (size if size < 126 else 126 if size < 65536 else 127)
    assert bool(raw[1] & 0x80) is masked
    if masked and size:
        assert raw[header:] != payload  # really masked on the wire
    frame, used = decode_frame(raw, masked=masked)  # type: ignore[misc]
    assert frame.payload == payload and frame.opcode == OP_BINARY and frame.fin and used == len(raw)
    for cut in {0, 1, header - 1, len(raw) - 1} - {len(raw)}:
        assert decode_frame(raw[: max(cut, 0)], masked=masked) is None  # incomplete: wait


def test_client_frames_are_masked_with_a_fresh_key() -> None:
    a, b = encode_frame(OP_TEXT, b"same"), encode_frame(OP_TEXT, b"same")
    assert a[1] & 0x80 and b[1] & 0x80 and a != b


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (bytes([0xC1, 0x00]), "reserved bits"),
        (bytes([0x83, 0x00]), "unknown opcode"),
        (bytes([0x09, 0x00]), "control frame"),  # a fragmented ping
        (bytes([0x89, 126, 0, 200]) + bytes(200), "control frame"),
        (bytes([0x81, 127]) + struct.pack("!Q", 1 << 63), "top bit"),
        (bytes([0x81, 0x81, 1, 2, 3, 4, 5]), "masked"),  # a server must not mask
        (bytes([0x81, 127]) + struct.pack("!Q", 100 * MIB), "over"),
    ],
)
def test_protocol_violations_are_refused(raw: bytes, why: str) -> None:
    with pytest.raises(InspectorError, match=why):
        decode_frame(raw, max_payload=16 * MIB)


# -- a WebSocket against a server written here --------------------------------------------


class Server:
    """A real TCP server on 127.0.0.1 that runs ``handler(conn)`` for each connection."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.received: list[bytes] = []
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handler(conn)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket], None]], Server]]:
    servers: list[Server] = []

    def start(handler: Callable[[socket.socket], None]) -> Server:
        servers.append(Server(handler))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def handshake(conn: socket.socket, accept_override: str | None = None) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(4096)
    key = next(
        line.split(":", 1)[1].strip()
        for line in data.decode().split("\r\n")
        if line.lower().startswith("sec-websocket-key")
    )
    accept = accept_override or base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    conn.sendall(
        f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
    )


def read_client_frame(conn: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    while True:
        got = decode_frame(buf, masked=True)  # a client's frames must be masked
        if got is not None:
            del buf[: got[1]]
            return got[0].opcode, got[0].payload
        data = conn.recv(65536)
        if not data:
            raise OSError("client went away")
        buf += data


def test_fragmented_messages_pings_and_close(serve: Callable[..., Server]) -> None:
    big = json.dumps({"id": 1, "result": {"blob": "x" * 200_000}})
    seen: list[tuple[int, bytes]] = []

    def handler(conn: socket.socket) -> None:
        handshake(conn)
        buf = bytearray()
        seen.append(read_client_frame(conn, buf))
        raw = big.encode()
        third = len(raw) // 3
        # text in three fragments, with a ping between two of them; all unmasked.
        conn.sendall(encode_frame(OP_TEXT, raw[:third], fin=False, mask_key=b""))
        conn.sendall(encode_frame(OP_PING, b"are you there", mask_key=b""))
        conn.sendall(encode_frame(OP_CONT, raw[third : 2 * third], fin=False, mask_key=b""))
        conn.sendall(encode_frame(OP_CONT, raw[2 * third :], mask_key=b""))
        seen.append(read_client_frame(conn, buf))  # the pong
        seen.append(read_client_frame(conn, buf))  # the close
        conn.sendall(encode_frame(OP_CLOSE, struct.pack("!H", 1000), mask_key=b""))

    server = serve(handler)
    cdp = CDPSession.connect(f"ws://127.0.0.1:{server.port}/x", timeout=2.0)
    assert cdp.call("Big.thing", {"a": 1})["blob"] == "x" * 200_000
    cdp.close()
    assert cdp.ws.closed
    assert json.loads(seen[0][1]) == {"id": 1, "method": "Big.thing", "params": {"a": 1}}
    assert seen[1] == (OP_PONG, b"are you there")
    assert seen[2] == (OP_CLOSE, struct.pack("!H", 1000))


def test_a_silent_server_times_out_within_the_deadline(serve: Callable[..., Server]) -> None:
    server = serve(lambda conn: time.sleep(30))  # accepts, never answers
    t0 = time.monotonic()
    with pytest.raises(InspectorError, match=r"no answer within 0.5 s"):
        WebSocket.connect(f"ws://127.0.0.1:{server.port}/x", timeout=0.5)
    assert time.monotonic() - t0 < 5.0  # its own deadline, not the server's 30 s (slack for a loaded machine)


def test_a_dripping_server_cannot_stretch_the_deadline(serve: Callable[..., Server]) -> None:
    def drip(conn: socket.socket) -> None:
        handshake(conn)
        read_client_frame(conn, bytearray())
        frame = encode_frame(OP_TEXT, b'{"id": 1, "result": {}}' + b" " * 500, mask_key=b"")
        for byte in frame:  # one byte every 20 ms: every recv succeeds, the call never ends
            conn.sendall(bytes([byte]))
            time.sleep(0.02)

    server = serve(drip)
    cdp = CDPSession.connect(f"ws://127.0.0.1:{server.port}/x")
    t0 = time.monotonic()
    with pytest.raises(InspectorError, match=r"no answer within 0\.5 s"):
        cdp.call("Runtime.getHeapUsage", timeout=0.5)
    assert time.monotonic() - t0 < 5.0  # its own deadline, not the drip's ~10 s (slack for a loaded machine)
    cdp.close()


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", "not upgraded"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not upgraded"),
        (b"\x00\xff" * 10_000, "header over"),
        (b"", "closed before"),
    ],
)
def test_garbage_servers_give_a_clear_error(serve: Callable[..., Server], reply: bytes, why: str) -> None:
    def handler(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(reply)
        conn.close()

    server = serve(handler)
    with pytest.raises(InspectorError, match=why):
        WebSocket.connect(f"ws://127.0.0.1:{server.port}/x", timeout=2.0)


def test_wrong_accept_header_and_bad_frames_are_refused(serve: Callable[..., Server]) -> None:
    server = serve(lambda conn: handshake(conn, accept_override="d3Jvbmc="))
    with pytest.raises(InspectorError, match="Sec-WebSocket-Accept"):
        WebSocket.connect(f"ws://127.0.0.1:{server.port}/x")

    def rsv(conn: socket.socket) -> None:
        handshake(conn)
        read_client_frame(conn, bytearray())
        conn.sendall(bytes([0xF1, 0x02]) + b"{}")
        time.sleep(5)

    server = serve(rsv)
    cdp = CDPSession.connect(f"ws://127.0.0.1:{server.port}/x")
    with pytest.raises(InspectorError, match="reserved bits"):
        cdp.call("Runtime.getHeapUsage")
    cdp.close()


def test_oversized_messages_and_cdp_errors(serve: Callable[..., Server]) -> None:
    def handler(conn: socket.socket) -> None:
        handshake(conn)
        buf = bytearray()
        read_client_frame(conn, buf)
        conn.sendall(encode_frame(OP_TEXT, json.dumps({"id": 1, "error": {"message": "nope"}}).encode(), mask_key=b""))
        read_client_frame(conn, buf)
        conn.sendall(encode_frame(OP_TEXT, b"x" * 5000, mask_key=b""))
        time.sleep(5)

    server = serve(handler)
    ws = WebSocket.connect(f"ws://127.0.0.1:{server.port}/x", max_message=4096)
    cdp = CDPSession(ws)
    with pytest.raises(InspectorError, match=r"Some\.method: nope"):
        cdp.call("Some.method")
    with pytest.raises(InspectorError, match="over 4096 bytes"):
        cdp.call("Other.method")
    cdp.close()


# -- loopback only ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["ws://10.1.2.3:9229/x", "ws://0.0.0.0:9229/x", "ws://example.com:9229/x", "ws://[2001:db8::1]:9229/x"],
)
def test_non_loopback_addresses_are_refused_before_connecting(url: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(InspectorError, match="refusing inspector"):
        WebSocket.connect(url, timeout=5.0)
    with pytest.raises(InspectorError, match="refusing inspector"):
        http_get_json(url.replace("ws://", "http://"), timeout=5.0)
    assert time.monotonic() - t0 < 2.5  # refused, not tried (a try would wait out its 5 s timeouts)


def test_loopback_names() -> None:
    assert loopback_host("localhost") == "127.0.0.1"  # no resolver asked
    assert loopback_host("[::1]") == "::1"
    assert loopback_host("127.0.0.2") == "127.0.0.2"


# -- spawn mode: a real node with --inspect=127.0.0.1:0 -----------------------------------


def test_spawned_inspector_heap_is_sampled_counts_as_pressure_and_gc_frees_it(
    diag: MemoryDiagnostics, hoard_js: str, procs: list[subprocess.Popen]
) -> None:
    p = spawn_inspected_node([hoard_js], heap_limit_mb=100, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    procs.append(p)
    assert isinstance(p, memdiag.Popen) and p.ownership.kind == "node"
    read_stderr_until(p, b"hoard ready")
    assert p.inspector.url is not None and p.inspector.url.startswith("ws://127.0.0.1:")
    assert not p.inspector.url.startswith("ws://127.0.0.1:9229/")  # port 0: the kernel picked
    assert p.stdin is not None
    p.stdin.write(b"fill 130\n")
    p.stdin.flush()
    read_stderr_until(p, b"done fill 130")
    usage = p.inspector.read_usage()
    assert usage is not None and usage["heapUsed"] > 100 * MIB, p.inspector.error
    for key in ("heapTotal", "external", "arrayBuffers", "rss"):
        assert isinstance(usage[key], int)
    _, state = diag.tick()
    sig = next(s for s in state.signals if s["signal"] == "node_heap" and s["detail"] == f"pid {p.pid}")
    assert sig["value"] > 100 * MIB and sig["level"] == "critical"
    item = next(it for it in diag.subprocesses() if it["pid"] == p.pid)
    assert item["owned"] and item["node"]["heap_used_bytes"] > 100 * MIB
    assert item["node"]["inspector"]["mode"] == "spawned"
    assert any(n["pid"] == p.pid for n in diag.diagnostics()["processes"]["node"])
    p.stdin.write(b"drop\n")
    p.stdin.flush()
    read_stderr_until(p, b"done drop 0")
    result = diag.cleanup(force=True)
    rung = next(a for a in result["actions"] if a["name"] == "node_gc")
    assert rung["error"] is None and rung["count"] >= 1
    assert rung["freed_bytes"] >= 100 * MIB
    assert p.usage is not None and p.usage["heapUsed"] < 30 * MIB
    _, state = diag.tick()
    assert all(s["level"] == "ok" for s in state.signals if s["signal"] == "node_heap")
    p.stdin.close()
    assert p.wait(10) == 0  # stdin closed: the program ends normally
    rest = p.stderr.read() if p.stderr is not None else b""
    assert b"Debugger" not in rest and b"For help" not in rest  # node's inspector chatter left out
    assert p not in node_processes() and p.pid not in heaps()


def test_stderr_is_forwarded_whole_in_text_mode(procs: list[subprocess.Popen]) -> None:
    code = (
        "process.stderr.write('partial '); setTimeout(() => console.error('line\\nDebugger attached. (not node)'), 50)"
    )
    p = spawn_inspected_node(["-e", code], stderr=subprocess.PIPE, text=True)
    procs.append(p)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0
    assert err == "partial line\nDebugger attached. (not node)\n"


def test_inspector_chatter_filter_on_split_chunks() -> None:
    urls: list[str] = []
    with open(os.devnull, "rb") as nothing:  # feed() alone is under test; run() is not called
        fwd = inspector._StderrForwarder(nothing, None, urls.append)
    stream = (
        b"Debugger listening on ws://127.0.0.1:4242/abc\nFor help, see: https://nodejs.org/en/docs/inspector\n"
        b"app: starting\nDebugger attached.\nprogress 10%\rprogress 20%\rDebugger ending on ws://127.0.0.1:4242/abc\n"
        b"For help, see: https://nodejs.org/en/docs/inspector\nDebug"
    )
    out = b"".join(fwd.feed(stream[i : i + 7]) for i in range(0, len(stream), 7))
    assert urls == ["ws://127.0.0.1:4242/abc"]
    assert out == b"app: starting\nprogress 10%\rprogress 20%\rDebugger ending on ws://127.0.0.1:4242/abc\n"
    assert fwd._pending == b"Debug"  # held: it may still become chatter
    assert fwd.feed(b"ging is fun\n") == b"Debugging is fun\n"
    assert fwd.feed(b"no newline yet") == b"no newline yet"  # a partial line is not held back


def test_stderr_stdout_is_refused() -> None:
    with pytest.raises(ValueError, match="stderr"):
        spawn_inspected_node(["-e", "0"], stderr=subprocess.STDOUT)


def test_a_hung_inspector_never_blocks_a_tick_and_leaves_a_reason(
    diag: MemoryDiagnostics, procs: list[subprocess.Popen]
) -> None:
    p = spawn_inspected_node(["-e", "setInterval(() => {}, 1000)"], timeout=0.5, stderr=subprocess.DEVNULL)
    procs.append(p)
    # node prints its "Debugger listening" line when it gets to it: seconds, on a loaded machine
    wait_for(lambda: p.inspector.read_usage() is not None, timeout=30, what="the inspector")
    os.kill(p.pid, signal.SIGSTOP)  # the kernel still accepts connections; node answers nothing
    p.inspector._last_attempt = 0.0  # due now
    t0 = time.perf_counter()
    _, state = diag.tick()  # starts a session in the background, never waits for it
    assert time.perf_counter() - t0 < 0.25
    wait_for(lambda: p.inspector.error is not None, timeout=3.0, what="the session to fail")
    assert "no answer within 0.5 s" in p.inspector.error
    assert p.inspector.usage is None and not p.inspector.connected
    heap = heaps()[p.pid]
    assert heap["heap_used_bytes"] is None and "no answer" in heap["inspector"]["error"]
    _, state = diag.tick()
    assert not any(s["detail"] == f"pid {p.pid}" for s in state.signals if s["signal"] == "node_heap")
    gc = p.gc(timeout=0.5)
    assert gc["ok"] is False and "no answer" in gc["error"]
    os.kill(p.pid, signal.SIGCONT)
    assert p.inspector.read_usage() is not None, p.inspector.error  # it recovers


def test_refresh_follows_the_configured_interval(procs: list[subprocess.Popen]) -> None:
    p = spawn_inspected_node(["-e", "setInterval(() => {}, 1000)"], stderr=subprocess.DEVNULL)
    procs.append(p)
    cfg = MemoryConfig(node_inspect_interval=0.5)
    for _ in range(20):  # 20 ticks in 0.2 s: one session, not twenty
        p.inspector.refresh(cfg)
        time.sleep(0.01)
    wait_for(lambda: p.inspector.sessions == 1 and not p.inspector._busy, what="one session")
    time.sleep(0.35)
    p.inspector.refresh(cfg)
    wait_for(lambda: p.inspector.sessions == 2, what="the next session, once due")
    assert p.inspector.stale_after == 30.0


def test_inspect_interval_is_validated() -> None:
    assert MemoryConfig().node_inspect_interval == 5.0
    with pytest.raises(ConfigError, match="node_inspect_interval"):
        MemoryConfig(node_inspect_interval=0.1)


def test_the_opt_in_flags_pass_the_sanitiser(procs: list[subprocess.Popen]) -> None:
    for flags in ("--inspect=127.0.0.1:0", "--inspect-port=127.0.0.1:0"):
        assert sanitize_node_options(flags) == (flags, [])
    # An inherited NODE_OPTIONS inspector (sanitised to loopback) does not override ours.
    env = {**os.environ, "NODE_OPTIONS": "--inspect=0.0.0.0:9229"}
    p = spawn_inspected_node(["-e", "setInterval(() => {}, 1000)"], env=env, stderr=subprocess.DEVNULL)
    procs.append(p)
    wait_for(lambda: p.inspector.read_usage() is not None, timeout=30, what="the inspector")
    assert p.inspector.url is not None and ":9229/" not in p.inspector.url


# -- attach mode: SIGUSR1 to an owned node -----------------------------------------------


def inspector_sockets(pid: int) -> list[tuple[str, int]]:
    return [addr for inode, addr in procnet.tcp_listeners(pid).items() if procnet.owns_socket(pid, inode)]


def test_attach_by_sigusr1_opens_the_inspector_only_for_the_session(
    diag: MemoryDiagnostics, hoard_js: str, procs: list[subprocess.Popen]
) -> None:
    p = memdiag.Popen(["node", "--inspect-port=127.0.0.1:0", hoard_js], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    procs.append(p)
    read_stderr_until(p, b"hoard ready")
    assert inspector_sockets(p.pid) == []
    handle = inspect_node(p, heap_limit_mb=100)
    assert handle.mode == "signal" and handle.usage is not None
    assert inspector_sockets(p.pid) == []  # closed again after the session
    assert p.stdin is not None
    p.stdin.write(b"fill 120\n")
    p.stdin.flush()
    read_stderr_until(p, b"done fill 120")
    assert (handle.read_usage() or {}).get("heapUsed", 0) > 100 * MIB, handle.error
    _, state = diag.tick()
    sig = next(s for s in state.signals if s["signal"] == "node_heap" and s["detail"] == f"pid {p.pid}")
    assert sig["level"] == "critical"
    p.stdin.write(b"drop\n")
    p.stdin.flush()
    read_stderr_until(p, b"done drop 0")
    wait_for(lambda: not handle._busy, what="the session the tick started")
    gc = handle.gc()
    assert gc["ok"] and gc["freed_bytes"] >= 100 * MIB
    assert inspector_sockets(p.pid) == []
    assert handle.sessions >= 3 and p.poll() is None
    handle.detach()
    assert p.pid not in heaps()


def test_never_signals_a_process_it_does_not_own(procs: list[subprocess.Popen]) -> None:
    stranger = subprocess.Popen(["node", "-e", "setInterval(() => {}, 1000)"], stderr=subprocess.PIPE)
    procs.append(stranger)
    time.sleep(0.3)
    with pytest.raises(ProcessNotOwnedError):
        inspect_node(stranger)
    with pytest.raises(ProcessNotOwnedError):
        inspect_node(stranger.pid, url="ws://127.0.0.1:9229/x")
    time.sleep(0.2)
    assert stranger.poll() is None
    assert inspector_sockets(stranger.pid) == []  # no SIGUSR1 reached it


def test_refuses_a_non_node_owned_process(procs: list[subprocess.Popen]) -> None:
    p = memdiag.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    procs.append(p)
    with pytest.raises(InspectorError, match="not node"):
        inspect_node(p)  # SIGUSR1 would have killed it
    assert p.poll() is None


def test_refuses_an_inspector_port_on_a_non_loopback_host(procs: list[subprocess.Popen]) -> None:
    p = memdiag.Popen(["node", "--inspect-port=0.0.0.0:0", "-e", "setInterval(() => {}, 1000)"])
    procs.append(p)
    wait_for(lambda: procnet.catches_signal(p.pid, signal.SIGUSR1), what="node's SIGUSR1 handler")
    with pytest.raises(InspectorError, match="not a loopback"):
        inspect_node(p)
    assert inspector_sockets(p.pid) == []  # not signalled: nothing opened on 0.0.0.0


def test_refuses_when_another_process_holds_the_debug_port(procs: list[subprocess.Popen]) -> None:
    squatter = socket.create_server(("127.0.0.1", 0))
    port = squatter.getsockname()[1]
    try:
        p = memdiag.Popen(["node", f"--inspect-port=127.0.0.1:{port}", "-e", "setInterval(() => {}, 1000)"])
        procs.append(p)
        wait_for(lambda: procnet.catches_signal(p.pid, signal.SIGUSR1), what="node's SIGUSR1 handler")
        with pytest.raises(InspectorError, match=f"port {port} is held by another process"):
            inspect_node(p)
        with pytest.raises(InspectorError, match="held by another process"):
            inspect_node(p, url=f"ws://127.0.0.1:{port}/x")  # never talks to the squatter
    finally:
        squatter.close()


def test_url_mode_uses_an_existing_inspector_and_refuses_non_loopback(procs: list[subprocess.Popen]) -> None:
    p = memdiag.Popen(["node", "--inspect=127.0.0.1:0", "-e", "setInterval(() => {}, 1000)"], stderr=subprocess.PIPE)
    procs.append(p)
    line = read_stderr_until(p, b"\n").decode()
    url = line.split("Debugger listening on ")[1].split()[0]
    with pytest.raises(InspectorError, match="refusing inspector"):
        inspect_node(p, url=url.replace("127.0.0.1", "10.0.0.1"))
    with pytest.raises(InspectorError, match="pass url="):
        inspect_node(p)  # it has an inspector on a port only its stderr told
    handle = inspect_node(p, url=url)
    assert handle.mode == "url" and (handle.usage or {}).get("heapUsed", 0) > 0
    assert len(inspector_sockets(p.pid)) == 1  # not ours to close


def test_public_names() -> None:
    assert memdiag.spawn_inspected_node is spawn_inspected_node
    assert memdiag.inspect_node is inspect_node
    assert memdiag.InspectorError is InspectorError
    assert issubclass(InspectedNodeProcess, memdiag.Popen)
