"""The common request read and answered without h11: a strict subset, byte for byte.

Nearly every request a polling client sends is the same small ``GET`` (or ``HEAD``) with
no body: a request line, ``Host``, ``Authorization``, a few more headers. Read by h11's
state machine, a cached answer cost ~65 us of CPU per request in the connection code on
this machine; read here, ~7.5 us (``benchmarks/bench_http.py --cpu``). :func:`parse`
reads such a head in one regular expression and a loop over its lines (a head seen lately
is not read again), and :func:`encode` writes the answer as one ``bytes`` (status line,
headers, body), built once per second for an answer shared by every client (the status
and profile of the current sample).

Only what h11 would read the same way is taken here; everything else returns ``None`` and
goes to h11 untouched (the connection hands it the bytes), so h11's checks and errors
stay the only ones. The subset:

- ``GET`` or ``HEAD``, an origin-form target (``/`` then visible ASCII, no ``?`` or
  ``#``), ``HTTP/1.1``, every line ended by CRLF (no bare CR or LF anywhere);
- header lines ``token ":" OWS value OWS``, the value visible ASCII with inner spaces
  or tabs (no obs-text, no control characters, no folded lines), at most
  :data:`MAX_FAST_HEADERS` of them and :data:`MAX_FAST_HEAD` bytes in all;
- exactly one ``Host``; no ``Content-Length``, ``Transfer-Encoding``, ``Expect`` or
  ``Upgrade``; ``Connection`` absent or exactly ``keep-alive`` (so the connection stays
  open, as h11 would keep it).

h11 accepts a superset of this (bare LF line ends, obs-text, folded lines, other methods,
queries, bodies) and reads each request of the subset to the same method, target and
headers (``tests/test_http_fastpath.py`` checks both readings side by side).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from email.utils import formatdate
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import Response

__all__ = ["MAX_FAST_HEAD", "MAX_FAST_HEADERS", "Head", "HttpDate", "encode", "find_end", "parse"]

MAX_FAST_HEAD = 8 * 1024  # larger heads go to h11 (its limit is wire.MAX_HEAD)
MAX_FAST_HEADERS = 32  # more header lines go to h11 (its limit is wire.MAX_HEADERS)

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_VALUE = rb"(?:[!-~]+(?:[ \t]+[!-~]+)*)?"
# The whole head at once: request line, header lines, the blank line (nothing else).
_HEAD_RE = re.compile(
    rb"(GET|HEAD) (/[!-~]*) HTTP/1\.1\r\n((?:" + _TOKEN + rb":[ \t]*" + _VALUE + rb"[ \t]*\r\n)*)\r\n"
)
_FIELD_RE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _VALUE + rb")[ \t]*\r\n")
_BLANK_RE = re.compile(rb"\n\r?\n")  # where h11 ends a head (it also takes bare LF)
_REFUSED = frozenset(("content-length", "transfer-encoding", "expect", "upgrade"))

# (method, path, headers with lower-case names, repeated ones joined by ", ")
Head = tuple[str, str, Mapping[str, str]]


def find_end(buf: bytes | bytearray, start: int = 0) -> tuple[int, bool]:
    """``(end, strict)``: where h11 would end the head in ``buf`` (-1: not yet), and
    whether it ends with CRLF CRLF (else h11 reads it: a bare LF)."""
    m = _BLANK_RE.search(buf, start)
    if m is None:
        return -1, True
    end = m.end()
    return end, m.end() - m.start() == 3 and m.start() > 0 and buf[m.start() - 1] == 13


_MEMO: dict[bytes, Head | None] = {}
_MAX_MEMO = 64  # heads remembered (a polling client sends the same head every time)
_MAX_MEMO_HEAD = 1024  # bytes: larger heads are parsed every time (so at most 64 KiB held)


def parse(head: bytes) -> Head | None:
    """The request in ``head`` (ending with its blank line) if it is in the subset, else ``None``.

    A pure function of the bytes, so a head seen lately is not parsed again: up to
    ``_MAX_MEMO`` heads of up to ``_MAX_MEMO_HEAD`` bytes are remembered with their
    reading (the headers as a read-only mapping, shared by the requests that sent them).
    A client sending a new head every time only empties the memo now and then.
    """
    hit = _MEMO.get(head, _MISS)
    if hit is not _MISS:
        return hit  # type: ignore[return-value]
    parsed = _parse(head)
    if len(head) <= _MAX_MEMO_HEAD:
        if len(_MEMO) >= _MAX_MEMO:
            _MEMO.clear()
        _MEMO[head] = parsed
    return parsed


_MISS = object()


def _parse(head: bytes) -> Head | None:
    if len(head) > MAX_FAST_HEAD:
        return None
    m = _HEAD_RE.fullmatch(head)
    if m is None:
        return None
    target = m.group(2)
    if b"?" in target or b"#" in target:
        return None
    headers: dict[str, str] = {}
    hosts = 0
    fields = _FIELD_RE.findall(m.group(3))
    if len(fields) > MAX_FAST_HEADERS:
        return None
    for raw_name, raw_value in fields:
        name = raw_name.decode("ascii").lower()
        value = raw_value.decode("ascii")
        if name in _REFUSED:
            return None
        if name == "host":
            hosts += 1
        elif name == "connection" and value.lower() != "keep-alive":
            return None
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    if hosts != 1:
        return None
    return m.group(1).decode("ascii"), target.decode("ascii"), MappingProxyType(headers)


class HttpDate:
    """The ``Date`` header value, formatted once per second."""

    second = -1
    text = b""

    @classmethod
    def now(cls) -> bytes:
        t = int(time.time())
        if t != cls.second:
            cls.second, cls.text = t, formatdate(t, usegmt=True).encode()
        return cls.text


# A header name or value we write: a token, and visible ASCII with inner spaces.
_OUT_NAME = re.compile(_TOKEN.decode())
_OUT_VALUE = re.compile(_VALUE.decode())

_SHARED: dict[tuple[int, bool], tuple[Response, bytes, bytes]] = {}
_MAX_SHARED = 8


def encode(resp: Response, reasons: dict[int, bytes], *, head_only: bool, shared: bool) -> bytes:
    """The whole answer as the bytes to send: status line, headers, then the body.

    The headers are those h11 writes for a keep-alive answer (``resp.headers``, ``Date``,
    ``Server``, ``Content-Length`` unless 204). A ``shared`` answer (the same
    :class:`Response` object goes to every client until the next sample) is encoded once
    per second, not once per request; at most ``_MAX_SHARED`` are kept, each holding its
    answer so that an ``id`` is not reused while it is remembered.

    Raises:
        ValueError: a header that is not a token with a value of visible ASCII (h11
            refuses those too; the API never makes one).
    """
    date = HttpDate.now()
    key = (id(resp), head_only)
    hit = _SHARED.get(key) if shared else None
    if hit is not None and hit[0] is resp and hit[1] is date:
        return hit[2]
    lines = [b"HTTP/1.1 %d %s\r\n" % (resp.status, reasons.get(resp.status, b"Unknown"))]
    for name, value in resp.headers:
        if not (_OUT_NAME.fullmatch(name) and _OUT_VALUE.fullmatch(value)):
            raise ValueError(f"a response header that cannot be sent: {name!r}")
        lines.append(b"%s: %s\r\n" % (name.encode("ascii"), value.encode("ascii")))
    lines.append(b"Date: %s\r\nServer: memdiag\r\n" % date)
    if resp.status != 204:
        lines.append(b"Content-Length: %d\r\n" % len(resp.body))
    lines.append(b"\r\n")
    if not head_only:
        lines.append(resp.body)
    out = b"".join(lines)
    if shared:
        if len(_SHARED) >= _MAX_SHARED:
            _SHARED.clear()
        _SHARED[key] = (resp, date, out)
    return out
