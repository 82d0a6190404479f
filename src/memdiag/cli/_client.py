"""A tiny JSON-over-HTTP client for a service's memdiag API.

HTTP/1.1 is spoken by h11 (the sans-IO parser the API server uses too) over a plain
socket: the service's control channel (a Unix socket, checked by
:func:`memdiag.control.client.connect_unix`), TCP, or TLS for an ``https://`` URL. Not
``http.client``: it imports ``email`` and ``ssl`` at start-up, about 20 ms of every
command (docs/benchmarks.md); and not ``urllib.request``, which would route a loopback
API through any ``http_proxy`` in the environment. One request per connection
(``Connection: close``); timeouts are short, answers bounded, and every failure becomes an
:class:`ApiError` whose message says what happened in one line.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import socket

__all__ = ["ApiClient", "ApiError", "ApiResponse"]

DEFAULT_TIMEOUT = 5.0
MAX_ANSWER_BYTES = 64 << 20  # a diagnostics report is ~100 KiB; anything near this is not our API


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


class ApiResponse(NamedTuple):
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

            return connect_unix(self.socket_path, timeout)
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
        import h11

        conn = h11.Connection(h11.CLIENT)
        with self._connect(timeout) as sock:
            out = conn.send(h11.Request(method=method, target=target, headers=headers))
            if payload:
                out += conn.send(h11.Data(data=payload))
            sock.sendall(out + conn.send(h11.EndOfMessage()))
            response: h11.Response | None = None
            body = bytearray()
            received = 0
            try:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = sock.recv(65536)  # b"": the server closed
                        received += len(data)
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
                why = f"not an HTTP answer ({exc})" if received else "closed without an answer"
                raise ConnectionError(why) from None
        if response is None:
            raise ConnectionError("closed without an answer")
        fields = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
        return response.status_code, response.reason.decode("latin-1"), fields, bytes(body)

    def get(self, path: str, **kw: Any) -> ApiResponse:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> ApiResponse:
        return self.request("POST", path, body if body is not None else {}, **kw)
