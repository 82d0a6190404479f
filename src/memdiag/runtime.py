"""Where running services announce themselves, so the CLI can find them.

A service whose API server is up writes ``<runtime dir>/<pid>.json`` (its PID, process
start time, API URL, memdiag version) and the API token in ``<pid>.token`` with mode
0600, in a per-user directory with mode 0700: ``$MEMDIAG_RUNTIME_DIR``, else
``$XDG_RUNTIME_DIR/memdiag``, else ``<tmp>/memdiag-<uid>``. Entries of dead processes,
or of a reused PID whose start time differs, are ignored and removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat

from ._files import write_atomic
from ._record import tuple_record
from .probes.process import read_stat

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

__all__ = [
    "RuntimeDirError",
    "ServiceEntry",
    "ensure_private_dir",
    "list_services",
    "register_service",
    "runtime_dir",
    "unregister_service",
    "update_service",
]


def runtime_dir(create: bool = False) -> Path:
    """The per-user directory service entries live in (created private when ``create``).

    Raises:
        RuntimeDirError: with ``create``, when the directory is a symlink, belongs to
            another user, or is open to group or others (nothing is changed then).
    """
    from pathlib import Path

    d = Path(_runtime_path())
    if create:
        ensure_private_dir(d)
    return d


def _runtime_path() -> str:
    """:func:`runtime_dir` as a string (listing the services needs no ``pathlib``)."""
    explicit = os.environ.get("MEMDIAG_RUNTIME_DIR")
    if explicit:
        return explicit
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "memdiag")
    import tempfile  # only here: the CLI's start-up does not pay for it

    return os.path.join(tempfile.gettempdir(), f"memdiag-{os.getuid()}")


class RuntimeDirError(PermissionError):
    """The runtime directory is not safe to use (and memdiag changed nothing)."""


def ensure_private_dir(d: Path) -> None:
    """Make ``d`` a directory only this user can enter, or refuse and say why.

    ``mkdir(d, 0o700)`` creates it (it never follows a symlink planted at ``d``); then the
    directory is opened with ``O_NOFOLLOW | O_DIRECTORY`` and its owner and mode are checked
    on that descriptor, so what is checked is what is there, not what a path resolves to
    later. Nothing is ever chmod-ed: a directory that is not private is refused, because
    others may have put files in it while it was open.
    """
    d.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # exists (or is a symlink): checked below
        os.mkdir(d, 0o700)
    hint = "remove it or set MEMDIAG_RUNTIME_DIR to a private directory"
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(d):
            raise RuntimeDirError(f"memdiag runtime directory {d} is a symlink; {hint}") from None
        raise RuntimeDirError(f"memdiag runtime directory {d} cannot be opened ({exc.strerror}); {hint}") from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if st.st_uid != os.geteuid():
        raise RuntimeDirError(
            f"memdiag runtime directory {d} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()}); {hint}"
        )
    if st.st_mode & 0o077:
        raise RuntimeDirError(
            f"memdiag runtime directory {d} has mode {stat.S_IMODE(st.st_mode):04o}; it must be private "
            f"(0700, no group or other access); {hint}"
        )


def _start_ticks(pid: int) -> int | None:
    st = read_stat(pid)
    return None if st is None else st.start_ticks


@tuple_record
class ServiceEntry:
    """A running service that announced itself.

    ``url`` is its HTTP API (``None`` without one); ``socket`` its local control channel
    (``None`` if that is not running); ``server`` says which pre-fork server it belongs to
    (``{"pid", "start_ticks", "role": "master" | "worker", "slot"}``) or is ``None``.
    (A NamedTuple, not a dataclass: every CLI command reads the entries at start-up, and
    ``dataclasses`` with ``inspect`` costs several milliseconds to import.)
    """

    pid: int
    start_ticks: int
    url: str | None
    version: str
    name: str
    started_at: float
    token_file: str | None
    socket: str | None = None
    server: dict[str, Any] | None = None

    def token(self) -> str | None:
        """The API token, read from its 0600 file (``None`` if unreadable)."""
        if not self.token_file:
            return None
        try:
            with open(self.token_file, encoding="utf-8") as fh:
                return fh.read().strip() or None
        except OSError:
            return None

    @property
    def reachable(self) -> bool:
        """True if the CLI can talk to it (an API or a control channel)."""
        return bool(self.url or self.socket)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "url": self.url,
            "socket": self.socket,
            "version": self.version,
            "name": self.name,
            "started_at": self.started_at,
            "server": dict(self.server) if self.server else None,
        }


def _own_entry(d: Path, pid: int) -> dict[str, Any]:
    """This process's entry as written so far (empty if none, or another process's)."""
    try:
        data = json.loads((d / f"{pid}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("start_ticks") != _start_ticks(pid):
        return {}
    return data


def update_service(**fields: Any) -> Path:
    """Merge ``fields`` into this process's entry (created if missing); returns its path.

    The API server sets ``url``/``token_file``, the control channel ``socket``, the worker
    registry ``server``. An entry with neither a URL nor a socket left is removed.
    """
    from ._version import __version__

    pid = os.getpid()
    d = runtime_dir(create=True)
    entry = _own_entry(d, pid)
    entry.update(fields)
    entry.update(pid=pid, start_ticks=_start_ticks(pid), version=__version__)
    entry.setdefault("name", "")
    entry.setdefault("started_at", 0.0)
    path = d / f"{pid}.json"
    if not entry.get("url") and not entry.get("socket"):
        with contextlib.suppress(OSError):
            path.unlink()
        return path
    write_atomic(path, json.dumps(entry))
    return path


def register_service(url: str | None, token: str | None, *, name: str = "", started_at: float = 0.0) -> Path:
    """Announce this process's API (its URL and the 0600 token file); returns the entry's path."""
    pid = os.getpid()
    d = runtime_dir(create=True)
    token_file = None
    if token:
        token_file = d / f"{pid}.token"
        write_atomic(token_file, token + "\n")
    fields: dict[str, Any] = {"url": url, "token_file": str(token_file) if token_file else None}
    if name or not _own_entry(d, pid).get("name"):
        fields["name"] = name
    if started_at:
        fields["started_at"] = started_at
    return update_service(**fields)


def unregister_service(pid: int | None = None) -> None:
    """Withdraw this process's API (URL and token); with ``pid``, remove that entry whole.

    The entry itself stays while the control channel still announces a socket in it.
    """
    d = runtime_dir()
    if pid is None or pid == os.getpid():
        with contextlib.suppress(OSError):
            (d / f"{os.getpid()}.token").unlink()
        if _own_entry(d, os.getpid()).get("socket"):
            with contextlib.suppress(OSError):
                update_service(url=None, token_file=None)
            return
        pid = os.getpid()
    for suffix in (".json", ".token", ".sock"):
        with contextlib.suppress(OSError):
            (d / f"{pid}{suffix}").unlink()


def list_services(*, prune: bool = True) -> list[ServiceEntry]:
    """Live services of this user; stale entries are skipped (and removed if ``prune``)."""
    d = os.path.normpath(_runtime_path())
    out: list[ServiceEntry] = []
    try:
        names = sorted(n for n in os.listdir(d) if n.endswith(".json"))
    except OSError:
        return out
    for name in names:
        f = os.path.join(d, name)
        entry = _read_entry(f)
        if entry is None:
            if prune:
                with contextlib.suppress(OSError):
                    os.unlink(f)
            continue
        live = _start_ticks(entry.pid)
        if live is None or (entry.start_ticks and live != entry.start_ticks):
            if prune:
                with contextlib.suppress(OSError):
                    os.unlink(f)
                # its token and socket, whatever they are called, if they are in here
                for left in (entry.token_file, entry.socket, os.path.join(d, f"{entry.pid}.sock")):
                    if left and os.path.normpath(os.path.dirname(left)) == d:
                        with contextlib.suppress(OSError):
                            os.unlink(left)
            continue
        out.append(entry)
    if prune:
        _prune_sockets(d, {e.pid for e in out})
    return out


def _read_entry(path: str) -> ServiceEntry | None:
    """The entry in file ``path``, or ``None`` if it is unreadable or malformed."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.loads(fh.read())
        return ServiceEntry(
            pid=int(data["pid"]),
            start_ticks=int(data.get("start_ticks") or 0),
            url=data.get("url"),
            version=str(data.get("version", "")),
            name=str(data.get("name", "")),
            started_at=float(data.get("started_at") or 0.0),
            token_file=data.get("token_file"),
            socket=data.get("socket") or None,
            server=data.get("server") if isinstance(data.get("server"), dict) else None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _prune_sockets(d: str, live: set[int]) -> None:
    """Remove control sockets (``<pid>.sock``) of processes that are gone and left no entry."""
    try:
        names = [n for n in os.listdir(d) if n.endswith(".sock")]
    except OSError:
        return
    for name in names:
        stem = name[: -len(".sock")]
        if stem.isdigit() and int(stem) not in live and _start_ticks(int(stem)) is None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(d, name))
