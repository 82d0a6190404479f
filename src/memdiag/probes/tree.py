"""Walk a process's descendants cheaply.

psutil's ``children(recursive=True)`` reads ``/proc/*/stat`` for every PID on the host
(6-25 ms on a busy host). This walker follows ``/proc/PID/task/TID/children`` from the
root down, so its cost grows with the size of *our* tree, not the host's, and it keeps
the files it re-reads open (:class:`~memdiag.probes._io.PreadCache`): one ``pread`` per
file per tick. Where the kernel lacks ``children`` files (CONFIG_PROC_CHILDREN off) it
falls back to a full ``/proc`` scan, at most once per ``fallback_interval`` seconds.
"""

from __future__ import annotations

import os
import time

from .._record import tuple_record
from ._io import PreadCache, close_held, open_held, read_bytes
from .process import ProcStat, boot_time, clock_ticks, page_size, parse_stat

_PAGE = page_size()

__all__ = ["ChildInfo", "ChildWalker"]


@tuple_record
class ChildInfo:
    """One descendant as seen on one tick (a tuple: cheap to build 100 times a tick)."""

    pid: int
    ppid: int
    name: str
    state: str
    rss_bytes: int
    start_ticks: int
    depth: int
    num_threads: int

    @property
    def zombie(self) -> bool:
        return self.state == "Z"

    def start_time(self, proc_root: str = "/proc") -> float | None:
        bt = boot_time(proc_root)
        return None if bt is None else bt + self.start_ticks / clock_ticks()

    def to_dict(self, memory: dict[str, int] | None = None) -> dict[str, object]:
        """The report form, with USS/PSS from a profile tick's smaps (``None`` otherwise)."""
        mem = memory or {}
        return {
            "pid": self.pid,
            "ppid": self.ppid,
            "name": self.name,
            "state": self.state,
            "zombie": self.state == "Z",
            "depth": self.depth,
            "threads": self.num_threads,
            "rss_bytes": self.rss_bytes,
            "uss_bytes": mem.get("uss"),
            "pss_bytes": mem.get("pss"),
        }


class _Node:
    """A known descendant: its last info and its open statm/children descriptors."""

    __slots__ = ("children_fd", "info", "statm_fd")

    def __init__(self, info: ChildInfo) -> None:
        self.info = info
        self.statm_fd = -1
        self.children_fd = -1

    def close(self) -> None:
        for fd in (self.statm_fd, self.children_fd):
            if fd >= 0:
                close_held(fd)
        self.statm_fd = self.children_fd = -1


_open = open_held  # marked as memdiag's: never counted as the application's fds


class ChildWalker:
    """Finds the descendants of ``root_pid`` and their RSS and state.

    Per tick it reads, for each known descendant, ``statm`` (RSS, ~2 us) and its main
    thread's ``children`` file (~1 us), both kept open; ``stat`` (~6 us: name, parent,
    start time, threads, state) only for a new PID, one whose RSS reads 0 (a zombie
    candidate: a zombie has no memory map), and on a full pass every
    ``full_interval`` seconds, which also reads the children files of every thread
    of multi-threaded descendants. The root's threads are all read on every tick, since
    any of its threads may spawn a child.

    Not thread-safe: the monitor owns one. After ``fork()`` call :meth:`reset`.

    Args:
        root_pid: the process whose tree is walked (default: this one).
        proc_root: where /proc is.
        max_depth: deeper descendants are not followed.
        max_children: a hard bound on the number reported per walk, so a fork bomb in
            the tree cannot make a tick unbounded.
        fd_capacity: how many /proc files stay open between ticks.
        full_interval: seconds between full passes.
    """

    def __init__(
        self,
        root_pid: int | None = None,
        proc_root: str = "/proc",
        *,
        max_depth: int = 16,
        max_children: int = 4096,
        fd_capacity: int = 512,
        full_interval: float = 5.0,
        fallback_interval: float = 10.0,
    ) -> None:
        self.root_pid = root_pid if root_pid is not None else os.getpid()
        self.proc_root = proc_root
        self.max_depth = max_depth
        self.max_children = max_children
        self.full_interval = full_interval
        self.fallback_interval = fallback_interval
        self._cache = PreadCache(fd_capacity)
        self._tids: dict[int, frozenset[str]] = {}  # pid -> the threads whose children files were read
        self._has_children_files: bool | None = None
        self._fallback_at = 0.0
        self._fallback_result: list[ChildInfo] = []
        self._nodes: dict[int, _Node] = {}
        self._node_capacity = max(0, fd_capacity // 2)
        self._open_nodes = 0
        self._full_at = 0.0
        self.extra_roots: set[int] = set()  # adopted/tracked PIDs outside the natural tree

    # -- discovery ------------------------------------------------------------------------
    def _children_of(self, pid: int, all_threads: bool) -> list[int]:
        proc = self.proc_root
        if all_threads:
            try:
                tids: list[str] = os.listdir(f"{proc}/{pid}/task")
            except OSError:
                tids = [str(pid)]
        else:
            tids = [str(pid)]
        kids: list[int] = []
        for tid in tids:
            data = self._cache.read(f"{proc}/{pid}/task/{tid}/children", 65536)
            if data:
                kids.extend(map(int, data.split()))
        if all_threads:
            # A thread that exited is not listed again, so its children file would stay
            # open until the cache's bound (512): a service starting short-lived threads
            # held hundreds of descriptors for dead threads. Close those now.
            listed = frozenset(tids)
            gone = self._tids.get(pid, frozenset()) - listed
            self._tids[pid] = listed
            for tid in gone:
                self._cache.forget(f"{proc}/{pid}/task/{tid}/children")
        return kids

    def _probe_children_files(self) -> bool:
        if self._has_children_files is None:
            self._has_children_files = os.path.exists(f"{self.proc_root}/{self.root_pid}/task/{self.root_pid}/children")
        return self._has_children_files

    def _stat(self, pid: int, depth: int) -> ChildInfo | None:
        st = parse_stat(pid, read_bytes(f"{self.proc_root}/{pid}/stat", 4096))
        return None if st is None else _info(st, depth)

    def walk(self, full: bool | None = None) -> list[ChildInfo]:
        """The descendants now: breadth first, each with its depth (1 = direct child).

        Args:
            full: force (True) or skip (False) a full pass; ``None`` decides by time.
        """
        if not self._probe_children_files():
            return self._scan_all()
        now = time.monotonic()
        if full is None:
            full = now - self._full_at >= self.full_interval
        if full:
            self._full_at = now
        out: list[ChildInfo] = []
        alive: dict[int, _Node] = {}
        seen = {self.root_pid}
        frontier = [(pid, 1) for pid in self._children_of(self.root_pid, True)]
        frontier += [(pid, 1) for pid in self.extra_roots]
        while frontier and len(out) < self.max_children:
            frontier = self._walk_level(frontier, full, seen, out, alive)
        nodes = self._nodes
        for pid in nodes.keys() - alive.keys():
            self._drop(nodes[pid])
        self._nodes = alive
        return out

    def _walk_level(
        self,
        frontier: list[tuple[int, int]],
        full: bool,
        seen: set[int],
        out: list[ChildInfo],
        alive: dict[int, _Node],
    ) -> list[tuple[int, int]]:
        """Visit one depth of the tree (appending to ``out`` and ``alive``); returns the next.

        The per-descendant fast path (one ``pread`` of an open ``statm``, one of an open
        ``children`` file) stays inline here: it runs for every descendant on every tick.
        """
        nodes = self._nodes
        pread = os.pread
        nxt: list[tuple[int, int]] = []
        for pid, depth in frontier:
            if pid in seen:
                continue
            seen.add(pid)
            node: _Node | None = nodes.get(pid)
            info: ChildInfo | None = None
            if node is not None and not full and node.statm_fd >= 0:
                prev = node.info
                try:
                    data = pread(node.statm_fd, 256, 0)
                    rss = int(data.split()[1]) * _PAGE
                except (OSError, IndexError, ValueError):
                    rss = -1  # gone: the fd is tied to the old process
                # A new depth means a new parent (re-parented orphan): re-read stat.
                if rss > 0 and depth == prev.depth:
                    if rss == prev.rss_bytes:
                        info = prev
                    else:
                        info = node.info = prev._replace(rss_bytes=rss)
            if info is None:
                # New, a full pass, moved, RSS 0 (a zombie has no memory map), or gone.
                node = self._restat(pid, depth, node)
                if node is None:
                    continue
                info = node.info
            assert node is not None  # known on the fast path, made on the slow one
            out.append(info)
            alive[pid] = node
            if len(out) >= self.max_children:
                break
            if depth < self.max_depth and info.state != "Z":
                kids: list[int]
                if full and info.num_threads > 1:
                    kids = self._children_of(pid, True)
                elif node.children_fd >= 0:
                    try:
                        kids = [int(k) for k in pread(node.children_fd, 65536, 0).split()]
                    except (OSError, ValueError):
                        kids = []
                else:
                    kids = self._children_of(pid, False)
                nxt.extend((k, depth + 1) for k in kids)
        return nxt

    def _restat(self, pid: int, depth: int, node: _Node | None) -> _Node | None:
        """The slow path: read ``stat``; the node for ``pid`` (a new one, with its files
        opened while there is room, if the PID is new or was reused), ``None`` if gone."""
        info = self._stat(pid, depth)
        if info is None:
            self.extra_roots.discard(pid)
            return None
        if node is not None and node.info.start_ticks != info.start_ticks:
            self._drop(node)  # the PID was reused by another process
            node = None
        if node is None:
            node = _Node(info)
            if self._open_nodes < self._node_capacity:
                node.statm_fd = _open(f"{self.proc_root}/{pid}/statm")
                node.children_fd = _open(f"{self.proc_root}/{pid}/task/{pid}/children")
                self._open_nodes += 1
        node.info = info
        return node

    def _drop(self, node: _Node) -> None:
        if node.statm_fd >= 0:
            self._open_nodes -= 1
        node.close()

    def _scan_all(self) -> list[ChildInfo]:
        """Fallback without children files: read every /proc/*/stat, rate-limited."""
        now = time.monotonic()
        if now - self._fallback_at < self.fallback_interval and self._fallback_result:
            return self._refresh(self._fallback_result)
        self._fallback_at = now
        stats: dict[int, ProcStat] = {}
        try:
            names = os.listdir(self.proc_root)
        except OSError:
            return []
        for name in names:
            if name.isdigit():
                st = parse_stat(int(name), read_bytes(f"{self.proc_root}/{name}/stat", 4096))
                if st is not None:
                    stats[st.pid] = st
        by_parent: dict[int, list[ProcStat]] = {}
        for st in stats.values():
            by_parent.setdefault(st.ppid, []).append(st)
        out: list[ChildInfo] = []
        frontier = [(s, 1) for s in by_parent.get(self.root_pid, [])]
        frontier += [(stats[p], 1) for p in self.extra_roots if p in stats]
        while frontier and len(out) < self.max_children:
            st, depth = frontier.pop(0)
            out.append(_info(st, depth))
            if depth < self.max_depth:
                frontier.extend((c, depth + 1) for c in by_parent.get(st.pid, []))
        self._fallback_result = out
        return out

    def _refresh(self, previous: list[ChildInfo]) -> list[ChildInfo]:
        out = []
        for c in previous:
            st = parse_stat(c.pid, self._cache.read(f"{self.proc_root}/{c.pid}/stat"))
            if st is not None and st.start_ticks == c.start_ticks:
                out.append(_info(st, c.depth))
        return out

    def reset(self) -> None:
        """After fork: close the inherited descriptors and start from this process."""
        self.close()
        self.root_pid = os.getpid()
        self._has_children_files = None
        self._full_at = 0.0
        self.extra_roots = set()

    def close(self) -> None:
        """Close every descriptor this walker keeps open."""
        self._cache.close()
        self._tids = {}
        for node in self._nodes.values():
            node.close()
        self._nodes = {}
        self._open_nodes = 0

    @property
    def open_fds(self) -> int:
        return len(self._cache) + 2 * self._open_nodes

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _info(st: ProcStat, depth: int) -> ChildInfo:
    return ChildInfo(
        pid=st.pid,
        ppid=st.ppid,
        name=st.name,
        state=st.state,
        rss_bytes=st.rss_bytes,
        start_ticks=st.start_ticks,
        depth=depth,
        num_threads=st.num_threads,
    )
