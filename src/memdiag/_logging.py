"""memdiag's logging: only through ``logging``, under the ``memdiag`` logger.

memdiag runs inside other people's services. Its records go to the handlers the
application configured (they propagate to the root logger as usual); with none configured
they go nowhere, instead of to the application's stderr through ``logging.lastResort``.

Messages carry text from outside (process names and command lines from ``/proc``, paths,
exception texts). On the way up, every ``memdiag.*`` record is rendered once and its
control characters, newlines and undecodable bytes (lone surrogates) are escaped, so a
record is always one printable line: no terminal escape sequences, no forged log lines,
no ``UnicodeEncodeError`` in the application's handler.

Every memdiag module gets its logger from :func:`get_logger`, which installs this first:
so ``import memdiag`` need not import ``logging`` (the command line's start does not pay
for it) and still no memdiag record is emitted before it is installed. ``import memdiag``
installs it at once when the application has imported ``logging`` already.
"""

from __future__ import annotations

import logging
import re

__all__ = ["get_logger", "install", "safe_text"]

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")


def safe_text(text: str) -> str:
    """``text`` with control characters and lone surrogates escaped (``\\x1b``, ``\\n``)."""

    def esc(m: re.Match[str]) -> str:
        ch = m.group()
        return "\\n" if ch == "\n" else f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"

    return _UNSAFE.sub(esc, text)


class _Sanitizer(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the application's handler report it
            return True
        clean = safe_text(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True


class _MemdiagHandler(logging.NullHandler):
    """Emits nothing; it only cleans each record passing ``memdiag`` on its way to the root."""

    def handle(self, record: logging.LogRecord) -> bool:
        return bool(self.filter(record))


def install() -> None:
    """Add the handler to the ``memdiag`` logger (idempotent)."""
    logger = logging.getLogger("memdiag")
    if not any(isinstance(h, _MemdiagHandler) for h in logger.handlers):
        h = _MemdiagHandler()
        h.addFilter(_Sanitizer())
        logger.addHandler(h)


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` for a memdiag module, with the policy installed first."""
    install()
    return logging.getLogger(name)
