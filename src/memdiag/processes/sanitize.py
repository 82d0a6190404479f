"""Keep a child's Node.js inspector on loopback.

Whoever reaches a Node.js inspector can run code in that process. ``node`` accepts
``--inspect=0.0.0.0:9229`` in ``NODE_OPTIONS`` without complaint, and children inherit
``NODE_OPTIONS``, so one stray variable exposes every Node process a service starts.
memdiag rewrites any inspector address in ``NODE_OPTIONS`` that is not loopback to
``127.0.0.1`` (keeping the port) before a child it spawns sees it, and does the same to
node's own options on the command line of :func:`~memdiag.spawn_node` and
:func:`~memdiag.spawn_inspected_node`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .._logging import get_logger
from .._net import loopback_ip

__all__ = [
    "join_node_options",
    "safe_node_argv",
    "sanitize_env",
    "sanitize_node_argv",
    "sanitize_node_options",
    "split_node_options",
]

log = get_logger("memdiag.processes")

# Options that take [host:]port; the last two take their value as the next word too.
_INSPECT = ("--inspect", "--inspect-brk", "--inspect-wait", "--inspect-port", "--debug-port")
_VALUE_NEXT = ("--inspect-port", "--debug-port")


def split_node_options(value: str) -> list[str]:
    """Split ``NODE_OPTIONS`` the way node does: spaces separate, ``"..."`` quotes,
    and a backslash escapes the next character inside quotes."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    have = False
    i = 0
    while i < len(value):
        ch = value[i]
        if quoted and ch == "\\" and i + 1 < len(value):
            cur.append(value[i + 1])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
            have = True
        elif ch == " " and not quoted:
            if have:
                out.append("".join(cur))
            cur, have = [], False
        else:
            cur.append(ch)
            have = True
        i += 1
    if have:
        out.append("".join(cur))
    return out


def join_node_options(words: list[str]) -> str:
    """The inverse of :func:`split_node_options` (quotes only where needed)."""
    parts = []
    for w in words:
        if w and not any(c in w for c in ' "\\'):
            parts.append(w)
        else:
            parts.append('"' + w.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return " ".join(parts)


def _safe_address(value: str) -> tuple[str, bool]:
    """``value`` with a loopback host, and whether it changed."""
    if value.isdigit() or value == "":
        return value, False  # a bare port: node binds 127.0.0.1
    if value.startswith("[") and "]" in value:  # [v6]:port or [v6]
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    elif ":" in value:  # a bare IPv6 address, no port
        host, port = value, ""
    else:
        host, port = value, ""
    if loopback_ip(host) is not None:
        return value, False
    return (f"127.0.0.1:{port}" if port else "127.0.0.1"), True


def _sanitize_words(words: list[str]) -> tuple[list[str], list[str]]:
    """``words`` (node options) with every inspector address on loopback, and the changes."""
    changes: list[str] = []
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        name, eq, val = w.partition("=")
        if name in _INSPECT and eq:
            safe, changed = _safe_address(val)
            if changed:
                changes.append(f"{w} -> {name}={safe}")
                w = f"{name}={safe}"
            out.append(w)
        elif name in _VALUE_NEXT and not eq and i + 1 < len(words):
            safe, changed = _safe_address(words[i + 1])
            if changed:
                changes.append(f"{w} {words[i + 1]} -> {w} {safe}")
            out.extend([w, safe])
            i += 1
        else:
            out.append(w)
        i += 1
    return out, changes


def sanitize_node_argv(args: list[str]) -> tuple[list[str], list[str]]:
    """Rewrite non-loopback inspector addresses among node's own options in ``args``.

    ``args`` is what follows ``node`` on its command line: options up to the script (the
    first word not starting with ``-``, or after ``--``) are node's; the script's own
    arguments are left alone.

    Returns:
        ``(new_args, changes)``; ``changes`` describes each rewrite (empty: unchanged).

    >>> sanitize_node_argv(["--inspect=0.0.0.0:9229", "app.js", "--inspect=0.0.0.0"])[0]
    ['--inspect=127.0.0.1:9229', 'app.js', '--inspect=0.0.0.0']
    """
    end = 0
    while end < len(args) and args[end].startswith("-") and args[end] != "--":
        name = args[end].partition("=")[0]
        end += 2 if name in _VALUE_NEXT and "=" not in args[end] else 1
    end = min(end, len(args))
    options, changes = _sanitize_words(list(args[:end]))
    return [*options, *args[end:]], changes


def sanitize_node_options(value: str) -> tuple[str, list[str]]:
    """Rewrite non-loopback inspector addresses in a ``NODE_OPTIONS`` value.

    Args:
        value: the ``NODE_OPTIONS`` string.

    Returns:
        ``(new_value, changes)``; ``changes`` describes each rewrite (empty: unchanged).

    >>> sanitize_node_options("--max-old-space-size=512 --inspect=0.0.0.0:9229")
    ('--max-old-space-size=512 --inspect=127.0.0.1:9229', ['--inspect=0.0.0.0:9229 -> --inspect=127.0.0.1:9229'])
    """
    out, changes = _sanitize_words(split_node_options(value))
    if not changes:
        return value, []
    return join_node_options(out), changes


def safe_node_argv(args: list[str]) -> list[str]:
    """:func:`sanitize_node_argv`'s new arguments, each rewrite logged as a warning."""
    new, changes = sanitize_node_argv(list(args))
    for c in changes:
        log.warning("node command line: inspector moved to loopback (%s)", c)
    return new


def sanitize_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
    """A child environment whose ``NODE_OPTIONS`` keeps any inspector on loopback.

    Args:
        env: the environment the child will get; ``None`` means this process's.

    Returns:
        ``None`` when nothing needs changing and ``env`` was ``None`` (inherit as is);
        otherwise a new dict.
    """
    source = os.environ if env is None else env
    value = source.get("NODE_OPTIONS")
    if not value:
        return None if env is None else dict(env)
    safe, changes = sanitize_node_options(value)
    if not changes:
        return None if env is None else dict(env)
    for c in changes:
        log.warning("NODE_OPTIONS for a child process: inspector moved to loopback (%s)", c)
    new = dict(source)
    new["NODE_OPTIONS"] = safe
    return new
