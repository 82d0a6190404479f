"""Where resources are created: the Python line that opened an fd, started a thread,
created an asyncio task or spawned a child, and which of them are memdiag's own.

Installed once per process by the leak detector (:func:`install`):

* file descriptors and sockets: an audit hook on the ``open`` and ``socket.__new__``
  events. It is written in C (``_audit``: ``PySys_AddAuditHook``) and compares the event
  name's bytes before any Python runs, so the interpreter's other events (``time.sleep``,
  ``sys._getframe`` for every log record, ...) cost a few instructions, not a Python call;
  without that build it is a Python hook (``sys.addaudithook``). Either way it cannot be
  removed, so it stays installed. ``open`` does not carry the fd, so the path is
  remembered with its site (bounded) and matched to ``/proc/self/fd`` links when the
  table is read; sockets are remembered by weak reference and asked for their fd then;
* threads: ``threading.Thread.start`` wrapped (the site is stored on the thread);
* asyncio tasks: where their coroutine is defined; and once the application's pending
  tasks grow (:func:`follow_tasks`, called by ``sites.ResourceSites``), the line that
  creates them: ``asyncio.tasks.Task`` replaced by a subclass that stores its site (loops
  create tasks through that name). Not before: aiohttp and uvicorn create a task per
  request, and the subclass's ``__init__`` cost ~16k instructions per task (+6 % per
  aiohttp request, ``benchmarks/bench_servers.py --count``);
* child processes: the ``subprocess.Popen`` audit event (its ``self`` is the ``Popen``).

A *site* is the innermost frame outside the standard library; a stack that passes
through memdiag's own code first is memdiag's (``OWN``) and is left out of every count
shown as the application's. Recording costs a frame walk per creation (~1-2 us).
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections import Counter, OrderedDict
from collections.abc import Iterable
from typing import Any

from .. import registry
from ..probes._io import held_fds
from ..probes.python import STDLIB_DIRS

__all__ = [
    "OWN",
    "Site",
    "children_by_site",
    "fd_table",
    "follow_tasks",
    "hook_kind",
    "install",
    "installed",
    "tasks_by_site",
    "task_aliases",
    "tasks_followed",
    "threads_by_site",
    "unfollow_tasks",
]

Site = tuple[str, int]  # (filename, line)
OWN: Site = ("<memdiag>", 0)

_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# memdiag modules that create resources *for* the application (memdiag.Popen): not memdiag's.
_PASS_THROUGH = (_OWN_DIR + "processes" + os.sep + "spawn.py",)
_STDLIB = STDLIB_DIRS
MAX_PATHS = 4096
MAX_SOCKETS = 16384
MAX_FDS_READ = 65536

_lock = threading.Lock()
_installed = False
_hook_kind: str | None = None  # "c" (the _audit build) or "python" (sys.addaudithook)
_paths: OrderedDict[str, Site] = OrderedDict()  # path opened -> its last opener
_sockets: weakref.WeakKeyDictionary[Any, Site] = weakref.WeakKeyDictionary()
_popens: weakref.WeakKeyDictionary[Any, Site] = weakref.WeakKeyDictionary()
# Both caches are keyed by the code object's id, never by the code object: hashing a code
# object hashes its constants, names and bytecode on every call (~3 us for aiohttp's
# request loop, which creates a task per request: two or three hashes per task were most
# of the Task hook's +20k instructions per request, benchmarks/bench_servers.py --count).
# Each entry keeps its code object alive, so an id cannot be reused while it is cached.
_site_cache: dict[int, tuple[Any, Site | None]] = {}  # id(code) -> (code, OWN / None (stdlib) / _APP)
_line_cache: dict[tuple[int, int], tuple[Any, Site]] = {}  # (id(code), instruction offset) -> (code, site)
MAX_LINE_CACHE = 20000
MAX_SITE_CACHE = 20000


def _classify(code: Any) -> Site | None:
    """OWN for memdiag's code, None for the standard library, else a marker meaning 'app'."""
    got = _site_cache.get(id(code))
    if got is not None and got[0] is code:
        return got[1]
    fn = code.co_filename
    if fn.startswith(_OWN_DIR) and not fn.startswith(_PASS_THROUGH):
        value: Site | None = OWN
    elif fn.startswith(_STDLIB) or fn.startswith("<frozen") or fn.startswith(_PASS_THROUGH):
        value = None
    else:
        value = _APP
    if len(_site_cache) >= MAX_SITE_CACHE:
        _site_cache.clear()
    _site_cache[id(code)] = (code, value)
    return value


_APP: Site = ("<app>", -1)


def site_of(frame: Any, limit: int = 64) -> Site | None:
    """The creating site for a stack starting at ``frame`` (OWN, or None if only stdlib).

    The site is memoised by (code, instruction offset): ``f_lineno`` decodes the code's
    line table from its start, ~90k instructions in a long function such as aiohttp's
    request loop, which creates a task per request (+20 % per request,
    ``benchmarks/bench_servers.py --count``); the offset is free to read.
    """
    f = frame
    while f is not None and limit > 0:
        code = f.f_code
        c = _classify(code)
        if c is OWN:
            return OWN
        if c is _APP:
            key = (id(code), f.f_lasti)
            got = _line_cache.get(key)
            if got is not None and got[0] is code:
                return got[1]
            site = (code.co_filename, f.f_lineno)
            if len(_line_cache) >= MAX_LINE_CACHE:
                _line_cache.clear()
            _line_cache[key] = (code, site)
            return site
        f = f.f_back
        limit -= 1
    return None


def _hook(event: str, args: tuple[Any, ...]) -> None:
    # An audit hook that raises fails the audited operation itself: the interpreter opening
    # the main script (no Python frame yet: sys._getframe raises) failed with EINVAL.
    if event == "open" or event == "socket.__new__" or event == "subprocess.Popen":
        try:
            _record(event, args)
        except Exception:
            pass


def _record(event: str, args: tuple[Any, ...]) -> None:
    if event == "open":
        path = args[0]
        if not isinstance(path, str):
            return
        site = site_of(sys._getframe(2))
        if site is None:
            return
        if path.startswith("/proc/self/"):  # the fd's link names the pid
            path = f"/proc/{os.getpid()}/{path[11:]}"
        elif not path.startswith("/"):
            try:
                path = os.path.join(os.getcwd(), path)
            except OSError:
                return
        with _lock:
            _paths[path] = site
            _paths.move_to_end(path)
            if len(_paths) > MAX_PATHS:
                _paths.popitem(last=False)
    elif event == "socket.__new__":
        site = site_of(sys._getframe(2))
        if site is not None and len(_sockets) < MAX_SOCKETS:
            try:
                _sockets[args[0]] = site
            except TypeError:
                pass
    elif event == "subprocess.Popen":
        f = sys._getframe(2)
        popen = f.f_locals.get("self") if f.f_code.co_name == "_execute_child" else None
        site = site_of(f)
        if popen is not None and site is not None:
            try:
                _popens[popen] = site
            except TypeError:
                pass


def _wrap_thread_start() -> None:
    orig = threading.Thread.start
    if getattr(orig, "_memdiag_wrapped", False):
        return

    def start(self: threading.Thread) -> None:
        try:
            self._memdiag_site = site_of(sys._getframe(1))  # type: ignore[attr-defined]
        except Exception:
            pass
        orig(self)

    start._memdiag_wrapped = True  # type: ignore[attr-defined]
    start.__wrapped__ = orig  # type: ignore[attr-defined]
    start.__doc__ = orig.__doc__
    threading.Thread.start = start  # type: ignore[method-assign]


def _wrap_tasks() -> bool:
    """Replace ``asyncio.tasks.Task`` by a subclass recording its site (once asyncio is imported)."""
    tasks = sys.modules.get("asyncio.tasks")
    if tasks is None:
        return False
    base = tasks.Task
    if getattr(base, "_memdiag_wrapped", False):
        return True

    base_init = base.__init__
    getframe = sys._getframe

    class Task(base):  # type: ignore[valid-type, misc]
        __slots__ = ("_memdiag_site",)
        _memdiag_wrapped = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # one per request in aiohttp and uvicorn: no super() object, the site memoised
            try:
                self._memdiag_site = site_of(getframe(1))
            except Exception:
                self._memdiag_site = None
            base_init(self, *args, **kwargs)

    Task.__name__ = Task.__qualname__ = base.__name__
    Task.__module__ = base.__module__
    Task.__doc__ = base.__doc__
    tasks.Task = Task
    return True


def follow_tasks() -> bool:
    """Record the creating line of every asyncio task from now on (idempotent); False
    while asyncio is not imported. Tasks created before keep their coroutine's site."""
    with _lock:
        return _wrap_tasks()


def tasks_followed() -> bool:
    """True while loops create tasks through memdiag's recording subclass."""
    tasks = sys.modules.get("asyncio.tasks")
    return tasks is not None and bool(getattr(tasks.Task, "_memdiag_wrapped", False))


def unfollow_tasks() -> None:
    """Put asyncio's own Task class back (tasks created meanwhile keep their site)."""
    tasks = sys.modules.get("asyncio.tasks")
    with _lock:
        if tasks is not None and "_memdiag_wrapped" in vars(tasks.Task):  # ours, not a subclass of it
            tasks.Task = tasks.Task.__mro__[1]


def _add_audit_hook() -> str:
    """The C audit hook when built (it calls ``_hook`` for the three events only), else a
    Python one. ``_hook`` sits one frame below the audited call either way."""
    try:
        from . import _audit
    except ImportError:
        sys.addaudithook(_hook)
        return "python"
    _audit.install(_hook)
    return "c"


def install() -> None:
    """Install the audit hook and the ``Thread.start`` wrapper (once per process;
    idempotent, cheap to call again). The Task hook waits for growth: :func:`follow_tasks`."""
    global _installed, _hook_kind
    with _lock:
        first = not _installed
        _installed = True
    if first:
        _hook_kind = _add_audit_hook()
        _wrap_thread_start()


def installed() -> bool:
    return _installed


def hook_kind() -> str | None:
    """How the audit hook is implemented: "c", "python", or None before install()."""
    return _hook_kind


# -- reading the tables (monitor thread, at check time) -----------------------------------


def fd_table(proc_root: str = "/proc") -> list[tuple[int, str, Site | None]]:
    """Open fds of this process: ``(fd, target, site)``; site OWN for memdiag's, None unknown.

    memdiag's own: the descriptors its readers keep open (``probes._io.held_fds``: /proc,
    cgroup files), those it marked (``registry.own_fds``: the control channel's socket and
    event loop, the history file), and the sockets and files its own code opened (the
    hooks saw memdiag's frames). fds that existed before the hooks were installed and point
    into ``/proc`` are taken for memdiag's too (the application keeping /proc files open is
    rare).
    """
    base = f"{proc_root}/self/fd"
    try:
        names = os.listdir(base)[:MAX_FDS_READ]
    except OSError:
        return []
    by_fd: dict[int, Site] = dict.fromkeys(registry.own_fds() | held_fds(), OWN)
    with _lock:
        socks = list(_sockets.items())
        paths = dict(_paths)
    for s, site in socks:
        try:
            fd = s.fileno()
        except Exception:
            continue
        if fd >= 0 and by_fd.get(fd) != OWN:
            by_fd[fd] = site
    out = []
    for name in names:
        try:
            fd = int(name)
            target = os.readlink(f"{base}/{name}")
        except (ValueError, OSError):
            continue
        site = by_fd.get(fd)
        if site is None:
            site = paths.get(target)
            if site is None and target.startswith("/proc/"):
                site = OWN
        out.append((fd, target, site))
    return out


def fd_kind(target: str) -> str:
    """What an fd points to, in one word: file, socket, pipe, anon (eventfd, epoll, ...), proc, dev."""
    if target.startswith("socket:"):
        return "socket"
    if target.startswith("pipe:"):
        return "pipe"
    if target.startswith("anon_inode:"):
        return "anon:" + target.split(":", 1)[1].strip("[]")
    if target.startswith("/proc/"):
        return "proc"
    if target.startswith("/dev/"):
        return "dev"
    return "file"


def threads_by_site() -> tuple[Counter[Site | None], int]:
    """Live Python threads by creating site (OWN: memdiag's) and how many are memdiag's."""
    c: Counter[Site | None] = Counter()
    own = 0
    for t in threading.enumerate():
        site = getattr(t, "_memdiag_site", None)
        if site is None and t.name.startswith("memdiag-"):
            site = OWN
        if site == OWN:
            own += 1
        c[site] += 1
    return c, own


_AMBIGUOUS: Site = ("<several>", -1)
MAX_TASK_ALIASES = 1024
# coroutine definition -> the one line seen creating its tasks since the Task hook went in
# (_AMBIGUOUS when several lines do). Tasks created before the hook are counted at that
# line too, so a leak's count keeps one continuous series when it gains its creating line.
_task_aliases: dict[Site, Site] = {}


def _coroutine_site(task: Any) -> Site | None:
    try:
        code = task.get_coro().cr_code
        return (code.co_filename, code.co_firstlineno)
    except Exception:
        return None


def _learn_alias(coro_site: Site | None, site: Site) -> None:
    if coro_site is None or site == OWN or coro_site == site:
        return
    known = _task_aliases.get(coro_site)
    if known is None:
        if len(_task_aliases) < MAX_TASK_ALIASES:
            _task_aliases[coro_site] = site
    elif known != site:
        _task_aliases[coro_site] = _AMBIGUOUS


def task_aliases() -> dict[Site, Site]:
    """Coroutine definitions whose followed tasks all come from one creating line."""
    return {c: s for c, s in _task_aliases.items() if s != _AMBIGUOUS}


def tasks_by_site(tasks: Iterable[Any]) -> Counter[Site | None]:
    """Pending asyncio tasks by creating site; a task created before the Task hook went in
    counts at the line that creates its coroutine's tasks now (when one line alone does),
    else at its coroutine's definition."""
    c: Counter[Site | None] = Counter()
    pending: list[Site | None] = []
    for t in tasks:
        site = getattr(t, "_memdiag_site", None)
        if site is None:
            pending.append(_coroutine_site(t))
            continue
        if site != OWN:
            _learn_alias(_coroutine_site(t), site)
        c[site] += 1
    for coro_site in pending:
        alias = _task_aliases.get(coro_site) if coro_site is not None else None
        c[alias if alias is not None and alias != _AMBIGUOUS else coro_site] += 1
    return c


def children_by_site(pids: Iterable[int]) -> Counter[Site | None]:
    """Live child pids by the site that spawned them (None: not spawned through subprocess)."""
    with _lock:
        known = {p.pid: site for p, site in list(_popens.items()) if getattr(p, "pid", None)}
    c: Counter[Site | None] = Counter()
    for pid in pids:
        c[known.get(pid)] += 1
    return c
