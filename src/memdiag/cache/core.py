"""SharedPromptCache: a memory-bounded, thread-safe TTL cache for prompts and responses.

Read ``docs/cache.md`` for the user's guide; this module's comments say why the code
is the way it is.

Concurrency model, in short:

* One ``threading.Lock`` per cache guards all state. Every locked section is O(1)
  (amortised) and never runs user code: values are serialised before the lock is
  taken and unpickled after it is released; loaders always run outside it. What the
  cache drops under its lock (``str``/``bytes`` keys and values, entry lists) has no
  finaliser and cannot be weakly referenced, so releasing it runs no Python code.
* Re-entrancy: a garbage collection, a signal handler or a ``__hash__`` can run
  arbitrary Python code *while this thread holds the lock* (at any allocation or
  bytecode boundary), and that code may call the cache again. A plain lock would
  deadlock; an ``RLock`` would let the inner call see a half-done update. So the
  lock is taken with a non-blocking attempt first; only when that fails does the
  cache look at the current thread's stack (no cost on the uncontended path): if a
  frame of one of its own locked sections on this very cache is there, the call is
  re-entrant and takes a safe path instead of waiting - a read answers "miss"
  (always a legal answer for a cache), a write is queued and applied, in order, by
  the next locked section before it does anything else.
* The built-in policies' inlined paths (``fastpaths.py``) answer most reads without
  the lock, relying on the GIL's atomicity of single C calls on the hot table; locked
  sections therefore never iterate a hot table across bytecodes (the policies' ``items()``
  and aging take snapshots). The module docstring there has the argument.
* ``get_or_set``/``aget_or_set`` coalesce concurrent misses of one key into a single
  loader call (single-flight). Waiting threads block on a ``threading.Event``;
  waiting coroutines await an ``asyncio`` future resolved thread-safely on their own
  loop, so a coroutine never blocks its event loop while another thread or
  coroutine loads. The cache lock is never held while waiting or loading.
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .. import registry
from . import sweeper
from .policies import EvictionPolicy, make_policy
from .sizing import ENTRY_OVERHEAD, decode_value, encode_value

if TYPE_CHECKING:
    import asyncio

__all__ = ["SharedPromptCache"]

T = TypeVar("T")

_monotonic = time.monotonic
_get_ident = threading.get_ident
_getsizeof = sys.getsizeof

DEFAULT_MAX_BYTES = 128 * 1024 * 1024
DEFAULT_CLEANUP_INTERVAL = 60.0
DEFAULT_PRESSURE_THRESHOLD = 0.8
_CHUNK = 2048  # entries handled per lock hold by sweeps and shrinks
_CAUSES = ("size", "ttl", "pressure", "manual")
_NO_LIMIT = sys.maxsize
# Bits of an entry's FLAGS slot (policies.FLAGS): 0 is the fast path of get().
_PICKLED = 1
_EXPIRES = 2
_NO_HOT_TABLE: OrderedDict[str, Any] = OrderedDict()  # always empty


def _check_positive(name: str, value: Any, *, allow_none: bool, integer: bool) -> Any:
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} must not be None")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if integer and not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _check_arguments(
    max_bytes: Any, max_entries: Any, ttl: Any, cleanup_interval: Any, name: Any, pressure_threshold: Any
) -> str:
    """Validate the constructor's arguments (ValueError/TypeError naming the bad one); the name."""
    _check_positive("max_bytes", max_bytes, allow_none=False, integer=True)
    _check_positive("max_entries", max_entries, allow_none=True, integer=True)
    _check_positive("ttl", ttl, allow_none=True, integer=False)
    _check_positive("cleanup_interval", cleanup_interval, allow_none=False, integer=False)
    if pressure_threshold is not None:
        if isinstance(pressure_threshold, bool) or not isinstance(pressure_threshold, (int, float)):
            raise TypeError("pressure_threshold must be a number")
        if not 0.0 < pressure_threshold <= 1.0:
            raise ValueError(f"pressure_threshold must be in (0, 1], got {pressure_threshold!r}")
    if name is None:
        name = f"cache-{next(_seq)}"
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")
    return name


def _check_cause(cause: str) -> str:
    if cause not in ("pressure", "manual"):
        raise ValueError(f"cause must be 'pressure' or 'manual', got {cause!r}")
    return cause


def _config_threshold() -> float:
    try:
        from memdiag.config import active_config  # the lead's module; may not exist yet

        return float(active_config().cache_pressure_threshold)
    except Exception:  # no config module yet, or no active config: the spec's default
        return DEFAULT_PRESSURE_THRESHOLD


class _Flight:
    """One in-progress load of one key: the single-flight rendezvous."""

    __slots__ = (
        "async_waiters",
        "done",
        "event",
        "exc",
        "is_async",
        "owner",
        "pickled",
        "stale",
        "stored",
        "task",
        "value",
    )

    def __init__(self, owner: int, is_async: bool) -> None:
        self.owner = owner
        self.is_async = is_async
        self.event: threading.Event | None = None
        self.async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = []
        self.done = False
        self.stale = False
        self.exc: BaseException | None = None
        self.value: Any = None
        self.stored: Any = None
        self.pickled = False
        self.task: Any = None

    def outcome(self) -> Any:
        """The loaded value (a fresh copy if it was serialised), or raise the error."""
        if self.exc is not None:
            raise self.exc
        if self.pickled:
            return decode_value(self.stored)
        return self.value


def _resolve(fut: asyncio.Future[Any], flight: _Flight) -> None:
    if fut.done():  # the waiting coroutine was cancelled
        return
    try:
        fut.set_result(flight.outcome())
    except BaseException as exc:  # the loader's error, or unpickling failed
        fut.set_exception(exc)


_ALL: weakref.WeakSet[SharedPromptCache] = weakref.WeakSet()
_seq = iter(range(1, sys.maxsize))


class SharedPromptCache:
    """A memory-bounded, thread-safe TTL cache with metrics and smart eviction.

    Keys are ``str``. Values may be ``str`` and ``bytes`` (stored as they are,
    charged their exact size), numbers and ``None``, or anything picklable - dicts,
    lists, dataclasses - which is stored serialised, charged its exact serialised
    size, and returned as a fresh copy by every read. Each entry is also charged its
    key and a fixed bookkeeping overhead (:data:`memdiag.cache.sizing.ENTRY_OVERHEAD`),
    so the memory the cache really holds stays close to ``max_bytes`` whatever is
    stored.

    Every cache registers itself (weakly) with :mod:`memdiag.registry`, so a running
    :class:`~memdiag.MemoryDiagnostics` sees its fill as a pressure signal, lists its
    :meth:`metrics` in profiles, and shrinks or clears it in a cleanup.

    Example:
        >>> cache = SharedPromptCache(max_bytes=16 * 1024 * 1024, ttl=3600, name="llm")
        >>> cache.set("prompt:42", "an answer")
        True
        >>> cache.get("prompt:42")
        'an answer'
        >>> cache.get_or_set("prompt:43", lambda: {"text": "hi"})
        {'text': 'hi'}

    Args:
        max_bytes: bound on the bytes charged for all entries (default 128 MiB). An
            item charged more than this is not stored (counted in ``rejections``).
        max_entries: optional bound on the number of entries.
        ttl: default time to live of an entry in seconds; None (default) means
            entries do not expire unless ``set`` gives them a ttl.
        cleanup_interval: seconds between sweeps that free expired entries (default
            60). Sweeps run on one shared daemon thread, started the first time any
            cache stores an entry that can expire.
        name: shown in metrics and reports (default ``"cache-N"``).
        policy: ``"tinylfu"`` (default, frequency-aware W-TinyLFU), ``"lru"``, or an
            :class:`~memdiag.cache.EvictionPolicy` instance not used by another cache.
        pressure_threshold: fill ratio at which ``metrics()["memory_pressure"]`` turns
            true; None (default) reads ``cache_pressure_threshold`` from the active
            memdiag configuration (0.8 unless configured).

    Raises:
        ValueError: an argument is out of range (the message names it).
        TypeError: an argument has the wrong type.
    """

    # Slots, not a __dict__: the hot paths read a dozen attributes per call, and with
    # this many attributes CPython 3.11 would keep them in a plain dict and look each
    # one up by hash (LOAD_ATTR_WITH_HINT) instead of at a fixed offset.
    __slots__ = (
        "__weakref__",
        "_absent",
        "_bytes",
        "_coalesced",
        "_count",
        "_created",
        "_deletes",
        "_evicted_size",
        "_evictions",
        "_fixed",
        "_hits",
        "_hot_get",
        "_hot_mte",
        "_inflight",
        "_last_cleanup",
        "_limit",
        "_load_errors",
        "_loads",
        "_lock",
        "_lookup",
        "_lookup_cold",
        "_max_entries",
        "_misses",
        "_next_sweep",
        "_pending",
        "_policy",
        "_pressure_threshold",
        "_put",
        "_reentrant",
        "_rejections",
        "_updates",
        "_victim",
        "_watched",
        "cleanup_interval",
        "max_bytes",
        "max_entries",
        "name",
        "ttl",
    )

    _instance: ClassVar[SharedPromptCache | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_entries: int | None = None,
        ttl: float | None = None,
        cleanup_interval: float = DEFAULT_CLEANUP_INTERVAL,
        name: str | None = None,
        *,
        policy: str | EvictionPolicy | None = "tinylfu",
        pressure_threshold: float | None = None,
    ) -> None:
        name = _check_arguments(max_bytes, max_entries, ttl, cleanup_interval, name, pressure_threshold)
        self.name = name
        self.max_bytes = int(max_bytes)
        self.max_entries = max_entries
        self.ttl = float(ttl) if ttl is not None else None
        self.cleanup_interval = float(cleanup_interval)
        self._pressure_threshold = pressure_threshold
        self._max_entries = max_entries if max_entries is not None else _NO_LIMIT
        self._lock = threading.Lock()
        self._init_policy(policy, max_entries)
        self._init_counters()
        if type(self) is SharedPromptCache:
            # The built-in policies' hot paths, inlined (fastpaths.py): same state and
            # behaviour, a subclass with get() and set() specialised for the policy.
            fast = FAST_PATHS.get(type(self._policy))
            if fast is not None:
                self.__class__ = fast
        _ALL.add(self)
        registry.register_cache(self)

    def _init_policy(self, policy: str | EvictionPolicy | None, max_entries: int | None) -> None:
        self._policy = make_policy(policy)
        self._policy.bound_bytes(self.max_bytes)
        self._policy.bind(max_entries)
        # The policy's own structures (the TinyLFU sketch) count against max_bytes: the
        # entries get what is left, _limit.
        self._fixed = 0
        self._limit = self.max_bytes
        self._account_policy()
        self._bind_policy()

    def _init_counters(self) -> None:
        self._count = 0
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._updates = 0
        self._deletes = 0
        self._rejections = 0
        self._evictions = dict.fromkeys(_CAUSES, 0)
        self._evicted_size = 0  # hot counter, folded into _evictions["size"] on read
        self._loads = 0
        self._load_errors = 0
        self._coalesced = 0
        self._reentrant = 0
        self._pending: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._inflight: dict[str, _Flight] = {}
        self._absent: str | None = None  # see fastpaths.py
        self._watched = False
        self._next_sweep = _monotonic() + self.cleanup_interval
        self._last_cleanup: float | None = None
        self._created = time.time()

    def _account_policy(self) -> None:
        """Re-read the policy's memory_bytes() (it may grow with the entry count)."""
        fixed = self._policy.memory_bytes()
        if fixed != self._fixed:
            self._fixed = fixed
            self._limit = self.max_bytes - fixed

    def _bind_policy(self) -> None:
        """Cache the policy's hot bound methods (again after clear() swaps its tables)."""
        policy = self._policy
        hot = policy.hot_table()
        self._lookup_cold: Callable[[str], Any]
        if hot is None:
            hot = _NO_HOT_TABLE
            self._lookup_cold = policy.lookup
        else:
            self._lookup_cold = policy.lookup_cold
        self._hot_get = hot.get
        self._hot_mte = hot.move_to_end
        self._lookup = policy.lookup
        self._put = policy.put
        self._victim = policy.victim

    # -- the shared instance --------------------------------------------------------

    @classmethod
    def get_instance(cls, **kwargs: Any) -> SharedPromptCache:
        """The process-wide shared cache, created on first use.

        Args:
            **kwargs: constructor arguments, used only by the call that creates the
                instance (its default name is ``"shared-prompt-cache"``).

        Raises:
            ValueError: arguments were given but the instance already exists.
        """
        inst = cls._instance
        if inst is not None and not kwargs:
            return inst
        with cls._instance_lock:
            if cls._instance is None:
                kwargs.setdefault("name", "shared-prompt-cache")
                cls._instance = cls(**kwargs)
            elif kwargs:
                raise ValueError(
                    "the shared SharedPromptCache already exists; constructor arguments "
                    "only apply to the first get_instance() call"
                )
            return cls._instance

    @classmethod
    def reset_instance(cls) -> None:
        """Drop the shared instance (after clearing it); the next call makes a new one."""
        with cls._instance_lock:
            inst, cls._instance = cls._instance, None
        if inst is not None:
            inst.clear()
            registry.unregister_cache(inst)

    # -- locking ----------------------------------------------------------------------

    def _acquire(self) -> bool:
        """Slow path of taking the lock: True once held, False for a re-entrant call."""
        codes = _LOCKING_CODES
        f: FrameType | None = sys._getframe(2)
        while f is not None:
            if f.f_code in codes:
                loc = f.f_locals
                if loc.get("self") is self and loc.get("locked"):
                    self._reentrant += 1
                    return False
            f = f.f_back
        self._lock.acquire()
        return True

    def _run_pending(self) -> None:
        """Under the lock: apply, in order, what re-entrant calls queued (finalisers run
        by a collection inside a locked section). Linear in the queue's length: a front
        pop per item made a long queue quadratic (the stress once queued 670k items and
        took minutes to drain). What the items queue meanwhile is applied too."""
        pending = self._pending
        i = 0
        try:
            while i < len(pending):
                fn, args = pending[i]
                i += 1
                fn(*args)
                if i >= 1024:
                    del pending[:i]
                    i = 0
        finally:
            del pending[:i]

    # -- reads --------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value cached under ``key``, or ``default``.

        An expired entry is never returned (it is freed on the spot). Values stored
        serialised come back as a fresh copy.
        """
        # The policy-interface path (custom policies and subclasses of the built-in
        # ones); fastpaths.py has the built-in policies' inlined versions.
        lock = self._lock
        locked = lock.acquire() if not lock.locked() else self._acquire()
        if not locked:
            self._misses += 1
            return default
        try:
            if self._pending:
                self._run_pending()
            # Bound methods through locals: `self._hot_get(key)` would compile to a
            # LOAD_METHOD that CPython 3.11 cannot specialise for an instance slot.
            hot_get = self._hot_get
            e = hot_get(key)
            if e is not None:
                hot_mte = self._hot_mte
                hot_mte(key)
                e[4] += 1  # FREQ
            else:
                lookup_cold = self._lookup_cold
                e = lookup_cold(key)
                if e is None:
                    self._misses += 1
                    return default
            if not e[3]:  # neither expiring nor serialised: the common case
                self._hits += 1
                return e[0]
            if not self._flagged_hit(key, e):
                return default
        finally:
            lock.release()
        locked = False
        return decode_value(e[0]) if e[3] & _PICKLED else e[0]

    def _flagged_hit(self, key: str, e: Any) -> bool:
        """Under the lock: count a read of an expiring or serialised entry (False: expired)."""
        if e[3] & _EXPIRES and e[2] <= _monotonic():
            self._drop_expired(key)
            self._misses += 1
            return False
        self._hits += 1
        return True

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` holds an unexpired entry (does not count as a lookup)."""
        lock = self._lock
        locked = lock.acquire() if not lock.locked() else self._acquire()
        if not locked:
            return False
        try:
            if self._pending:
                self._run_pending()
            e = self._policy.peek(key)  # type: ignore[arg-type]
            return e is not None and not (e[2] and e[2] <= _monotonic())
        finally:
            lock.release()

    def __len__(self) -> int:
        """Entries held, including expired ones the sweep has not freed yet."""
        return self._count

    def __repr__(self) -> str:
        return (
            f"<SharedPromptCache {self.name!r} policy={self._policy.name} "
            f"entries={self._count} bytes={self._bytes}/{self.max_bytes}>"
        )

    # -- writes ---------------------------------------------------------------------------

    def _make_entry(self, key: Any, value: Any, ttl: float | None) -> list[Any]:
        if type(key) is not str:
            raise TypeError(f"cache keys must be str, got {type(key).__name__}")
        if ttl is None:
            ttl = self.ttl
        else:
            _check_positive("ttl", ttl, allow_none=False, integer=False)
        stored, vsize, pickled = encode_value(value)
        flags = _PICKLED if pickled else 0
        if ttl:
            flags |= _EXPIRES
        expires = _monotonic() + ttl if ttl else 0.0
        return [stored, vsize + _getsizeof(key) + ENTRY_OVERHEAD, expires, flags, 0, 0]

    def set(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` under ``key``.

        Args:
            key: a ``str``.
            value: ``str``/``bytes``/number/``None``, or any picklable value.
            ttl: seconds this entry lives; None uses the cache's default ``ttl``.

        Returns:
            True if the value was stored; False if it was refused because it alone
            is charged more than ``max_bytes`` (counted in ``rejections``). A refused
            value still removes the key's old value.

        Raises:
            TypeError: ``key`` is not a str, or the value cannot be stored.
            ValueError: ``ttl`` is not > 0.
        """
        entry = self._make_entry(key, value, ttl)
        lock = self._lock
        locked = lock.acquire() if not lock.locked() else self._acquire()
        if not locked:
            self._pending.append((self._store, (key, entry)))
            return True
        try:
            if self._pending:
                self._run_pending()
            return self._store(key, entry)
        finally:
            lock.release()

    def _store(self, key: str, entry: Any) -> bool:
        """Insert or replace under the lock, then evict down to the bounds."""
        if self._inflight:
            flight = self._inflight.get(key)
            if flight is not None:
                flight.stale = True  # a newer explicit write wins over a load in progress
        size = entry[1]
        if size > self._limit:
            self._rejections += 1
            old = self._policy.remove(key)
            if old is not None:
                self._count -= 1
                self._bytes -= old[1]
                self._evicted_size += 1
            return False
        self._absent = None  # fastpaths.py: every insertion clears the hint
        old = self._put(key, entry)
        if old is None:
            self._count += 1
            self._bytes += size
            self._account_policy()
        else:
            self._updates += 1
            self._bytes += size - old[1]
        if entry[2] and not self._watched:
            self._watched = True
            sweeper.watch(self)
        if self._bytes > self._limit or self._count > self._max_entries:
            self._evict()
        return True

    def _evict(self) -> None:
        max_bytes, max_entries, victim = self._limit, self._max_entries, self._victim
        n = 0
        while (self._bytes > max_bytes or self._count > max_entries) and self._count:
            e = victim()
            self._bytes -= e[1]
            self._count -= 1
            n += 1
        self._evicted_size += n

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was cached.

        A load of ``key`` in progress (``get_or_set``) will not store its result.
        """
        lock = self._lock
        locked = lock.acquire() if not lock.locked() else self._acquire()
        if not locked:
            present = self._policy.peek(key) is not None
            self._pending.append((self._delete_locked, (key,)))
            return present
        try:
            if self._pending:
                self._run_pending()
            return self._delete_locked(key)
        finally:
            lock.release()

    def _delete_locked(self, key: str) -> bool:
        if self._inflight:
            flight = self._inflight.get(key)
            if flight is not None:
                flight.stale = True
        e = self._policy.remove(key)
        if e is None:
            return False
        self._count -= 1
        self._bytes -= e[1]
        self._deletes += 1
        return True

    def _drop_expired(self, key: str) -> None:
        e = self._policy.remove(key)
        if e is not None:
            self._count -= 1
            self._bytes -= e[1]
            self._evictions["ttl"] += 1

    def clear(self, *, cause: str = "manual") -> int:
        """Remove every entry; return the bytes that were charged for them.

        Args:
            cause: eviction cause to count them under: ``"manual"`` (default) or
                ``"pressure"`` (the memdiag cleanup ladder passes this).
        """
        _check_cause(cause)
        lock = self._lock
        locked = lock.acquire() if not lock.locked() else self._acquire()
        if not locked:
            self._pending.append((self._clear_locked, (cause,)))
            return 0
        try:
            if self._pending:
                self._run_pending()
            freed, old = self._clear_locked(cause)
        finally:
            lock.release()
        del old  # the tables are freed here, outside the lock
        return freed

    def _clear_locked(self, cause: str) -> tuple[int, object]:
        old = self._policy.clear()
        self._bind_policy()
        freed = self._bytes
        self._evictions[cause] += self._count
        self._count = 0
        self._bytes = 0
        for flight in self._inflight.values():
            flight.stale = True
        return freed, old

    def shrink(self, fraction: float, *, cause: str = "pressure") -> int:
        """Evict, coldest first, about ``fraction`` of the bytes held.

        Args:
            fraction: share of the current bytes to free, in [0, 1].
            cause: eviction cause to count them under: ``"pressure"`` (default, what
                the memdiag cleanup ladder does) or ``"manual"``.

        Returns:
            The bytes charged for the evicted entries.
        """
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise TypeError(f"fraction must be a number, got {type(fraction).__name__}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
        _check_cause(cause)
        lock = self._lock
        locked = lock.acquire() if not lock.locked() else self._acquire()
        if not locked:
            self._pending.append((self._shrink_locked, (None, fraction, cause, _NO_LIMIT)))
            return 0
        try:
            if self._pending:
                self._run_pending()
            target = int(self._bytes * (1.0 - fraction))
            budget = self._count  # never loop forever behind concurrent writers
            freed, budget = self._shrink_locked(target, fraction, cause, budget)
        finally:
            lock.release()
        locked = False
        while budget > 0 and self._bytes > target:
            locked = lock.acquire() if not lock.locked() else self._acquire()
            if not locked:
                break
            try:
                if self._pending:
                    self._run_pending()
                more, budget = self._shrink_locked(target, fraction, cause, budget)
            finally:
                lock.release()
            locked = False
            if not more:
                break
            freed += more
        return freed

    def _shrink_locked(self, target: int | None, fraction: float, cause: str, budget: int) -> tuple[int, int]:
        if target is None:
            target = int(self._bytes * (1.0 - fraction))
        policy = self._policy
        freed = n = 0
        while self._bytes > target and self._count and n < _CHUNK and budget > 0:
            e = policy.victim()
            self._bytes -= e[1]
            self._count -= 1
            freed += e[1]
            n += 1
            budget -= 1
        self._evictions[cause] += n
        return freed, budget

    def expire(self) -> int:
        """Free every expired entry now (the periodic sweep calls this); return how many.

        Works in chunks, releasing the lock between them, so readers and writers are
        never held up for long by a big cache.
        """
        now = _monotonic()
        lock = self._lock
        locked = lock.acquire() if not lock.locked() else self._acquire()
        if not locked:
            return 0
        try:
            if self._pending:
                self._run_pending()
            keys = self._policy_keys() if self._watched else []
        finally:
            lock.release()
        locked = False
        removed = 0
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            locked = lock.acquire() if not lock.locked() else self._acquire()
            if not locked:
                break
            try:
                if self._pending:
                    self._run_pending()
                peek = self._policy.peek
                for k in chunk:
                    e = peek(k)
                    if e is not None and e[2] and e[2] <= now:
                        self._drop_expired(k)
                        removed += 1
            finally:
                lock.release()
            locked = False
        del keys
        self._last_cleanup = time.time()
        self._next_sweep = _monotonic() + self.cleanup_interval
        return removed

    def _policy_keys(self) -> list[str]:
        return [k for k, _e in self._policy.items()]

    # -- read-through with single-flight ---------------------------------------------

    def _begin_load(self, key: str, is_async: bool) -> tuple[bool, Any, _Flight | None]:
        """Under the lock: (True, value, None) on a hit; else (False, leader?, flight)."""
        e = self._lookup(key)
        if e is not None:
            exp = e[2]
            if exp and exp <= _monotonic():
                self._drop_expired(key)
            else:
                self._hits += 1
                return True, e, None
        self._misses += 1
        flight = self._inflight.get(key)
        if flight is None:
            flight = _Flight(_get_ident(), is_async)
            self._inflight[key] = flight
            return False, True, flight
        self._coalesced += 1
        return False, False, flight

    def get_or_set(self, key: str, loader: Callable[[], T], ttl: float | None = None) -> T:
        """Return the cached value of ``key``, loading and storing it on a miss.

        Concurrent misses of the same key call ``loader`` once (single-flight): the
        other callers wait for its result, or its exception, which is raised in each
        of them (and nothing is cached). The loader runs without any cache lock held.
        A ``delete``/``set``/``clear`` of the key while it loads keeps the loaded
        value out of the cache (it may be stale); callers still receive it.

        Args:
            key: a ``str``.
            loader: called with no argument on a miss.
            ttl: time to live of the stored value (default: the cache's ``ttl``).

        Raises:
            RuntimeError: ``loader`` asked for the very key it is loading.
        """
        if type(key) is not str:
            raise TypeError(f"cache keys must be str, got {type(key).__name__}")
        if ttl is not None:
            _check_positive("ttl", ttl, allow_none=False, integer=False)
        lock = self._lock
        locked = lock.acquire() if not lock.locked() else self._acquire()
        if not locked:
            # Re-entrant (from a finaliser inside a locked section): load, don't cache.
            self._misses += 1
            return loader()
        try:
            if self._pending:
                self._run_pending()
            hit, what, flight = self._begin_load(key, False)
        finally:
            lock.release()
        locked = False
        if hit:
            return decode_value(what[0]) if what[3] & _PICKLED else what[0]
        assert flight is not None
        if not what:  # another caller is loading this key
            if flight.owner == _get_ident():
                if flight.is_async:
                    # Led by a coroutine of this thread's event loop: waiting would
                    # block that loop forever. Load without caching instead.
                    return loader()
                raise RuntimeError(f"get_or_set({key!r}): the loader asked for its own key")
            return self._wait(flight)
        try:
            value = loader()
        except BaseException as exc:
            self._finish(key, flight, None, exc, ttl)
            raise
        self._finish(key, flight, value, None, ttl)
        return value

    def _wait(self, flight: _Flight) -> Any:
        lock = self._lock
        locked = lock.acquire() if not lock.locked() else self._acquire()
        if not locked:
            raise RuntimeError("re-entrant wait on a cache load")
        try:
            event = flight.event
            if event is None and not flight.done:
                event = flight.event = threading.Event()
        finally:
            lock.release()
        locked = False
        if event is not None:
            event.wait()
        return flight.outcome()

    def _finish(
        self,
        key: str,
        flight: _Flight,
        value: Any,
        exc: BaseException | None,
        ttl: float | None,
    ) -> None:
        """End a load: store the value (unless stale) and wake every waiter."""
        entry = None
        if exc is None:
            try:
                entry = self._make_entry(key, value, ttl)
            except TypeError:
                entry = None  # unstorable: still handed to every waiter, uncached
        lock = self._lock
        locked = lock.acquire() if not lock.locked() else self._acquire()
        if locked:
            try:
                if self._pending:
                    self._run_pending()
                if self._inflight.get(key) is flight:
                    del self._inflight[key]
                self._loads += 1
                if exc is not None:
                    self._load_errors += 1
                elif entry is None:
                    self._rejections += 1
                elif not flight.stale:
                    self._store(key, entry)
                flight.exc = exc
                flight.value = value
                if entry is not None and entry[3] & _PICKLED:
                    flight.stored, flight.pickled = entry[0], True
                flight.done = True
                event, waiters = flight.event, flight.async_waiters
                flight.async_waiters = []
            finally:
                lock.release()
            locked = False
        else:  # re-entrant: settle the flight without touching the tables
            self._pending.append((self._forget_flight, (key, flight)))
            flight.exc, flight.value, flight.done = exc, value, True
            event, waiters = flight.event, flight.async_waiters
        if event is not None:
            event.set()
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut, flight)
            except RuntimeError:  # that loop is closed; nobody is waiting any more
                pass

    def _forget_flight(self, key: str, flight: _Flight) -> None:
        if self._inflight.get(key) is flight:
            del self._inflight[key]

    async def aget_or_set(
        self,
        key: str,
        loader: Callable[[], Awaitable[T] | T],
        ttl: float | None = None,
    ) -> T:
        """Asyncio version of :meth:`get_or_set`: ``loader`` may return an awaitable.

        Concurrent misses of one key - from coroutines of any event loop and from
        threads using :meth:`get_or_set` - call a loader once. Waiting coroutines
        await a future and never block their event loop. The load runs in its own
        task, so cancelling the coroutine that started it does not cancel it for the
        others (its result is still cached).
        """
        if type(key) is not str:
            raise TypeError(f"cache keys must be str, got {type(key).__name__}")
        if ttl is not None:
            _check_positive("ttl", ttl, allow_none=False, integer=False)
        import asyncio  # here, not at module level: sync users never pay for it

        loop = asyncio.get_running_loop()
        lock = self._lock
        locked = lock.acquire() if not lock.locked() else self._acquire()
        if not locked:
            self._misses += 1
            result = loader()
            if inspect.isawaitable(result):
                result = await result
            return result
        try:
            if self._pending:
                self._run_pending()
            hit, what, flight = self._begin_load(key, True)
            fut = None
            if not hit and not what:
                assert flight is not None
                fut = loop.create_future()
                flight.async_waiters.append((loop, fut))
        finally:
            lock.release()
        locked = False
        if hit:
            return decode_value(what[0]) if what[3] & _PICKLED else what[0]
        assert flight is not None
        if fut is not None:
            if flight.task is not None and flight.task is asyncio.current_task():
                fut.cancel()
                raise RuntimeError(f"aget_or_set({key!r}): the loader asked for its own key")
            return await fut
        task = loop.create_task(self._aload(key, flight, loader, ttl))
        flight.task = task  # the loop keeps tasks only weakly
        return await asyncio.shield(task)

    async def _aload(self, key: str, flight: _Flight, loader: Callable[[], Any], ttl: float | None) -> Any:
        try:
            value = loader()
            if inspect.isawaitable(value):
                value = await value
        except BaseException as exc:
            self._finish(key, flight, None, exc, ttl)
            raise
        self._finish(key, flight, value, None, ttl)
        return value

    # -- observability ---------------------------------------------------------------

    @property
    def pressure_threshold(self) -> float:
        """Fill ratio at which the cache reports memory pressure."""
        if self._pressure_threshold is not None:
            return float(self._pressure_threshold)
        return _config_threshold()

    def metrics(self) -> dict[str, Any]:
        """A snapshot of the cache's counters and fill, in O(1).

        Keys: ``name``, ``policy``, ``hits``, ``misses``, ``lookups`` (= hits +
        misses), ``hit_rate``, ``sets`` (= inserts + updates + rejections),
        ``inserts``, ``updates``, ``deletes``, ``rejections``,
        ``evictions`` (by cause: ``size``, ``ttl``, ``pressure``, ``manual``),
        ``evictions_total``, ``entries``, ``bytes``, ``max_bytes``, ``max_entries``,
        ``fill_ratio`` (the fuller of held_bytes/max_bytes and entries/max_entries),
        ``memory_pressure`` (fill_ratio >= ``pressure_threshold``),
        ``pressure_threshold``, ``ttl``, ``cleanup_interval``, ``last_cleanup``
        (epoch seconds of the last sweep, or None), ``loads``, ``load_errors``,
        ``coalesced`` (callers served by another caller's load), ``inflight``,
        ``policy_bytes`` (the policy's own structures: the TinyLFU sketch),
        ``held_bytes`` (``bytes + policy_bytes``, kept <= ``max_bytes``),
        ``reentrant_calls``.

        Invariants: ``inserts - deletes - evictions_total == entries``;
        ``held_bytes <= max_bytes``.
        """
        threshold = self.pressure_threshold
        m = self._counters()
        evictions = m["evictions"]
        evictions_total = sum(evictions.values())
        entries, nbytes, pbytes = m["entries"], m["bytes"], m["policy_bytes"]
        inserts = entries + m["deletes"] + evictions_total  # every entry ever added went one way
        lookups = m["hits"] + m["misses"]
        fill = (nbytes + pbytes) / self.max_bytes  # the policy's structures count too
        if self.max_entries is not None:
            fill = max(fill, entries / self.max_entries)
        m.update(
            lookups=lookups,
            hit_rate=m["hits"] / lookups if lookups else 0.0,
            sets=inserts + m["updates"] + m["rejections"],
            inserts=inserts,
            evictions_total=evictions_total,
            fill_ratio=fill,
            memory_pressure=fill >= threshold,
            pressure_threshold=threshold,
            held_bytes=nbytes + pbytes,
        )
        return {key: m[key] for key in _METRIC_KEYS}

    def _counters(self) -> dict[str, Any]:
        """The counters metrics() derives the rest from, read in one locked section."""
        lock = self._lock
        locked = lock.acquire() if not lock.locked() else self._acquire()
        try:
            evictions = dict(self._evictions)
            evictions["size"] += self._evicted_size
            return {
                "name": self.name,
                "policy": self._policy.name,
                "hits": self._hits,
                "misses": self._misses,
                "updates": self._updates,
                "deletes": self._deletes,
                "rejections": self._rejections,
                "evictions": evictions,
                "entries": self._count,
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
                "max_entries": self.max_entries,
                "ttl": self.ttl,
                "cleanup_interval": self.cleanup_interval,
                "last_cleanup": self._last_cleanup,
                "loads": self._loads,
                "load_errors": self._load_errors,
                "coalesced": self._coalesced,
                "inflight": len(self._inflight),
                "policy_bytes": self._policy.memory_bytes(),
                "reentrant_calls": self._reentrant,
            }
        finally:
            if locked:
                lock.release()


# metrics()' keys, in the documented order.
_METRIC_KEYS = (
    "name",
    "policy",
    "hits",
    "misses",
    "lookups",
    "hit_rate",
    "sets",
    "inserts",
    "updates",
    "deletes",
    "rejections",
    "evictions",
    "evictions_total",
    "entries",
    "bytes",
    "max_bytes",
    "max_entries",
    "fill_ratio",
    "memory_pressure",
    "pressure_threshold",
    "ttl",
    "cleanup_interval",
    "last_cleanup",
    "loads",
    "load_errors",
    "coalesced",
    "inflight",
    "policy_bytes",
    "held_bytes",
    "reentrant_calls",
)

#: Exact policy type -> the SharedPromptCache subclass that inlines its hot paths.
#: fastpaths.py fills it (:func:`register_fast_path`) when the package is imported.
FAST_PATHS: dict[type, type[SharedPromptCache]] = {}

# Code objects whose frames hold the lock while their local ``locked`` is true: the
# re-entrancy test in SharedPromptCache._acquire looks for them on the stack.
_LOCKING_CODES = frozenset(
    f.__code__
    for f in (
        SharedPromptCache.get,
        SharedPromptCache.__contains__,
        SharedPromptCache.set,
        SharedPromptCache.delete,
        SharedPromptCache.clear,
        SharedPromptCache.shrink,
        SharedPromptCache.expire,
        SharedPromptCache.get_or_set,
        SharedPromptCache._wait,
        SharedPromptCache._finish,
        SharedPromptCache.aget_or_set,
        SharedPromptCache._counters,
    )
)


def register_fast_path(policy_type: type, cls: type[SharedPromptCache]) -> None:
    """Serve caches whose policy is exactly ``policy_type`` with ``cls``, a subclass whose
    ``get`` and ``set`` inline that policy's hot operations (and hold the lock as the
    generic ones do, so the re-entrancy test knows their frames)."""
    global _LOCKING_CODES
    FAST_PATHS[policy_type] = cls
    _LOCKING_CODES = _LOCKING_CODES | {cls.get.__code__, cls.set.__code__}


# -- fork safety ----------------------------------------------------------------------
# A lock held by another thread at fork() stays held forever in the child. Before a
# fork, take every cache's lock (briefly, with a timeout so a pathological holder
# cannot hang the fork); after it, release them in the parent and give the child
# fresh locks. Loads led by threads that do not exist in the child are forgotten.

_fork_held: list[SharedPromptCache] = []


def _before_fork() -> None:
    for cache in list(_ALL):
        if cache._lock.acquire(timeout=1.0):
            _fork_held.append(cache)


def _after_fork_parent() -> None:
    while _fork_held:
        _fork_held.pop()._lock.release()


_reset_in: int = 0  # the process whose caches got fresh locks


def _after_fork_child() -> None:
    """Fresh locks in the child, once per process: the monitor calls it before its thread
    restarts (``os.register_at_fork`` runs this module's handler after the service's when
    the cache was imported later, and a restarted monitor would wait forever on the lock
    held across the fork); the second call, this module's own handler, does nothing."""
    global _reset_in
    if _reset_in == os.getpid():
        return
    _reset_in = os.getpid()
    _fork_held.clear()
    me = _get_ident()
    SharedPromptCache._instance_lock = threading.Lock()
    for cache in list(_ALL):
        cache._lock = threading.Lock()
        cache._inflight = {k: f for k, f in cache._inflight.items() if f.owner == me}
        cache._watched = False  # the sweeper thread is gone; the next TTL write restarts it


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_parent,
        after_in_child=_after_fork_child,
    )
