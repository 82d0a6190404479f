"""A tiny JSON-over-HTTP client for a service's memdiag API.

HTTP/1.1 over a plain socket: the service's control channel (a Unix socket, checked by
:func:`memdiag.control.client.connect_unix`), TCP, or TLS for an ``https://`` URL. Not
``http.client``: it imports ``email`` and ``ssl`` at start-up, about 20 ms of every
command (docs/benchmarks.md); and not ``urllib.request``, which would route a loopback
API through any ``http_proxy`` in the environment. One request per connection
(``Connection: close``); timeouts are short, answers bounded, and every failure becomes an
:class:`ApiError` whose message says what happened in one line.

The plain exchange, the one memdiag's servers always have (a request of printable ASCII
and an ``HTTP/1.1`` answer framed by one ``Content-Length``), is written and read here
(:func:`plain_request`, :func:`plain_answer`); anything else (a chunked or informational
answer, a malformed one, a header h11 would refuse to send) goes to h11, the sans-IO
parser the API server uses too, with every byte read so far: its verdicts and errors are
the same as if it had read the whole answer. h11 (with dataclasses) is about 10 ms of a
command's start, more than the exchange itself.
"""

from __future__ import annotations

import json

from .._record import tuple_record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    import socket
    from typing import Any

__all__ = ["ApiClient", "ApiError", "ApiResponse", "plain_answer", "plain_request"]

DEFAULT_TIMEOUT = 5.0
MAX_ANSWER_BYTES = 64 << 20  # a diagnostics report is ~100 KiB; anything near this is not our API
_MAX_HEAD = 64 << 10  # an answer's head longer than this goes to h11 (which bounds it too)
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_CTL = frozenset(range(32)) - {9} | {127}  # control characters but HTAB


class ApiError(Exception):
    """A request failed.

    Attributes:
        status: the HTTP status, or ``None`` when no answer came (refused, timeout).
        body: the decoded JSON body of an error answer, if any.
        unreachable: True when the service did not answer at all.
    """

    def __init__(self, message: str, *, status: int | None = None, body: Any = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.unreachable = unreachable


@tuple_record
class ApiResponse:
    """A decoded answer: status, headers (lower-case names) and the JSON body.

    A NamedTuple rather than a dataclass: building a dataclass class costs about 1 ms at
    import, and every command that talks to a service imports this module."""

    status: int
    headers: dict[str, str]
    body: Any
    text: str


class ApiClient:
    """Talks to one service's API.

    Args:
        url: the API's base URL as the service announced it (``http://127.0.0.1:PORT``),
            or ``unix:<path>`` for a service's local control channel (no token needed:
            the service checks who connects).
        token: the bearer token for acting endpoints (read from the 0600 token file).
        timeout: seconds to wait for a connection and for each read.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path: str | None = None
        if url.startswith("unix:"):  # a control channel: the peer check authenticates, no token sent
            self.socket_path = url[len("unix:") :]
            self.url = url
            self._prefix = ""
            self._host_header = "localhost"
            self.token = None
            self.timeout = timeout
            return
        from urllib.parse import urlsplit

        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiError(f"not an http:// URL: {url!r}")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._host_header = parts.netloc.rpartition("@")[2]
        self._prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> ApiResponse:
        """Send one request; returns the answer for 2xx and 429, raises :class:`ApiError` otherwise.

        A 429 (cleanup cooldown) is returned, not raised: it is an answer the CLI reports.
        """
        timeout = timeout or self.timeout
        headers = [
            ("Host", self._host_header),
            ("Accept", "application/json"),
            ("User-Agent", "memdiag-cli"),
            ("Connection", "close"),
        ]
        if self.token and self.socket_path is None:
            headers.append(("Authorization", f"Bearer {self.token}"))
        payload = b""
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        where = f"{self.url}{path}"
        try:
            status, reason, resp_headers, raw = self._exchange(method, self._prefix + path, headers, payload, timeout)
        except TimeoutError:
            raise ApiError(f"{where} did not answer within {timeout:g}s", unreachable=True) from None
        except (ConnectionRefusedError, FileNotFoundError):
            raise ApiError(
                f"{where}: connection refused (the service is gone or its API stopped)", unreachable=True
            ) from None
        except OSError as exc:
            raise ApiError(f"{where}: {type(exc).__name__}: {exc}", unreachable=True) from None
        text = raw.decode("utf-8", "replace")
        try:
            data = json.loads(text) if text.strip() else None
        except ValueError:
            data = None
        if 200 <= status < 300 or status == 429:
            if data is None and text.strip():
                raise ApiError(f"{where}: answer is not JSON", status=status)
            return ApiResponse(status, resp_headers, data, text)
        message = data.get("error") if isinstance(data, dict) else None
        detail = data.get("detail") if isinstance(data, dict) else None
        if message and isinstance(detail, str) and detail:
            message = f"{message}: {detail}"
        if status == 401:
            message = "not authorised (wrong or missing token; pass --token or use the runtime entry)"
        raise ApiError(
            f"{method} {where}: HTTP {status}: {message or text.strip()[:200] or reason}", status=status, body=data
        )

    def _connect(self, timeout: float) -> socket.socket:
        if self.socket_path is not None:
            from ..control.client import connect_unix

            return connect_unix(self.socket_path, timeout, raw=True)  # no `socket` module: a faster start
        import socket

        sock = socket.create_connection((self._host, self._port), timeout=timeout)
        if self._scheme == "https":
            import ssl

            try:
                return ssl.create_default_context().wrap_socket(sock, server_hostname=self._host)
            except BaseException:
                sock.close()
                raise
        return sock

    def _exchange(
        self, method: str, target: str, headers: list[tuple[str, str]], payload: bytes, timeout: float
    ) -> tuple[int, str, dict[str, str], bytes]:
        """One request and its whole answer: ``(status, reason, headers, body)``.

        Raises:
            OSError: no connection, a timeout, or an answer that is not HTTP (h11's
                ``RemoteProtocolError``, an empty or oversized answer: ``ConnectionError``).
        """
        request = plain_request(method, target, headers, payload)
        sock = self._connect(timeout)
        try:
            if request is None:  # h11 checks (and refuses) what is not plain
                return _h11_exchange(sock, method, target, headers, payload, b"", sent=False)
            sock.sendall(request)
            buf = bytearray()
            while True:
                answer = plain_answer(buf)
                if answer is not None:
                    return answer
                end = buf.find(b"\r\n\r\n")
                if (end < 0 and len(buf) > _MAX_HEAD) or (end >= 0 and _plain_length(buf, end) is None):
                    break  # not plain: h11 reads it from here
                data = sock.recv(65536)
                if not data:
                    break  # closed early: h11 says how (cut short, not HTTP, nothing)
                buf += data
            return _h11_exchange(sock, method, target, headers, payload, bytes(buf), sent=True)
        finally:
            sock.close()

    def get(self, path: str, **kw: Any) -> ApiResponse:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> ApiResponse:
        return self.request("POST", path, body if body is not None else {}, **kw)


def plain_request(method: str, target: str, headers: list[tuple[str, str]], payload: bytes) -> bytes | None:
    """The request's bytes as h11 writes them, or ``None`` if anything in it is not plain
    printable ASCII (h11 then checks it, and refuses what HTTP does not allow)."""
    parts = [method, target, *(n for n, _ in headers), *(v for _, v in headers)]
    if not all(p and p.isascii() and p.isprintable() and p == p.strip() for p in parts):
        return None
    if not all(set(n.encode()) <= _TOKEN for n, _ in headers) or " " in method + target:
        return None
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    return head.encode("ascii") + payload


def _plain_length(buf: bytes | bytearray, end: int) -> int | None:
    """The Content-Length of a plain answer whose head ends at ``end``, else ``None``."""
    lines = bytes(buf[:end]).split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version != b"HTTP/1.1" or len(code) != 3 or not code.isdigit() or not 200 <= int(code) < 600:
        return None
    if int(code) in (204, 304) or _CTL.intersection(reason):
        return None
    length = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or not _TOKEN.issuperset(name) or _CTL.intersection(value):
            return None  # a folded or malformed line
        key = name.lower()
        if key == b"transfer-encoding" or (key == b"content-length" and length is not None):
            return None
        if key == b"content-length":
            value = value.strip(b" \t")
            if not value.isdigit() or int(value) > MAX_ANSWER_BYTES:
                return None
            length = int(value)
    return length


def plain_answer(buf: bytes | bytearray) -> tuple[int, str, dict[str, str], bytes] | None:
    """``(status, reason, headers, body)`` once ``buf`` holds a whole plain answer (as h11
    reads it: names lower-case, values stripped, the last of a repeated name); ``None``
    while it does not, or if the answer is not plain."""
    end = buf.find(b"\r\n\r\n")
    length = _plain_length(buf, end) if end >= 0 else None
    if length is None or len(buf) < end + 4 + length:
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    _, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.decode("latin-1").lower()] = value.strip(b" \t").decode("latin-1")
    return int(code), reason.decode("latin-1"), fields, bytes(buf[end + 4 : end + 4 + length])


def _h11_exchange(
    sock: socket.socket,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    payload: bytes,
    received: bytes,
    *,
    sent: bool,
) -> tuple[int, str, dict[str, str], bytes]:
    """The exchange through h11: the request sent by h11 (``sent=False``) or already sent
    as h11 would have, and the answer from the ``received`` bytes on."""
    import h11

    conn = h11.Connection(h11.CLIENT)
    out = conn.send(h11.Request(method=method, target=target, headers=headers))
    if payload:
        out += conn.send(h11.Data(data=payload))
    out += conn.send(h11.EndOfMessage())
    if not sent:
        sock.sendall(out)
    conn.receive_data(received)
    response: h11.Response | None = None
    body = bytearray()
    total = len(received)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)  # b"": the server closed
                total += len(data)
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_ANSWER_BYTES:
                    raise ConnectionError(f"answer larger than {MAX_ANSWER_BYTES >> 20} MiB")
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
    except h11.RemoteProtocolError as exc:
        why = f"not an HTTP answer ({exc})" if total else "closed without an answer"
        raise ConnectionError(why) from None
    if response is None:
        raise ConnectionError("closed without an answer")
    fields = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
    return response.status_code, response.reason.decode("latin-1"), fields, bytes(body)
