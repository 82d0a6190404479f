"""A minimal Chrome DevTools Protocol client for Node.js inspectors on loopback.

Standard library only: an RFC 6455 WebSocket client (HTTP Upgrade with the
``Sec-WebSocket-Key``/``Sec-WebSocket-Accept`` check, masked client frames, text frames,
fragmentation, ping/pong, close), a tiny HTTP GET for ``/json/list``, and a CDP session
that sends a method and waits for the reply with the same id.

Whoever reaches a Node.js inspector can run code in that process, and whatever answers
on an address might not be node at all. So every connection here is to a loopback
literal (``127.0.0.0/8``, ``::1``; ``localhost`` is taken as ``127.0.0.1`` without asking
a resolver), every socket operation runs under one deadline for the whole call, and
messages are capped in size. Errors are :class:`InspectorError` with a message that says
what went wrong, never a hang.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import time
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from .._net import loopback_ip
from ..errors import MemdiagError

__all__ = [
    "CDPSession",
    "Deadline",
    "Frame",
    "InspectorError",
    "WebSocket",
    "decode_frame",
    "encode_frame",
    "http_get_json",
    "loopback_host",
    "split_url",
]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 16 * 1024 * 1024  # a memoryUsage() reply is ~100 bytes; this is generous
_MAX_HEADER = 16 * 1024


class InspectorError(MemdiagError):
    """An inspector could not be reached, refused, misbehaved or did not answer in time."""


# -- addresses ----------------------------------------------------------------------------


def loopback_host(host: str) -> str:
    """The loopback IP literal to connect to for ``host``.

    Args:
        host: ``localhost``, or an IPv4/IPv6 literal (brackets allowed).

    Raises:
        InspectorError: ``host`` is not loopback (names other than ``localhost`` are
            refused: a resolver could send them anywhere).
    """
    ip = loopback_ip(host)
    if ip is None:
        raise InspectorError(f"refusing inspector at {host!r}: not a loopback address (localhost, 127.0.0.1, ::1)")
    return ip


def split_url(url: str, schemes: tuple[str, ...] = ("ws",)) -> tuple[str, int, str]:
    """``(loopback IP, port, path)`` of a ``ws://`` (or ``schemes``) URL.

    Raises:
        InspectorError: another scheme, no port, or not loopback.
    """
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise InspectorError(f"not a {'/'.join(schemes)} URL: {url!r}")
    if parts.hostname is None or parts.port is None:
        raise InspectorError(f"URL without host and port: {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return loopback_host(parts.hostname), parts.port, path


class Deadline:
    """One time budget shared by several calls (a whole inspector session).

    Every function here that takes a ``timeout`` also takes a ``Deadline``: then it gets
    what is left of the budget, and a timeout names the budget's full length.
    """

    def __init__(self, timeout: float) -> None:
        self.end = time.monotonic() + timeout
        self.timeout = timeout

    def remaining(self) -> float:
        """Seconds left (0.0 once spent)."""
        return max(0.0, self.end - time.monotonic())


class _Deadline:
    """A budget and what is being waited for; each socket operation gets what is left."""

    def __init__(self, timeout: float | Deadline, what: str) -> None:
        budget = timeout if isinstance(timeout, Deadline) else Deadline(timeout)
        self.end = budget.end
        self.timeout = budget.timeout
        self.what = what

    def left(self) -> float:
        rest = self.end - time.monotonic()
        if rest <= 0:
            raise InspectorError(f"{self.what}: no answer within {self.timeout:g} s")
        return rest


def _connect(host: str, port: int, deadline: _Deadline) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(deadline.left())
        sock.connect((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except TimeoutError:
        sock.close()
        raise InspectorError(f"{deadline.what}: connect to {host}:{port} timed out") from None
    except OSError as exc:
        sock.close()
        raise InspectorError(f"{deadline.what}: cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _recv(sock: socket.socket, deadline: _Deadline) -> bytes:
    try:
        sock.settimeout(deadline.left())
        data = sock.recv(65536)
    except TimeoutError:
        raise InspectorError(f"{deadline.what}: no answer within {deadline.timeout:g} s") from None
    except OSError as exc:
        raise InspectorError(f"{deadline.what}: {exc.strerror or exc}") from None
    return data


def _send(sock: socket.socket, data: bytes, deadline: _Deadline) -> None:
    try:
        sock.settimeout(deadline.left())
        sock.sendall(data)
    except TimeoutError:
        raise InspectorError(f"{deadline.what}: send timed out after {deadline.timeout:g} s") from None
    except OSError as exc:
        raise InspectorError(f"{deadline.what}: {exc.strerror or exc}") from None


def _read_head(sock: socket.socket, deadline: _Deadline) -> tuple[str, dict[str, str], bytes]:
    """An HTTP response's status line, headers (lower-case names) and the bytes after them."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > _MAX_HEADER:
            raise InspectorError(f"{deadline.what}: response header over {_MAX_HEADER} bytes")
        data = _recv(sock, deadline)
        if not data:
            raise InspectorError(f"{deadline.what}: connection closed before a complete HTTP response")
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers, rest


def http_get_json(url: str, timeout: float | Deadline = 2.0, max_bytes: int = 1024 * 1024) -> Any:
    """GET a JSON document from a loopback HTTP server (the inspector's ``/json/list``).

    Raises:
        InspectorError: not loopback, no answer in ``timeout``, not 200, too big, not JSON.
    """
    host, port, path = split_url(url, ("http",))
    deadline = _Deadline(timeout, f"GET {url}")
    sock = _connect(host, port, deadline)
    try:
        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        _send(sock, f"GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n".encode(), deadline)
        status, headers, body = _read_head(sock, deadline)
        if status.split(" ")[1:2] != ["200"]:
            raise InspectorError(f"GET {url}: {status[:80]!r}")
        length = headers.get("content-length")
        want = int(length) if length and length.isdigit() else None
        if want is not None and want > max_bytes:
            raise InspectorError(f"GET {url}: body of {want} bytes is over {max_bytes}")
        while want is None or len(body) < want:
            data = _recv(sock, deadline)
            if not data:
                break
            body += data
            if len(body) > max_bytes:
                raise InspectorError(f"GET {url}: body over {max_bytes} bytes")
    finally:
        sock.close()
    try:
        return json.loads(body[:want] if want is not None else body)
    except ValueError:
        raise InspectorError(f"GET {url}: the answer is not JSON") from None


# -- frames -------------------------------------------------------------------------------


class Frame(NamedTuple):
    """One WebSocket frame: ``fin`` (last fragment), ``opcode`` and unmasked ``payload``."""

    fin: bool
    opcode: int
    payload: bytes


def _mask(data: bytes, key: bytes) -> bytes:
    # XOR as one big integer: thousands of times faster than a Python loop on large frames.
    n = len(data)
    if n == 0:
        return b""
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(keys, "little")).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, mask_key: bytes | None = None) -> bytes:
    """One frame as bytes. Client frames are masked (RFC 6455 5.3).

    Args:
        opcode: ``0x0`` continuation, ``0x1`` text, ``0x2`` binary, ``0x8`` close,
            ``0x9`` ping, ``0xA`` pong.
        payload: the unmasked payload.
        fin: this is the last (or only) fragment of a message.
        mask_key: 4 bytes to mask with (default: random); ``b""`` sends it unmasked,
            as a server does.
    """
    if mask_key is None:
        mask_key = os.urandom(4)
    if mask_key and len(mask_key) != 4:
        raise ValueError("mask_key must be 4 bytes")
    mask_bit = 0x80 if mask_key else 0
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if mask_key:
        return head + mask_key + _mask(payload, mask_key)
    return head + payload


def decode_frame(
    buf: bytes | bytearray, max_payload: int = MAX_MESSAGE, *, masked: bool | None = False
) -> tuple[Frame, int] | None:
    """Decode the frame at the start of ``buf``.

    Args:
        buf: received bytes.
        max_payload: a longer frame is refused before its payload is read.
        masked: ``False`` (a client reading a server: masked frames are an error),
            ``True`` (a server reading a client: unmasked frames are an error), ``None``.

    Returns:
        ``(frame, bytes used)``, or ``None`` while ``buf`` holds less than a whole frame.

    Raises:
        InspectorError: a protocol violation (reserved bits, bad control frame, masking,
            a length over ``max_payload``).
    """
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    if b0 & 0x70:
        raise InspectorError("WebSocket protocol error: reserved bits set (no extension was negotiated)")
    fin, opcode = bool(b0 & 0x80), b0 & 0x0F
    if opcode not in (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG):
        raise InspectorError(f"WebSocket protocol error: unknown opcode {opcode:#x}")
    is_masked, n = bool(b1 & 0x80), b1 & 0x7F
    if masked is not None and is_masked != masked:
        raise InspectorError(f"WebSocket protocol error: frame {'is' if is_masked else 'is not'} masked")
    pos = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n = struct.unpack_from("!H", buf, 2)[0]
        pos = 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n = struct.unpack_from("!Q", buf, 2)[0]
        if n >> 63:
            raise InspectorError("WebSocket protocol error: 64-bit length with the top bit set")
        pos = 10
    if opcode >= OP_CLOSE and (not fin or n > 125):
        raise InspectorError("WebSocket protocol error: fragmented or oversized control frame")
    if n > max_payload:
        raise InspectorError(f"WebSocket message over {max_payload} bytes")
    key = b""
    if is_masked:
        if len(buf) < pos + 4:
            return None
        key = bytes(buf[pos : pos + 4])
        pos += 4
    if len(buf) < pos + n:
        return None
    payload = bytes(buf[pos : pos + n])
    return Frame(fin, opcode, _mask(payload, key) if key else payload), pos + n


# -- the WebSocket ------------------------------------------------------------------------


class WebSocket:
    """A client WebSocket to a loopback server. Not thread-safe: one caller at a time.

    Use :meth:`connect`; every method takes a ``timeout`` for the whole operation.
    """

    def __init__(self, sock: socket.socket, url: str, buffered: bytes = b"", max_message: int = MAX_MESSAGE) -> None:
        self._sock = sock
        self.url = url
        self._buf = bytearray(buffered)
        self.max_message = max_message
        self.closed = False

    @classmethod
    def connect(cls, url: str, timeout: float | Deadline = 2.0, max_message: int = MAX_MESSAGE) -> WebSocket:
        """Open a WebSocket to ``ws://<loopback>:<port>/<path>``.

        Raises:
            InspectorError: not loopback, no answer in ``timeout``, not a WebSocket
                server, or a wrong ``Sec-WebSocket-Accept``.
        """
        host, port, path = split_url(url, ("ws",))
        deadline = _Deadline(timeout, f"WebSocket handshake with {url}")
        sock = _connect(host, port, deadline)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            _send(sock, request.encode(), deadline)
            status, headers, rest = _read_head(sock, deadline)
            if status.split(" ")[1:2] != ["101"]:
                raise InspectorError(f"{deadline.what}: not upgraded ({status[:80]!r})")
            accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
            if headers.get("upgrade", "").lower() != "websocket" or headers.get("sec-websocket-accept") != accept:
                raise InspectorError(f"{deadline.what}: bad Upgrade or Sec-WebSocket-Accept header")
        except BaseException:
            sock.close()
            raise
        return cls(sock, url, rest, max_message)

    def send_text(self, text: str, timeout: float | Deadline = 2.0) -> None:
        """Send one text message (a single masked frame)."""
        self._send_frame(OP_TEXT, text.encode(), _Deadline(timeout, f"send to {self.url}"))

    def _send_text(self, text: str, deadline: _Deadline) -> None:
        self._send_frame(OP_TEXT, text.encode(), deadline)

    def _send_frame(self, opcode: int, payload: bytes, deadline: _Deadline) -> None:
        if self.closed:
            raise InspectorError(f"WebSocket to {self.url} is closed")
        _send(self._sock, encode_frame(opcode, payload), deadline)

    def _next_frame(self, deadline: _Deadline) -> Frame:
        while True:
            got = decode_frame(self._buf, self.max_message)
            if got is not None:
                frame, used = got
                del self._buf[:used]
                return frame
            data = _recv(self._sock, deadline)
            if not data:
                self.closed = True
                raise InspectorError(f"WebSocket to {self.url}: connection closed by the server")
            self._buf += data

    def recv_text(self, timeout: float | Deadline = 2.0) -> str:
        """The next whole text message (fragments joined). Pings are answered on the way.

        Raises:
            InspectorError: timeout, closed by the server, a binary or oversized message,
                a protocol violation, or text that is not UTF-8.
        """
        return self._recv_text(_Deadline(timeout, f"reading from {self.url}"))

    def _recv_text(self, deadline: _Deadline) -> str:
        parts: list[bytes] = []
        size = 0
        first: int | None = None
        while True:
            frame = self._next_frame(deadline)
            if frame.opcode == OP_PING:
                self._send_frame(OP_PONG, frame.payload, deadline)
                continue
            if frame.opcode == OP_PONG:
                continue
            if frame.opcode == OP_CLOSE:
                self._answer_close(frame.payload, deadline)
                code = struct.unpack("!H", frame.payload[:2])[0] if len(frame.payload) >= 2 else None
                raise InspectorError(f"WebSocket to {self.url}: closed by the server (code {code})")
            if frame.opcode == OP_CONT:
                if first is None:
                    raise InspectorError("WebSocket protocol error: continuation without a first fragment")
            elif first is not None:
                raise InspectorError("WebSocket protocol error: new message inside a fragmented one")
            else:
                first = frame.opcode
            size += len(frame.payload)
            if size > self.max_message:
                raise InspectorError(f"WebSocket message over {self.max_message} bytes")
            parts.append(frame.payload)
            if frame.fin:
                if first != OP_TEXT:
                    raise InspectorError("WebSocket: a binary message where text was expected")
                try:
                    return b"".join(parts).decode("utf-8")
                except UnicodeDecodeError:
                    raise InspectorError("WebSocket: a text message that is not UTF-8") from None

    def _answer_close(self, payload: bytes, deadline: _Deadline) -> None:
        try:
            if not self.closed:
                _send(self._sock, encode_frame(OP_CLOSE, payload[:2]), deadline)
        except InspectorError:
            pass
        self.closed = True
        self._sock.close()

    def close(self, timeout: float | Deadline = 0.5) -> None:
        """Send a close frame (1000), wait briefly for the server's, close the socket. Never raises."""
        if self.closed:
            return
        deadline = _Deadline(timeout, f"closing {self.url}")
        try:
            _send(self._sock, encode_frame(OP_CLOSE, struct.pack("!H", 1000)), deadline)
            while self._next_frame(deadline).opcode != OP_CLOSE:
                pass
        except InspectorError:
            pass  # the server may drop the connection without its close frame; no matter
        self.closed = True
        self._sock.close()

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- CDP ----------------------------------------------------------------------------------


class CDPSession:
    """Chrome DevTools Protocol calls over one :class:`WebSocket`.

    Example::

        with CDPSession.connect("ws://127.0.0.1:9229/<id>") as cdp:
            cdp.call("Runtime.getHeapUsage")   # {"usedSize": ..., "totalSize": ...}
    """

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._next_id = 0

    @classmethod
    def connect(cls, url: str, timeout: float | Deadline = 2.0) -> CDPSession:
        return cls(WebSocket.connect(url, timeout))

    def call(
        self, method: str, params: dict[str, Any] | None = None, timeout: float | Deadline = 2.0
    ) -> dict[str, Any]:
        """Send ``method`` and return its ``result``; events that arrive meanwhile are dropped.

        Raises:
            InspectorError: the inspector answered with an error, or not within ``timeout``.
        """
        deadline = _Deadline(timeout, f"{method} on {self.ws.url}")
        self._next_id += 1
        mid = self._next_id
        self.ws._send_text(json.dumps({"id": mid, "method": method, "params": params or {}}), deadline)
        while True:
            try:
                msg = json.loads(self.ws._recv_text(deadline))
            except ValueError:
                raise InspectorError(f"{method}: the inspector sent something that is not JSON") from None
            if not isinstance(msg, dict) or msg.get("id") != mid:
                continue  # an event, or a late reply to an earlier call
            if "error" in msg:
                err = msg["error"] if isinstance(msg["error"], dict) else {"message": msg["error"]}
                raise InspectorError(f"{method}: {err.get('message', 'error')}")
            result = msg.get("result")
            return result if isinstance(result, dict) else {}

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> CDPSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
