"""MemoryAwarePool: a bounded pool of owned worker processes that are recycled.

Long-lived workers accumulate memory (fragmentation, caches, leaks in libraries). Like
uWSGI's ``reload-on-rss`` and ``max-requests``, this pool checks each worker after every
task and replaces it when its RSS passed ``max_rss_mb`` or it ran
``max_tasks_per_worker`` tasks. A worker is only ever retired between tasks, so
recycling never loses work: queued tasks wait for the replacement. A worker that dies
during a task (a crash, the OOM killer) fails that task's future with
:class:`WorkerLostError`; the queue is untouched.

Workers are started with the ``spawn`` method (fresh interpreters: no fork from a
threaded process), are owned by memdiag (role ``pool-worker``, group = the pool's name)
and show in ``subprocesses()`` and the ``processes`` diagnostics section. Functions and
arguments must be picklable, as for ``concurrent.futures.ProcessPoolExecutor``.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from multiprocessing.connection import Connection, wait
from typing import Any

from .._logging import get_logger
from ..errors import MemdiagError
from ..probes.process import read_statm_rss
from ..units import MIB
from .ownership import OwnedProcess, registry, track
from .terminate import stop_entries

__all__ = ["MemoryAwarePool", "WorkerLostError", "pool_stats", "recycle_idle_workers"]

log = get_logger("memdiag.processes")
_POOLS: weakref.WeakSet[MemoryAwarePool] = weakref.WeakSet()
_ids = itertools.count(1)


class WorkerLostError(MemdiagError, RuntimeError):
    """The worker running this task died before returning a result."""


def _worker_main(conn: Connection, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
    """The worker loop: receive ``(fn, args, kwargs)``, send ``(ok, value)``; ``None`` ends it."""
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, args, kwargs = msg
        try:
            reply: tuple[bool, Any] = (True, fn(*args, **kwargs))
        except BaseException as exc:
            reply = (False, exc)
        try:
            conn.send(reply)
        except Exception as exc:  # the result or the exception did not pickle
            conn.send((False, RuntimeError(f"result could not be sent: {exc!r}")))


class _Task:
    __slots__ = ("args", "fn", "future", "kwargs", "running")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.future: Future[Any] = Future()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.running = False  # its future was marked running (a requeued task stays so)


class _Worker:
    __slots__ = ("conn", "entry", "proc", "started", "task", "tasks_done")

    def __init__(self, proc: Any, conn: Connection, entry: OwnedProcess) -> None:
        self.proc, self.conn, self.entry = proc, conn, entry
        self.task: _Task | None = None
        self.tasks_done = 0
        self.started = time.time()


class MemoryAwarePool:
    """A bounded pool of owned worker processes, recycled on memory or task count.

    Args:
        max_workers: the most workers alive at once (default: CPU count).
        max_rss_mb: a worker whose RSS is above this after a task is replaced.
        max_tasks_per_worker: a worker is replaced after this many tasks.
        name: shown in reports; also each worker's ``group``.
        initializer, initargs: run once in each new worker.
        mp_context: a multiprocessing context (default: ``spawn``).

    Example::

        with memdiag.MemoryAwarePool(4, max_rss_mb=300, max_tasks_per_worker=500) as pool:
            results = list(pool.map(render, pages))
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        max_rss_mb: float | None = None,
        max_tasks_per_worker: int | None = None,
        name: str | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        mp_context: Any = None,
    ) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if max_tasks_per_worker is not None and max_tasks_per_worker < 1:
            raise ValueError("max_tasks_per_worker must be at least 1")
        self.max_workers = max_workers or os.cpu_count() or 1
        self.max_rss_bytes = int(max_rss_mb * MIB) if max_rss_mb is not None else None
        self.max_tasks_per_worker = max_tasks_per_worker
        self.name = name or f"pool-{next(_ids)}"
        self._initializer, self._initargs = initializer, initargs
        self._ctx = mp_context or multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._pending: deque[_Task] = deque()
        self._workers: list[_Worker] = []
        self._shutdown = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self.counts = {
            "submitted": 0,
            "completed": 0,
            "failed": 0,
            "lost": 0,
            "started_workers": 0,
            "recycled_rss": 0,
            "recycled_tasks": 0,
            "recycled_idle": 0,
        }
        self._thread = threading.Thread(target=self._run, name=f"memdiag-{self.name}", daemon=True)
        self._thread.start()
        _POOLS.add(self)

    # -- public API ------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue ``fn(*args, **kwargs)`` for a worker; returns its ``Future``."""
        task = _Task(fn, args, kwargs)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to a pool that was shut down")
            self._pending.append(task)
            self.counts["submitted"] += 1
        self._poke()
        return task.future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None) -> Iterator[Any]:
        """Like ``Executor.map``: results in order; all tasks are queued at once."""
        futures = [self.submit(fn, *args) for args in zip(*iterables)]
        end = None if timeout is None else time.monotonic() + timeout

        def results() -> Iterator[Any]:
            try:
                for f in futures:
                    yield f.result(None if end is None else max(0.0, end - time.monotonic()))
            finally:
                for f in futures:
                    f.cancel()

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking tasks; finish the queued ones (or cancel them), then end the workers."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._pending:
                    self._pending.popleft().future.cancel()
        self._poke()
        if wait and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> MemoryAwarePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)

    def stats(self) -> dict[str, Any]:
        """Workers (pid, RSS, tasks done, busy), queue length and counters."""
        with self._lock:
            workers = list(self._workers)
            queued = len(self._pending)
        return {
            "name": self.name,
            "max_workers": self.max_workers,
            "max_rss_bytes": self.max_rss_bytes,
            "max_tasks_per_worker": self.max_tasks_per_worker,
            "queued": queued,
            "shutdown": self._shutdown,
            "workers": [
                {
                    "pid": w.proc.pid,
                    "rss_bytes": read_statm_rss(w.proc.pid),
                    "tasks_done": w.tasks_done,
                    "busy": w.task is not None,
                    "started_at": w.started,
                }
                for w in workers
            ],
            **self.counts,
        }

    def recycle_idle(self, dry_run: bool = False) -> tuple[int, int]:
        """Retire every idle worker now (fresh ones start when work comes).

        Returns ``(workers, their RSS in bytes)``. Used by the owned-children cleanup rung
        in an emergency: idle workers hold whatever their last tasks left behind.
        """
        with self._lock:
            idle = [w for w in self._workers if w.task is None]
            if not dry_run:
                for w in idle:
                    self._workers.remove(w)
                self.counts["recycled_idle"] += len(idle)
        rss = sum(read_statm_rss(w.proc.pid) or 0 for w in idle)
        if not dry_run:
            for w in idle:
                self._retire(w)
            self._poke()
        return len(idle), rss

    # -- the dispatcher --------------------------------------------------------------------
    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # already awake
            pass
        except OSError:
            pass

    def _start_worker(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child, self._initializer, self._initargs),
            name=f"memdiag-{self.name}-worker",
            daemon=True,
        )
        proc.start()
        child.close()
        entry = track(proc, role="pool-worker", group=self.name, kind="pool")
        self.counts["started_workers"] += 1
        return _Worker(proc, parent, entry)

    def _assign(self) -> None:
        """Give queued tasks to idle workers, starting workers up to the bound."""
        while True:
            with self._lock:
                if not self._pending:
                    return
                idle = next((w for w in self._workers if w.task is None), None)
                if idle is None and len(self._workers) >= self.max_workers:
                    return
                task = self._pending.popleft()
                if idle is not None:
                    idle.task = task  # claimed under the lock: recycle_idle will skip it
            if not task.running:
                if not task.future.set_running_or_notify_cancel():
                    if idle is not None:
                        idle.task = None
                    continue
                task.running = True
            worker = idle
            if worker is None:
                try:
                    worker = self._start_worker()
                except Exception as exc:  # cannot start a process: fail this task, keep the rest
                    task.future.set_exception(exc)
                    return
                worker.task = task
                with self._lock:
                    self._workers.append(worker)
            try:
                worker.conn.send((task.fn, task.args, task.kwargs))
            except Exception as exc:
                worker.task = None
                if isinstance(exc, (OSError, EOFError)):
                    # The worker is gone and never saw the task: it goes back to the queue.
                    with self._lock:
                        self._pending.appendleft(task)
                        self._workers.remove(worker)
                    self._retire(worker)
                else:  # the task itself does not pickle
                    task.future.set_exception(exc)

    def _run(self) -> None:
        try:
            while True:
                self._assign()
                with self._lock:
                    done = self._shutdown and not self._pending and all(w.task is None for w in self._workers)
                    workers = list(self._workers)
                if done:
                    break
                waitables: list[Any] = [self._wake_r]
                for w in workers:
                    waitables += [w.conn, w.proc.sentinel]
                for ready in wait(waitables, timeout=1.0):
                    if ready == self._wake_r:
                        os.read(self._wake_r, 4096)
                for w in workers:
                    self._collect(w)
        except Exception as exc:  # never die with tasks queued and nobody to say so
            log.error("memory-aware pool %s dispatcher failed: %r", self.name, exc)
            with self._lock:
                pending, self._pending = list(self._pending), deque()
            for t in pending:
                t.future.set_exception(exc)
        finally:
            with self._lock:
                workers, self._workers = list(self._workers), []
            for w in workers:
                self._retire(w)
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)

    def _collect(self, w: _Worker) -> None:
        """Take a finished task's result; recycle or drop the worker as needed."""
        task = w.task
        if task is not None and w.conn.poll():
            try:
                ok, value = w.conn.recv()
            except (EOFError, OSError):
                ok, value = False, None
            else:
                w.task = None
                w.tasks_done += 1
                if ok:
                    self.counts["completed"] += 1
                    task.future.set_result(value)
                else:
                    self.counts["failed"] += 1
                    task.future.set_exception(value)
                reason = self._recycle_reason(w)
                if reason is not None:
                    self.counts[f"recycled_{reason}"] += 1
                    with self._lock:
                        self._workers.remove(w)
                    self._retire(w)
                return
        if not w.proc.is_alive():
            with self._lock:
                if w not in self._workers:
                    return  # already retired (recycle_idle)
                self._workers.remove(w)
            if w.task is not None:
                self.counts["lost"] += 1
                w.task.future.set_exception(
                    WorkerLostError(f"pool {self.name}: worker {w.proc.pid} exited ({w.proc.exitcode}) during a task")
                )
                w.task = None
            self._retire(w)

    def _recycle_reason(self, w: _Worker) -> str | None:
        if self.max_tasks_per_worker is not None and w.tasks_done >= self.max_tasks_per_worker:
            return "tasks"
        if self.max_rss_bytes is not None:
            rss = read_statm_rss(w.proc.pid)
            if rss is not None and rss > self.max_rss_bytes:
                log.info("pool %s: worker %d at %d MiB passed its limit; recycling", self.name, w.proc.pid, rss // MIB)
                return "rss"
        return None

    def _retire(self, w: _Worker) -> None:
        """End a worker that holds no task: ask it to stop, then TERM/KILL if it lingers."""
        try:
            w.conn.send(None)
        except Exception:
            pass
        w.proc.join(2.0)
        if w.proc.exitcode is None:
            stop_entries([w.entry], grace=1.0, check_policy=False)
        w.entry.poll()
        registry.finish(w.entry)
        w.conn.close()


def pool_stats() -> list[dict[str, Any]]:
    """Stats of every live pool (for the ``processes`` report section)."""
    return [p.stats() for p in list(_POOLS)]


def recycle_idle_workers(dry_run: bool = False) -> tuple[int, int]:
    """Recycle the idle workers of every live pool; ``(workers, bytes)``."""
    n = b = 0
    for p in list(_POOLS):
        if not p._shutdown:
            c, r = p.recycle_idle(dry_run)
            n, b = n + c, b + r
    return n, b
