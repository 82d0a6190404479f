"""A tiny JSON-over-HTTP client for a service's memdiag API (stdlib only).

``http.client`` is used directly rather than ``urllib.request``: the API listens on
loopback, and ``urllib.request`` would route it through any ``http_proxy`` in the
environment. Timeouts are short, and every failure becomes an :class:`ApiError` whose
message says what happened in one line.
"""

from __future__ import annotations

import http.client
import json
from typing import Any, NamedTuple
from urllib.parse import urlsplit

__all__ = ["ApiClient", "ApiError", "ApiResponse"]

DEFAULT_TIMEOUT = 5.0


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
            self.token = None
            self.timeout = timeout
            return
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiError(f"not an http:// URL: {url!r}")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> ApiResponse:
        """Send one request; returns the answer for 2xx and 429, raises :class:`ApiError` otherwise.

        A 429 (cleanup cooldown) is returned, not raised: it is an answer the CLI reports.
        """
        conn: http.client.HTTPConnection
        if self.socket_path is not None:
            from ..control.client import UnixHTTPConnection

            conn = UnixHTTPConnection(self.socket_path, timeout=timeout or self.timeout)
        else:
            conn_cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            conn = conn_cls(self._host, self._port, timeout=timeout or self.timeout)
        headers = {"Accept": "application/json", "User-Agent": "memdiag-cli"}
        if self.token and self.socket_path is None:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        where = f"{self.url}{path}"
        try:
            conn.request(method, self._prefix + path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
            resp_headers = {k.lower(): v for k, v in resp.getheaders()}
        except TimeoutError:
            raise ApiError(f"{where} did not answer within {timeout or self.timeout:g}s", unreachable=True) from None
        except (ConnectionRefusedError, FileNotFoundError):
            raise ApiError(
                f"{where}: connection refused (the service is gone or its API stopped)", unreachable=True
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(f"{where}: {type(exc).__name__}: {exc}", unreachable=True) from None
        finally:
            conn.close()
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
            f"{method} {where}: HTTP {status}: {message or text.strip()[:200] or resp.reason}", status=status, body=data
        )

    def get(self, path: str, **kw: Any) -> ApiResponse:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> ApiResponse:
        return self.request("POST", path, body if body is not None else {}, **kw)
