"""Process-wide registry of the things memdiag watches and can act on.

Caches, cleanup actions, extra pressure signals and extra sample collectors register
here, whether or not the monitor is running yet: a cache built at import time of the
host application is found by a monitor started later. Caches are held weakly, so
registering never keeps a cache alive.

The registry is deliberately dumb: it stores and lists. The monitor
(:mod:`memdiag.service`) decides when to read and when to act.
"""

from __future__ import annotations

import itertools
import os
import weakref
from _thread import allocate_lock
from collections.abc import Callable, Mapping

from ._record import field, record
from .errors import MemdiagError

# Neither typing nor threading at import (~7 ms of a command line's start): the lock is
# threading.Lock itself, the cache protocol is built on first use (module __getattr__).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    K = TypeVar("K")
    V = TypeVar("V")

__all__ = [
    "CleanupAction",
    "CleanupContext",
    "Keyed",
    "ManagedCache",
    "SignalReading",
    "add_subprocess_decorator",
    "add_walk_root",
    "caches",
    "cleanup_actions",
    "collectors",
    "discard_walk_root",
    "disown_fd",
    "lifecycle_hooks",
    "observers",
    "own_fd",
    "own_fds",
    "own_thread_prefix",
    "own_threads",
    "register_cache",
    "register_cleanup",
    "register_collector",
    "register_lifecycle",
    "register_observer",
    "register_section",
    "register_signal",
    "remove_subprocess_decorator",
    "sections",
    "set_monitor_provider",
    "shared_monitor",
    "signal_sources",
    "subprocess_decorators",
    "unregister_cache",
    "unregister_cleanup",
    "unregister_collector",
    "unregister_lifecycle",
    "unregister_observer",
    "unregister_section",
    "unregister_signal",
    "walk_roots",
]


def _managed_cache() -> type:
    from typing import Protocol, runtime_checkable

    @runtime_checkable
    class ManagedCache(Protocol):
        """What a cache must offer to be watched and shrunk by memdiag.

        ``metrics()`` must be cheap (O(1), no deep walk) and return at least ``entries``,
        ``bytes``, ``max_bytes`` and ``fill_ratio``. ``shrink(fraction)`` evicts about that
        fraction of the cache's bytes and returns the bytes it accounted as freed;
        ``clear()`` empties it and returns the same.
        """

        name: str

        def metrics(self) -> dict[str, Any]: ...

        def shrink(self, fraction: float) -> int: ...

        def clear(self) -> int: ...

    ManagedCache.__module__ = __name__
    return ManagedCache


if TYPE_CHECKING:
    ManagedCache = _managed_cache()


def __getattr__(name: str) -> Any:
    if name == "ManagedCache":  # built once, on first use
        globals()[name] = value = _managed_cache()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@record
class CleanupContext:
    """What a cleanup action is told about the run it is part of.

    Attributes:
        level: the pressure level that triggered the run ("ok", "warning", "critical");
            "manual" runs carry the current level.
        emergency: True when the run is forced or pressure is critical: actions may then
            do their stronger variant (clear instead of shrink, terminate instead of reap).
        dry_run: the action must only report what it would do, and change nothing.
        reason: "auto", "manual" or "forced".
        config: the configuration of the monitor running the ladder (rungs should read
            their settings from here rather than from a captured getter).
    """

    level: str
    emergency: bool
    dry_run: bool
    reason: str
    config: Any = None
    # What is growing, from the monitor's history and leak verdicts:
    # {"growth_elsewhere": bool, "detail": str}. With growth outside the caches (a leak),
    # healthy caches (high hit rate) are emptied last, after the rungs that may address it.
    hints: Any = None


# An action returns None, or a dict of facts: "freed_bytes" (its own accounting, e.g.
# a cache's bytes: reported as released_logical_bytes, the ladder measures the RSS it
# really freed itself), "detail" (short text), "count" (how many things it acted on),
# "would_free_bytes" in dry-run mode, and "scope": "children" when it released memory in
# other processes (then its freed_bytes, measured there, is the rung's figure).
CleanupFn = Callable[[CleanupContext], "Mapping[str, Any] | None"]


@record
class CleanupAction:
    """One rung of the cleanup ladder.

    Attributes:
        name: unique, stable name shown in reports ("caches", "gc", ...).
        fn: the action.
        order: rungs run in ascending order; built-ins use 10 (caches), 20 (gc),
            30 (malloc_trim), 40 (zombies), 50 (node_gc), 60 (owned children),
            100 (user handlers, the default).
        emergency_only: run only when the context is an emergency.
    """

    name: str
    fn: CleanupFn
    order: int = 100
    emergency_only: bool = False
    seq: int = field(default=0, compare=False)


@record
class SignalReading:
    """One pressure signal read from a sample.

    ``warning`` and ``critical`` are the enter levels; ``None`` means the signal never
    raises that level. ``value`` and the thresholds share one unit (``unit``).
    """

    signal: str
    value: float
    warning: float | None
    critical: float | None
    unit: str = "bytes"
    detail: str = ""


# A sample is a :class:`memdiag.sample.Sample`; the registry sits below the sampler (which
# reads it), so it names the type only in these comments.
SignalFn = Callable[["Any", "Any"], "list[SignalReading]"]  # (sample, config) -> readings
CollectorFn = Callable[[bool], "Any"]
SectionFn = Callable[["Any"], "Any"]
ObserverFn = Callable[["Any"], None]  # (sample) -> None
DecoratorFn = Callable[[list[dict[str, "Any"]]], None]
MonitorProvider = Callable[[], "Any"]

_lock = allocate_lock()


def _after_fork_in_child() -> None:
    # A thread of the parent may have held the lock at fork(): the child's copy would then
    # stay locked forever, and the monitor restarting in the child (a gunicorn worker) reads
    # the registry first thing. Registered at import, so before any handler that reads it.
    global _lock
    _lock = allocate_lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
_seq = itertools.count(1)


class Keyed:
    """One kind of registered thing: entries by key, replaced on re-registration.

    ``Keyed[K, V]`` in annotations (not a ``typing.Generic`` at run time: no typing import).

    Every kind shares the module's lock, so a snapshot is consistent and cheap. ``what``
    names the kind in error messages.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.entries: dict[K, V] = {}

    def __class_getitem__(cls, params: Any) -> type:
        return cls

    def add(self, key: K, value: V) -> None:
        with _lock:
            self.entries[key] = value

    def add_callable(self, key: K, fn: V) -> None:
        """Add ``fn`` under ``key`` after checking that it can be called."""
        if not callable(fn):
            raise TypeError(f"{self.what} {key!r}: fn must be callable")
        self.add(key, fn)

    def remove(self, key: K) -> None:
        """Remove ``key``; unknown keys are ignored."""
        with _lock:
            self.entries.pop(key, None)

    def snapshot(self) -> dict[K, V]:
        """A copy of the entries, in registration order."""
        with _lock:
            return dict(self.entries)


_CACHES: Keyed[int, weakref.ref[Any]] = Keyed("cache")
_CLEANUPS: Keyed[str, CleanupAction] = Keyed("cleanup action")
_SIGNALS: Keyed[str, SignalFn] = Keyed("signal source")
_COLLECTORS: Keyed[str, CollectorFn] = Keyed("collector")
_SECTIONS: Keyed[str, SectionFn] = Keyed("report section")
_OBSERVERS: Keyed[str, ObserverFn] = Keyed("sample observer")
_DECORATORS: Keyed[DecoratorFn, DecoratorFn] = Keyed("subprocess decorator")
_caches = _CACHES.entries  # the test fixtures hide and restore caches through it
_walk_roots: frozenset[int] = frozenset()
_monitor_provider: MonitorProvider | None = None


def register_cache(cache: ManagedCache) -> None:
    """Watch ``cache`` (held weakly) for pressure, reports and the cleanup ladder."""
    key = id(cache)

    def _gone(_ref: weakref.ref[Any], key: int = key) -> None:
        with _lock:
            if _caches.get(key) is _ref:
                del _caches[key]

    _CACHES.add(key, weakref.ref(cache, _gone))


def unregister_cache(cache: ManagedCache) -> None:
    """Stop watching ``cache``; unknown caches are ignored."""
    with _lock:
        ref = _caches.get(id(cache))
        if ref is not None and ref() is cache:
            del _caches[id(cache)]


def caches() -> list[ManagedCache]:
    """The live registered caches, in registration order."""
    return [c for c in (r() for r in _CACHES.snapshot().values()) if c is not None]


def register_cleanup(name: str, fn: CleanupFn, *, order: int = 100, emergency_only: bool = False) -> CleanupAction:
    """Add (or replace, by name) a rung of the cleanup ladder.

    Args:
        name: unique name shown in cleanup reports.
        fn: called with a :class:`CleanupContext`; must honour ``dry_run``.
        order: position on the ladder; lower runs first (see :class:`CleanupAction`).
        emergency_only: only run on forced cleanups or critical pressure.
    """
    if not name or not isinstance(name, str):
        raise ValueError("cleanup action name must be a non-empty string")
    if not callable(fn):
        raise TypeError(f"cleanup action {name!r}: fn must be callable")
    action = CleanupAction(name, fn, int(order), bool(emergency_only), next(_seq))
    _CLEANUPS.add(name, action)
    return action


def unregister_cleanup(name: str) -> None:
    """Remove a cleanup rung by name; unknown names are ignored."""
    _CLEANUPS.remove(name)


def cleanup_actions() -> list[CleanupAction]:
    """The ladder, cheapest (lowest order) first."""
    return sorted(_CLEANUPS.snapshot().values(), key=lambda a: (a.order, a.seq))


def register_signal(name: str, fn: SignalFn) -> None:
    """Add a pressure signal source: ``fn(sample, config) -> [SignalReading, ...]``."""
    _SIGNALS.add_callable(name, fn)


def unregister_signal(name: str) -> None:
    """Remove a pressure signal source by name."""
    _SIGNALS.remove(name)


def signal_sources() -> dict[str, SignalFn]:
    """A copy of the registered signal sources."""
    return _SIGNALS.snapshot()


def register_collector(name: str, fn: CollectorFn) -> None:
    """Add a sample collector: ``fn(profile_tick) -> JSON-able data or None``.

    Its result lands in ``Sample.extra[name]``. It runs on the monitor thread every tick
    (``profile_tick`` False) and on profile ticks (True): keep the cheap path cheap.
    """
    _COLLECTORS.add_callable(name, fn)


def unregister_collector(name: str) -> None:
    """Remove a sample collector by name."""
    _COLLECTORS.remove(name)


def collectors() -> dict[str, CollectorFn]:
    """A copy of the registered collectors."""
    return _COLLECTORS.snapshot()


def register_section(name: str, fn: SectionFn) -> None:
    """Add a section to the diagnostics report: ``fn(diagnostics) -> JSON-able data``.

    ``fn`` gets the :class:`~memdiag.service.MemoryDiagnostics` instance; its result
    appears as ``report[name]``. It must be quick and must not raise (errors are shown
    as ``{"error": ...}`` in its place).
    """
    _SECTIONS.add_callable(name, fn)


def unregister_section(name: str) -> None:
    """Remove a diagnostics report section by name."""
    _SECTIONS.remove(name)


def sections() -> dict[str, SectionFn]:
    """A copy of the registered report sections."""
    return _SECTIONS.snapshot()


def register_observer(name: str, fn: ObserverFn) -> None:
    """Add a sample observer: ``fn(sample)`` after every tick of every monitor.

    It runs on the monitor thread once the sample is in the history; it must be quick and
    must not raise (errors are logged at debug level and ignored). Two monitors in one
    process each call it with their own samples.
    """
    _OBSERVERS.add_callable(name, fn)


def unregister_observer(name: str) -> None:
    """Remove a sample observer by name."""
    _OBSERVERS.remove(name)


def observers() -> dict[str, ObserverFn]:
    """A copy of the registered sample observers."""
    return _OBSERVERS.snapshot()


def add_subprocess_decorator(fn: DecoratorFn) -> None:
    """Let a part add fields (owned, role, Node.js heap) to ``subprocesses()``.

    ``fn(items)`` gets the list of subprocess dicts and changes them in place; adding
    the same function twice keeps one.
    """
    _DECORATORS.add_callable(fn, fn)


def remove_subprocess_decorator(fn: DecoratorFn) -> None:
    """Remove a subprocess decorator; unknown ones are ignored."""
    _DECORATORS.remove(fn)


def subprocess_decorators() -> list[DecoratorFn]:
    """The registered subprocess decorators, in registration order."""
    return list(_DECORATORS.snapshot())


def set_monitor_provider(fn: MonitorProvider | None) -> None:
    """Name the function that returns the process's shared monitor.

    :mod:`memdiag.service` sets it when it is imported; the parts below it (leak
    detection) ask :func:`shared_monitor` instead of importing the service.
    """
    global _monitor_provider
    _monitor_provider = fn


def shared_monitor() -> Any:
    """The shared :class:`~memdiag.service.MemoryDiagnostics` (created if needed).

    Raises:
        MemdiagError: no monitor class is loaded yet (nothing has imported
            :mod:`memdiag.service`: call ``memdiag.start()`` or pass the instance).
    """
    provider = _monitor_provider
    if provider is None:
        raise MemdiagError("no memdiag monitor exists yet: call memdiag.start() or pass the instance")
    return provider()


def add_walk_root(pid: int) -> None:
    """Have every monitor's descendant walk also follow ``pid`` and its descendants.

    For processes the service owns that are not its descendants (a tracked process that
    was started elsewhere, or re-parented away). A root that no longer exists is skipped
    at no cost beyond one failed open; remove it with :func:`discard_walk_root`.
    """
    global _walk_roots
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise ValueError(f"walk root must be a positive PID, got {pid!r}")
    with _lock:
        _walk_roots = _walk_roots | {pid}


def discard_walk_root(pid: int) -> None:
    """Stop following ``pid`` (unknown PIDs are ignored)."""
    global _walk_roots
    with _lock:
        _walk_roots = _walk_roots - {pid}


def walk_roots() -> frozenset[int]:
    """The extra roots every descendant walk follows."""
    return _walk_roots  # replaced, never mutated: readable without the lock


# -- service lifecycle and memdiag's own resources ------------------------------------
LifecycleFn = Callable[["Any"], None]
_LIFECYCLE: Keyed[str, tuple[LifecycleFn, LifecycleFn]] = Keyed("lifecycle hook")
_own_fds: frozenset[int] = frozenset()
_own_thread_prefixes: tuple[str, ...] = ()


def register_lifecycle(name: str, on_start: LifecycleFn, on_stop: LifecycleFn) -> None:
    """Run ``on_start(diag)`` after a monitor starts (also in a forked child, where it
    restarts) and ``on_stop(diag)`` when it stops. Exceptions are logged and ignored: a
    surface that cannot start (the control channel) never stops the monitor."""
    if not (callable(on_start) and callable(on_stop)):
        raise TypeError(f"lifecycle hook {name!r}: on_start and on_stop must be callable")
    _LIFECYCLE.add(name, (on_start, on_stop))


def unregister_lifecycle(name: str) -> None:
    """Remove a lifecycle hook by name; unknown names are ignored."""
    _LIFECYCLE.remove(name)


def lifecycle_hooks() -> dict[str, tuple[LifecycleFn, LifecycleFn]]:
    """A copy of the registered lifecycle hooks."""
    return _LIFECYCLE.snapshot()


def own_fd(fd: int) -> None:
    """Mark ``fd`` as memdiag's own (a listening socket): not counted as the app's fds."""
    global _own_fds
    with _lock:
        _own_fds = _own_fds | {fd}


def disown_fd(fd: int) -> None:
    """Forget an fd marked with :func:`own_fd` (before closing it)."""
    global _own_fds
    with _lock:
        _own_fds = _own_fds - {fd}


def own_fds() -> frozenset[int]:
    """memdiag's own long-lived descriptors."""
    return _own_fds


def own_thread_prefix(prefix: str) -> None:
    """Mark threads whose name starts with ``prefix`` as memdiag's own (the control
    channel's server and workers): not counted as the app's threads."""
    global _own_thread_prefixes
    with _lock:
        if prefix not in _own_thread_prefixes:
            _own_thread_prefixes = (*_own_thread_prefixes, prefix)


def own_threads() -> int:
    """How many live threads are memdiag's own (by the prefixes marked)."""
    prefixes = _own_thread_prefixes
    if not prefixes:
        return 0
    import threading

    return sum(1 for t in threading.enumerate() if t.name.startswith(prefixes))
