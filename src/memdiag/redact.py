"""Keep secrets out of reports: command lines are redacted, environments never read."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["redact_argv", "redact_url"]

_SECRET_NAME = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[-_]?key|apikey|auth|credential|private[-_]?key|"
    r"access[-_]?key|session[-_]?key|client[-_]?secret|signature|cookie|bearer)",
    re.IGNORECASE,
)
_URL_CREDS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<creds>[^/@\s:]*(:[^/@\s]*)?)@", re.IGNORECASE)
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&][^=&#\s]*(?:token|key|secret|pass(?:word)?|sig(?:nature)?|auth)[^=&#\s]*=)[^&#\s]+",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<p>\b(bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
MASK = "***"


def redact_url(text: str) -> str:
    """Mask ``user:password@`` in URLs and secret-looking query parameters."""
    text = _URL_CREDS.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m.group('key')}{MASK}", text)
    return _BEARER.sub(lambda m: f"{m.group('p')}{MASK}", text)


def redact_argv(argv: Sequence[str], max_len: int = 4096) -> list[str]:
    """A copy of ``argv`` with secret values masked.

    Masks the value of ``--password=x``/``--api-key x``/``-token x`` style options,
    ``NAME=value`` pairs whose name looks secret (``DB_PASSWORD=x``), credentials in URLs,
    and ``Bearer``/``Basic`` header values. The total length is bounded by ``max_len``.
    """
    out: list[str] = []
    mask_next = False
    total = 0
    for arg in argv:
        if mask_next:
            out.append(MASK)
            mask_next = False
        elif arg.startswith("-") and "=" in arg:
            name, _, _value = arg.partition("=")
            out.append(f"{name}={MASK}" if _SECRET_NAME.search(name) else redact_url(arg))
        elif arg.startswith("-") and _SECRET_NAME.search(arg) and len(arg) < 64:
            out.append(arg)
            mask_next = True
        elif "=" in arg and not arg.startswith("-"):
            name = arg.partition("=")[0]
            if _ENV_NAME.fullmatch(name) and _SECRET_NAME.search(name):
                out.append(f"{name}={MASK}")
            else:
                out.append(redact_url(arg))
        else:
            out.append(redact_url(arg))
        total += len(out[-1])
        if total > max_len:
            out[-1] = out[-1][: max(0, len(out[-1]) - (total - max_len))] + "…"
            break
    return out
