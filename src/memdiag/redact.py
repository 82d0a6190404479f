"""Keep secrets out of reports: command lines are redacted, environments never read.

The rule (tested table-driven in ``tests/test_redact.py``). A value is masked when:

1. it follows a flag whose meaning is a password **in a known tool** (``mysql -pX`` and
   ``-p X``, ``redis-cli -a``, ``sshpass -p``, ``mongosh -p``, ``ldapsearch -w``,
   ``zip -P``, ``7z -p``, ``openssl -pass``, ``sqlcmd -P``, ``docker login -p``), or a
   ``user:password`` flag (``curl -u``/``--user``/``--proxy-user``, ``smbclient -U
   user%password``: only the password part);
2. its option or key name looks secret, in any tool: ``--password``, ``--pwd``,
   ``--api-key x``, ``DB_PASSWORD=x``, ``password=x`` inside a libpq/ODBC connection
   string, ``"token": "x"`` inside a JSON argument, ``X-Api-Key: x``,
   the whole value of an ``Authorization``/``Cookie`` header (``-H "Authorization: Token x"``);
3. it looks like a credential by itself: ``user:password@`` in a URL (also with ``@`` in
   the password), ``Bearer``/``Basic`` values, known token prefixes (``sk-``, ``ghp_``,
   ``github_pat_``, ``glpat-``, ``xox?-``, ``AKIA``, ``AIza``) and JWTs.

Everything else is left alone: ``-p 8080`` for ``python -m http.server`` or ``ssh`` is a
port, ``--user alice`` a name. The known tools' ``-p X`` is masked even where ``X`` is
really a database name (``mysql -p dbname`` prompts for the password): in doubt, secrecy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["redact_argv", "redact_text", "redact_url"]

MASK = "***"


class _Pattern:
    """A regular expression compiled on first use. Compiling this module's patterns costs
    ~18 M instructions (~5 ms), more than the rest of ``memdiag profile --pid N``; most
    arguments are let through by the cheap checks in :func:`redact_text` before a pattern
    is needed."""

    __slots__ = ("_args", "_compiled")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self._args = (pattern, flags)
        self._compiled: re.Pattern[str] | None = None

    def __getattr__(self, name: str) -> Any:  # search, sub, fullmatch
        if self._compiled is None:
            self._compiled = re.compile(*self._args)
        return getattr(self._compiled, name)


_SECRET_NAME = _Pattern(
    r"(pass(word|wd|phrase)?|pwd|secret|token|api[-_]?key|apikey|auth|credential|private[-_]?key|"
    r"access[-_]?key|session[-_]?key|client[-_]?secret|signature|cookie|bearer)|^--?pw$",
    re.IGNORECASE,
)
# user:password@ up to the last '@' of the authority (a password may hold '@').
_URL_CREDS = _Pattern(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<creds>[^/?#\s]*)@", re.IGNORECASE)
_QUERY_SECRET = _Pattern(
    r"(?P<key>[?&][^=&#\s]*(?:token|key|secret|pass(?:word)?|sig(?:nature)?|auth)[^=&#\s]*=)[^&#\s]+",
    re.IGNORECASE,
)
_BEARER = _Pattern(r"(?P<p>\b(bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_ENV_NAME = _Pattern(r"[A-Za-z_][A-Za-z0-9_.-]*")
# A key that ends in a secret word, then = or :, then its value (connection strings,
# key=value lists, header lines). The key must end with the word: "author=", "passenger=" stay.
_KEY_WORDS = (
    r"password|passwd|passphrase|pass|pwd|secret|token|api[-_]?key|apikey|access[-_]?key|private[-_]?key|"
    r"secret[-_]?key|credentials?|authorization|auth|signature|sig|cookie"
)
_KV_SECRET = _Pattern(
    rf"(?P<k>(?<![\w-])[\w.-]*?(?:{_KEY_WORDS}))(?P<sep>\s*[=:]\s*)(?P<v>\"[^\"]*\"|'[^']*'|[^\s;&,'\"{{}}\[\]]+)",
    re.IGNORECASE,
)
# A credential header given as an argument ("Authorization: Token x", "Cookie: a=1; b=2",
# curl -H, --header): the whole value is secret, whatever its scheme or length.
_AUTH_HEADER = _Pattern(
    r"(?P<k>(?<![\w-])[\w-]*(?:authorization|cookie)\s*[=:]\s*)(?P<v>(?!\*\*\*$)\S[^\r\n]*)", re.IGNORECASE
)
_JSON_SECRET = _Pattern(
    rf"(?P<k>\"[^\"]*?(?:{_KEY_WORDS})\"\s*:\s*)(?P<v>\"(?:[^\"\\]|\\.)*\"|[^,{{}}\[\]\s\"]+)",
    re.IGNORECASE,
)
_TOKEN_LIKE = _Pattern(
    r"\b(?:(?:sk|rk)-[A-Za-z0-9_-]{16,}|sk_(?:live|test)_[A-Za-z0-9]{16,}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}|eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)"
)

# Known tools: flag -> "value" (the whole value is the password) or the separator of
# "user<sep>password" (only the password part is masked).
_TOOL_GROUPS: tuple[tuple[tuple[str, ...], dict[str, str]], ...] = (
    (
        ("mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlshow", "mysqlcheck", "mysqlpump", "mysqlsh"),
        {"-p": "value", "--password": "value"},
    ),
    (("mariadb", "mariadb-dump", "mariadb-admin", "mycli"), {"-p": "value", "--password": "value"}),
    (("redis-cli", "valkey-cli", "keydb-cli"), {"-a": "value", "--pass": "value"}),
    (("sshpass",), {"-p": "value"}),
    (("mongo", "mongosh", "mongodump", "mongorestore", "mongoexport", "mongoimport", "mongostat"), {"-p": "value"}),
    (("ldapsearch", "ldapadd", "ldapmodify", "ldapdelete", "ldapwhoami", "ldappasswd"), {"-w": "value"}),
    (("curl",), {"-u": ":", "--user": ":", "-U": ":", "--proxy-user": ":"}),
    (("smbclient", "rpcclient", "smbmap"), {"-U": "%", "--user": "%"}),
    (("zip",), {"-P": "value", "--password": "value"}),
    (("7z", "7za", "7zz", "7zr", "rar", "unrar"), {"-p": "value"}),
    (("openssl",), {"-pass": "value", "-passin": "value", "-passout": "value", "-k": "value"}),
    (("sqlcmd",), {"-P": "value"}),
)
_TOOL_FLAGS: dict[str, dict[str, str]] = {tool: flags for tools, flags in _TOOL_GROUPS for tool in tools}
# Tools whose -p means a password only in one subcommand (docker run -p is a port).
_SUBCOMMAND_FLAGS = {
    tool: ("login", {"-p": "value", "--password": "value"}) for tool in ("docker", "podman", "nerdctl", "helm")
}
_WRAPPERS = {"env", "sudo", "doas", "nohup", "nice", "ionice", "chrt", "setsid", "stdbuf", "exec", "time", "timeout"}


# Each pattern runs only on text holding what any of its matches must hold (characters
# without case variants, or token prefixes, which are matched case-sensitively): a cheap
# test that never skips a match.
_TOKEN_PREFIXES = ("sk-", "rk-", "sk_", "gh", "github_pat_", "glpat-", "xox", "AKIA", "AIza", "eyJ")


def redact_url(text: str) -> str:
    """Mask ``user:password@`` in URLs and secret-looking query parameters."""
    if "@" in text and "://" in text:
        text = _URL_CREDS.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    if "=" in text and ("?" in text or "&" in text):
        text = _QUERY_SECRET.sub(lambda m: f"{m.group('key')}{MASK}", text)
    if len(text) >= 14 and text.split() != [text]:  # "basic", whitespace, 8 characters
        text = _BEARER.sub(lambda m: f"{m.group('p')}{MASK}", text)
    return text


def redact_text(text: str) -> str:
    """Mask what looks like a credential anywhere in one argument (rules 2 and 3)."""
    text = redact_url(text)
    if '"' in text and ":" in text:
        text = _JSON_SECRET.sub(lambda m: m.group("k") + ('"***"' if m.group("v").startswith('"') else MASK), text)
    if "=" in text or ":" in text:
        low = text.lower()
        if "authoriz" in low or "cookie" in low:
            text = _AUTH_HEADER.sub(lambda m: m.group("k") + MASK, text)
        text = _KV_SECRET.sub(lambda m: m.group("k") + m.group("sep") + MASK, text)
    if any(p in text for p in _TOKEN_PREFIXES):
        text = _TOKEN_LIKE.sub(MASK, text)
    return text


def _tool_flags(argv: Sequence[str]) -> dict[str, str]:
    """The password flags of the tool this command line runs (after wrappers, ``-m``)."""
    i = 0
    while i < len(argv):
        name = os.path.basename(argv[i])
        if name in _WRAPPERS:
            i += 1
            while i < len(argv) and (argv[i].startswith("-") or "=" in argv[i] or argv[i][:1].isdigit()):
                i += 1
            continue
        if name.startswith("python") and i + 2 < len(argv) and argv[i + 1] == "-m":
            name = argv[i + 2].rpartition(".")[2]
            i += 2
        flags = _TOOL_FLAGS.get(name)
        if flags is not None:
            return flags
        sub = _SUBCOMMAND_FLAGS.get(name)
        if sub is not None and sub[0] in argv[i + 1 :]:
            return sub[1]
        return {}
    return {}


def _mask_value(value: str, mode: str) -> str:
    if mode == "value":
        return MASK
    user, sep, _ = value.partition(mode)
    return f"{user}{sep}{MASK}" if sep else redact_text(value)


def _tool_arg(arg: str, flags: dict[str, str]) -> tuple[str | None, str | None]:
    """``(redacted arg, mode for the next arg)`` if ``arg`` is one of the tool's password
    flags (alone, ``-pVALUE`` or ``--flag=VALUE``); ``(None, None)`` otherwise."""
    if arg in flags:
        return arg, flags[arg]
    name, eq, value = arg.partition("=")
    if eq and name in flags:
        return f"{name}={_mask_value(value, flags[name])}", None
    if len(arg) > 2 and arg[0] == "-" and arg[1] != "-" and arg[:2] in flags:
        return arg[:2] + _mask_value(arg[2:], flags[arg[:2]]), None
    return None, None


def _generic_arg(arg: str) -> tuple[str, bool]:
    """``(redacted arg, mask the next one)`` by the secret-name and credential rules."""
    if arg.startswith("-") and "=" in arg:
        name, _, _value = arg.partition("=")
        return (f"{name}={MASK}" if _SECRET_NAME.search(name) else redact_text(arg)), False
    if arg.startswith("-") and _SECRET_NAME.search(arg) and len(arg) < 64:
        return arg, True
    if "=" in arg and not arg.startswith("-"):
        name = arg.partition("=")[0]
        if _ENV_NAME.fullmatch(name) and _SECRET_NAME.search(name):
            return f"{name}={MASK}", False
    return redact_text(arg), False


def redact_argv(argv: Sequence[str], max_len: int = 4096) -> list[str]:
    """A copy of ``argv`` with secret values masked (the module's rule); the total length
    is bounded by ``max_len``."""
    out: list[str] = []
    flags = _tool_flags(argv)
    next_mode: str | None = None
    total = 0
    for arg in argv:
        if next_mode is not None:
            out.append(_mask_value(arg, next_mode))
            next_mode = None
        else:
            done, next_mode = _tool_arg(arg, flags) if flags else (None, None)
            if done is None:
                done, mask_next = _generic_arg(arg)
                next_mode = "value" if mask_next else None
            out.append(done)
        total += len(out[-1])
        if total > max_len:
            out[-1] = out[-1][: max(0, len(out[-1]) - (total - max_len))] + "…"
            break
    return out
