"""Pre-fork servers: which server a process belongs to, its worker slot, the shared token.

gunicorn (any worker class) and ``uvicorn --workers N`` run one master and N workers.
memdiag runs one agent per process (each started after fork, or in each spawned worker);
this module tells each agent where it stands:

* **identity**: a process whose command line is a pre-fork server's (``gunicorn ...``,
  ``uvicorn ...``, ``python -m gunicorn ...``, a ``gunicorn: master`` title) and whose
  parent is not one is the *master*; a direct child of a master is a *worker*. A
  grandchild (a subprocess of a worker) is neither.
* **slot**: a worker claims the lowest free ``slot-N.lock`` in the server's private
  directory with ``flock``; the lock dies with the process, so the worker that replaces a
  recycled one (max-requests, reload on RSS) takes the same slot. The server id is made of
  the master's command line and working directory, so it survives a restart of the server
  too: ``<server id>/w<slot>`` names a worker's history, not its PID (the history file of
  worker slot N is ``<service name or server id>.wN.sqlite``, or ``history_db`` with the
  worker's key in its name).
* **token**: every process of a server shares one API token: the configured one
  (``api_token``, ``MEMDIAG_API_TOKEN``), else a random one the first process writes to a
  0600 file in the server's directory (created with ``link()``, so exactly one wins).

Everything is announced in the process's runtime entry (``server``), which is how
``memdiag ps`` shows a master and its workers and how the aggregate view finds them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import registry, runtime
from ._logging import get_logger
from ._record import record
from .probes.process import read_cmdline, read_stat

if TYPE_CHECKING:
    from .service import MemoryDiagnostics

__all__ = ["WorkerIdentity", "identity", "install", "server_dir", "shared_token"]

log = get_logger("memdiag.workers")

_PROGRAMS = frozenset({"gunicorn", "uvicorn"})
# Helpers multiprocessing starts beside spawned workers: children of the master, not workers.
_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
_MAX_SLOTS = 1024


def _sha256(data: bytes) -> Any:
    """SHA-256 from CPython's built-in module (same digest): ``hashlib`` loads OpenSSL,
    ~0.4 MB a monitored process would hold for one hash."""
    try:
        from _sha2 import sha256  # Python 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # Python 3.11
        except ImportError:
            from hashlib import sha256
    return sha256(data)


def _cmdline(pid: int) -> list[str]:
    return read_cmdline(pid) or []


def is_server_command(argv: list[str]) -> bool:
    """True for a pre-fork server's command line (gunicorn or uvicorn, however launched)."""
    if not argv:
        return False
    if argv[0].split(":", 1)[0].strip() in _PROGRAMS:  # setproctitle: "gunicorn: master [app]"
        return True
    head = argv[:3]
    for i, arg in enumerate(head):
        base = os.path.basename(arg)
        if base in _PROGRAMS:
            return True
        if arg == "-m" and i + 1 < len(argv) and argv[i + 1] in _PROGRAMS:
            return True
    return False


@record
class WorkerIdentity:
    """Where this process stands in a pre-fork server."""

    server_pid: int
    server_ticks: int
    server_id: str  # stable across restarts: the master's command line and cwd
    role: str  # "master" | "worker"
    slot: int | None = None

    @property
    def key(self) -> str:
        """``<server id>/w<slot>`` for a worker, ``<server id>/master`` for the master."""
        return f"{self.server_id}/{'master' if self.role == 'master' else f'w{self.slot}'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.server_pid,
            "start_ticks": self.server_ticks,
            "id": self.server_id,
            "role": self.role,
            "slot": self.slot,
            "key": self.key,
        }


def _server_id(pid: int) -> str:
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = ""
    argv = _cmdline(pid)
    digest = _sha256("\0".join([cwd, *argv]).encode("utf-8", "replace")).hexdigest()[:10]
    program = next((os.path.basename(a) for a in argv[:3] if os.path.basename(a) in _PROGRAMS), "server")
    return f"{program}-{digest}"


def _find_master(pid: int) -> tuple[int, str] | None:
    """``(master pid, role of pid)`` if ``pid`` is a pre-fork server's master or worker."""
    st = read_stat(pid)
    if st is None:
        return None
    ppid = st.ppid
    argv = _cmdline(pid)
    if any(h in a for a in argv[:4] for h in _HELPERS):
        return None
    me_server = is_server_command(argv)
    parent_server = ppid > 1 and is_server_command(_cmdline(ppid))
    if parent_server:
        pst = read_stat(ppid)
        grand_server = pst is not None and pst.ppid > 1 and is_server_command(_cmdline(pst.ppid))
        return None if grand_server else (ppid, "worker")
    return (pid, "master") if me_server else None


_state_lock = threading.Lock()
_lock_pid = os.getpid()
_identity: tuple[int, WorkerIdentity | None] | None = None  # (pid it was found in, identity)
_slot_fd: int | None = None


def server_dir(server_pid: int, server_ticks: int) -> Path:
    """The private directory a server's processes share (slots, token)."""
    d = runtime.runtime_dir(create=True) / f"server-{server_pid}-{server_ticks}"
    runtime.ensure_private_dir(d)
    return d


def _claim_slot(d: Path) -> int | None:
    """The lowest free slot of the server, held by an ``flock`` until this process ends."""
    global _slot_fd
    for n in range(_MAX_SLOTS):
        fd = os.open(d / f"slot-{n}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _slot_fd = fd
        registry.own_fd(fd)
        return n
    return None


def identity() -> WorkerIdentity | None:
    """This process's place in a pre-fork server (``None`` outside one); found once per process."""
    global _identity, _slot_fd, _state_lock, _lock_pid
    pid = os.getpid()
    if _lock_pid != pid:  # a forked child: the parent's lock may have been held at fork()
        _state_lock, _lock_pid = threading.Lock(), pid
    with _state_lock:
        if _identity is not None and _identity[0] == pid:
            return _identity[1]
        if _slot_fd is not None:  # inherited over fork: the parent's slot, not ours
            registry.disown_fd(_slot_fd)
            with contextlib.suppress(OSError):
                os.close(_slot_fd)
            _slot_fd = None
        found = _find_master(pid)
        ident = None
        if found is not None:
            master, role = found
            st = read_stat(master)
            ticks = st.start_ticks if st else 0
            slot = None
            if role == "worker":
                try:
                    slot = _claim_slot(server_dir(master, ticks))
                except OSError as exc:
                    log.warning("memdiag: no worker slot (%s); history is kept per PID", exc)
            ident = WorkerIdentity(master, ticks, _server_id(master), role, slot)
        _identity = (pid, ident)
        return ident


def shared_token() -> str | None:
    """The API token every process of this server shares (``None`` outside a server).

    The first process to ask writes a random token to ``token`` (0600) in the server's
    directory; the others read it. Only used when no token is configured.
    """
    ident = identity()
    if ident is None:
        return None
    d = server_dir(ident.server_pid, ident.server_ticks)
    path = d / "token"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            _create_token(d, path)
            continue
        with os.fdopen(fd, "r", encoding="utf-8") as fh:
            st = os.fstat(fh.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & 0o077:
                raise runtime.RuntimeDirError(f"{path} is not a private file of this user; remove it")
            token = fh.read().strip()
        if len(token) >= 16:
            return token
    raise runtime.RuntimeDirError(f"{path} holds no usable token; remove it")


def _create_token(d: Path, path: Path) -> None:
    import secrets  # once per runtime directory: not held by every monitored process

    tmp = d / f".token.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: its token counts
            os.link(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def history_path(base: str, ident: WorkerIdentity) -> str:
    """``base`` made per worker identity: ``history.db`` -> ``history.<server id>.w2.db``."""
    root, ext = os.path.splitext(base)
    tag = ident.key.replace("/", ".")
    return f"{root}.{tag}{ext or '.db'}"


def _on_start(diag: MemoryDiagnostics) -> None:
    from .service import MemoryDiagnostics

    if diag is not MemoryDiagnostics._instance:
        return
    ident = identity()  # the control channel announces it in the runtime entry
    if ident is None:
        return
    if not diag.config.api_token:
        shared_token()  # written now, so it is there to read before the first request
    if ident.role == "worker" and ident.slot is not None:
        changes = _worker_history(diag.config, ident)
        if changes:  # a recycled worker continues the history of its slot
            diag.configure(changes)


def _worker_history(cfg: Any, ident: WorkerIdentity) -> dict[str, Any]:
    """The settings that give worker slot N its own history, the same after recycling:
    a configured ``history_db`` gets the worker's key in its name; else the service name
    (which names the default file) becomes ``<service name or server id>.w<slot>``."""
    if not cfg.history_persist:
        return {}
    suffix = f".w{ident.slot}"
    if cfg.history_db:
        mine = history_path(_base_history(cfg.history_db), ident)
        return {} if mine == cfg.history_db else {"history_db": mine}
    name = cfg.service_name or ident.server_id
    if name.endswith(suffix):  # set already (a parent before fork, or a restart)
        return {}
    base, dot, last = name.rpartition(".")
    if dot and last[:1] == "w" and last[1:].isdigit():  # the parent's slot, inherited over fork
        name = base
    return {"service_name": name + suffix}


def _base_history(path: str) -> str:
    """A history path as configured, without a worker tag added by a parent before fork."""
    root, ext = os.path.splitext(path)
    parts = root.split(".")
    if len(parts) >= 3 and parts[-1].startswith(("w", "master")) and "-" in parts[-2]:
        return ".".join(parts[:-2]) + ext
    return path


def _on_stop(diag: MemoryDiagnostics) -> None:
    pass


def install() -> None:
    """Keep a worker's history per worker identity whenever the shared monitor starts."""
    registry.register_lifecycle("worker identity", _on_start, _on_stop)
