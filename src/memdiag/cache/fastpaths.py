"""The built-in policies' hot paths, inlined into ``get`` and ``set``.

A read-through cache spends its time in ``get`` and, on each miss, ``set``. Through the
policy interface each of them costs several Python calls; here, for
:class:`~memdiag.cache.LRUPolicy` and :class:`~memdiag.cache.TinyLFUPolicy` (exact
types: a subclass may override any method), they cost one: these subclasses of
:class:`~memdiag.cache.SharedPromptCache` read and update the policy's private tables
directly. ``SharedPromptCache()`` turns itself into one of them when its policy is a
built-in one; they add no state, and every other method is the base class's.

Keep each copy in step with the policy method it inlines (named in the comments); a
test drives the same stream through both paths and compares every decision.

Lock-free hits. ``get`` first looks in the policy's hot table (LRU: its only table;
TinyLFU: protected, where most hits land) without taking the cache lock, and serves an
unexpired hit there. That is safe because, with the GIL, every step of it is atomic
with respect to other threads and to code the garbage collector may run:

* the lookup and the move to the most-recent end are each one C call on an
  ``OrderedDict`` whose keys are exact ``str`` (``set`` refuses anything else, and the
  lock-free path is only taken for an exact ``str`` key), so no Python code runs inside
  them, and neither allocates a tracked object, so no collection starts there;
* the counter increments (``self._hits += 1``, TinyLFU's ``e[FREQ] += 1``) contain no
  call and no backward jump, the only places where CPython 3.11 switches threads or
  runs pending calls (an interpreter property, not a language rule: recheck it, and the
  race test in tests/test_cache.py, when supporting a new CPython);
* a locked section never holds an iterator over a hot table across a bytecode boundary
  (the policies' ``items()`` and aging take C-level snapshots, the admission contest
  retries its peek), so a concurrent move cannot break one.

What a lock-free reader can observe is therefore one consistent moment: it may return a
value that a concurrent ``delete``/``clear``/eviction removes right after (it read
first), and its move may find the key gone (ignored). Everything else - misses,
expired or serialised entries, queued re-entrant writes, keys of other types - takes
the locked path, which looks in the hot table again: a key promoted into it by another
thread meanwhile is found, not reported missing. On a free-threaded build (no GIL)
these classes are not used at all (:data:`memdiag.cache.core.FAST_PATHS` stays empty).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from . import sweeper
from .core import _EXPIRES, _PICKLED, SharedPromptCache, _monotonic, register_fast_path
from .policies import LRUPolicy, TinyLFUPolicy
from .sizing import ENTRY_OVERHEAD, decode_value

__all__: list[str] = []  # registers its subclasses in memdiag.cache.core.FAST_PATHS

_get_or_set = SharedPromptCache.get_or_set

# set() stores str and bytes values as they are, without _make_entry. The size of such a
# value, or of a str key, is x.__sizeof__(): what sys.getsizeof returns for these types
# (the GC does not track them), exact for any str, in one cheap C call.

# _TinyLFUCache keeps one hint in the slot ``_absent``: the key the last locked get()
# missed completely. Every insertion of a key clears it (here and in _store()), so while
# ``key is self._absent`` the key is in none of the policy's tables, and the set() that
# follows a read-through miss skips looking for it. Equal but distinct str objects
# never match the identity test; they just take the normal path. (_LRUCache has no use
# for it: its misses take no lock, and one setdefault() both looks and inserts.)


# get_or_set() of both classes: the lock-free hit of their get(), else the base's path.
def _get_or_set_hot(self: Any, key: str, loader: Callable[[], Any], ttl: float | None = None) -> Any:
    if ttl is None and type(key) is str and not self._pending:
        hot_get = self._hot_get
        e = hot_get(key)
        if e is not None and (not e[3] or not e[3] & _EXPIRES or e[2] > _monotonic()):
            hot_mte = self._hot_mte
            try:
                hot_mte(key)
            except KeyError:  # removed or demoted by another thread since the lookup
                pass
            if self._COUNTS_HITS:
                e[4] += 1  # FREQ
            self._hits += 1
            return e[0] if not e[3] or not e[3] & _PICKLED else decode_value(e[0])
    # A miss (single-flight), or anything the lock-free look cannot answer: the base
    # class's locked path, which looks again.
    return _get_or_set(self, key, loader, ttl)


_get_or_set_hot.__doc__ = _get_or_set.__doc__


class _LRUCache(SharedPromptCache):
    """SharedPromptCache with LRUPolicy's lookup, put and victim inlined."""

    __slots__ = ()
    _COUNTS_HITS = False  # LRU entries carry no FREQ (they are often tuples)
    get_or_set = _get_or_set_hot

    def get(self, key: str, default: Any = None) -> Any:
        if type(key) is str and not self._pending:
            # Lock-free (module docstring): LRUPolicy.lookup, for hits and misses. Bound
            # methods through locals: `self._hot_get(key)` would compile to a
            # LOAD_METHOD CPython 3.11 cannot specialise for a slot.
            hot_get = self._hot_get
            e = hot_get(key)
            if e is None:  # the table is the whole cache: a miss, at the moment of the lookup
                self._misses += 1
                return default
            if not e[3] or not e[3] & _EXPIRES or e[2] > _monotonic():
                hot_mte = self._hot_mte
                try:
                    hot_mte(key)
                except KeyError:  # removed by another thread since the lookup
                    pass
                self._hits += 1
                return e[0] if not e[3] or not e[3] & _PICKLED else decode_value(e[0])
        lock = self._lock
        locked = lock.acquire() if not lock.locked() else self._acquire()
        if not locked:
            self._misses += 1
            return default
        try:
            if self._pending:
                self._run_pending()
            # LRUPolicy.lookup, under the lock.
            hot_get = self._hot_get
            e = hot_get(key)
            if e is None:
                self._misses += 1
                return default
            hot_mte = self._hot_mte
            hot_mte(key)
            if not e[3]:  # neither expiring nor serialised: the common case
                self._hits += 1
                return e[0]
            if not self._flagged_hit(key, e):
                return default
        finally:
            lock.release()
        locked = False
        return decode_value(e[0]) if e[3] & _PICKLED else e[0]

    def set(self, key: str, value: Any, ttl: float | None = None) -> bool:
        # Kept flat on purpose. str/bytes values without a per-call ttl skip
        # _make_entry; LRU never writes FREQ/AUX, so their entry is a tuple: one
        # allocation instead of two, and untracked by the garbage collector.
        tv = type(value)
        if ttl is None and type(key) is str and (tv is str or tv is bytes):
            size = value.__sizeof__() + key.__sizeof__() + ENTRY_OVERHEAD
            ttl = self.ttl
            entry: Any = (value, size, _monotonic() + ttl, _EXPIRES, 0, 0) if ttl else (value, size, 0.0, 0, 0, 0)
        else:
            entry = self._make_entry(key, value, ttl)
            size = entry[1]
            ttl = entry[2]
        lock = self._lock
        locked = lock.acquire() if not lock.locked() else self._acquire()
        if not locked:
            self._pending.append((self._store, (key, entry)))
            return True
        try:
            if self._pending:
                self._run_pending()
            max_bytes = self._limit  # max_bytes less the policy's own structures
            if self._inflight or size > max_bytes:
                return self._store(key, entry)
            # _store() with LRUPolicy.put and .victim inlined. Table methods through
            # locals bound by the policy (no LOAD_METHOD specialisation on OrderedDict).
            pol: Any = self._policy
            setdefault = pol._setdefault
            old = setdefault(key, entry)
            if old is entry:
                n = self._count + 1
                b = self._bytes + size
            else:
                pol._od[key] = entry
                mte = pol._mte
                mte(key)
                self._updates += 1
                n = self._count
                b = self._bytes + size - old[1]
            max_entries = self._max_entries
            if b > max_bytes or n > max_entries:
                popitem = pol._popitem
                while True:
                    b -= popitem(False)[1][1]
                    n -= 1
                    self._evicted_size += 1
                    if b <= max_bytes and n <= max_entries:
                        break
            self._count = n
            self._bytes = b
            if ttl and not self._watched:
                self._watched = True
                sweeper.watch(self)
            return True
        finally:
            lock.release()


class _TinyLFUCache(SharedPromptCache):
    """SharedPromptCache with TinyLFUPolicy's lookup, put and victim inlined."""

    __slots__ = ()
    _COUNTS_HITS = True  # an entry's FREQ: its hits since admission
    get_or_set = _get_or_set_hot

    # long on purpose: the hot read in one Python frame (a helper call costs ~50 ns); the C get's fallback
    def get(self, key: str, default: Any = None) -> Any:
        if type(key) is str and not self._pending:
            # The lock-free hit in protected (module docstring): TinyLFUPolicy.lookup
            # on a hit there.
            hot_get = self._hot_get
            e = hot_get(key)
            if e is not None and (not e[3] or not e[3] & _EXPIRES or e[2] > _monotonic()):
                hot_mte = self._hot_mte
                try:
                    hot_mte(key)
                except KeyError:  # demoted or removed by another thread since the lookup
                    pass
                e[4] += 1  # FREQ
                self._hits += 1
                return e[0] if not e[3] or not e[3] & _PICKLED else decode_value(e[0])
        lock = self._lock
        locked = lock.acquire() if not lock.locked() else self._acquire()
        if not locked:
            self._misses += 1
            return default
        try:
            if self._pending:
                self._run_pending()
            # TinyLFUPolicy.lookup: protected (the hot table) first, again: another
            # thread may have promoted the key since the lock-free look.
            hot_get = self._hot_get
            e = hot_get(key)
            if e is not None:
                hot_mte = self._hot_mte
                hot_mte(key)
                e[4] += 1  # FREQ
            else:
                # TinyLFUPolicy.lookup_cold: a hit in probation or the window promotes
                # the entry to protected. Membership tests first: most reads that get
                # here are misses, and `in` is cheaper than a pop(key, None) call.
                pol: Any = self._policy
                if key in pol._prob:
                    pop = pol._prob_pop
                elif key in pol._win:
                    pop = pol._win_pop
                else:
                    self._misses += 1
                    self._absent = key
                    return default
                e = pop(key)
                e[4] += 1
                prot = pol._prot
                prot[key] = e
                if len(prot) > pol._prot_max:
                    popitem = pol._prot_popitem
                    k, d = popitem(False)
                    pol._prob[k] = d
            if not e[3]:  # neither expiring nor serialised: the common case
                self._hits += 1
                return e[0]
            if not self._flagged_hit(key, e):
                return default
        finally:
            lock.release()
        locked = False
        return decode_value(e[0]) if e[3] & _PICKLED else e[0]

    # long on purpose: the hot write: policy put, sketch, admission contest in one frame; the C set's fallback
    def set(self, key: str, value: Any, ttl: float | None = None) -> bool:
        # Kept flat on purpose: str/bytes values without a per-call ttl skip _make_entry.
        tv = type(value)
        if ttl is None and type(key) is str and (tv is str or tv is bytes):
            size = value.__sizeof__() + key.__sizeof__() + ENTRY_OVERHEAD
            ttl = self.ttl
            entry: Any = [value, size, _monotonic() + ttl, _EXPIRES, 0, 0] if ttl else [value, size, 0.0, 0, 0, 0]
        else:
            entry = self._make_entry(key, value, ttl)
            size = entry[1]
            ttl = entry[2]
        lock = self._lock
        locked = lock.acquire() if not lock.locked() else self._acquire()
        if not locked:
            self._pending.append((self._store, (key, entry)))
            return True
        try:
            if self._pending:
                self._run_pending()
            max_bytes = self._limit  # max_bytes less the policy's own structures
            if self._inflight or size > max_bytes:
                return self._store(key, entry)
            # _store() with TinyLFUPolicy.put and .victim inlined.
            pol: Any = self._policy
            win, prob, prot = pol._win, pol._prob, pol._prot
            if key is not self._absent and (key in prot or key in prob or key in win):
                old = pol.put(key, entry)
                self._updates += 1
                n = self._count
                b = self._bytes + size - old[1]
            else:  # a new key (`key is self._absent`: get() just missed it)
                self._absent = None
                win[key] = entry
                # TinyLFUPolicy._record: the first insertion of a key since the last
                # aging sets its doorkeeper cell; later ones count in the count-min
                # sketch (conservative update, saturating counters).
                h = hash(key)
                door = pol._door
                i0 = h & pol._dmask
                if door[i0]:
                    m = pol._mask
                    r0, r1, r2, r3 = pol._rows
                    i0 = h & m
                    i1 = (h >> pol._s1) & m
                    i2 = (h >> pol._s2) & m
                    i3 = (h >> pol._s3) & m
                    c0 = r0[i0]
                    c1 = r1[i1]
                    c2 = r2[i2]
                    c3 = r3[i3]
                    low = c0
                    if c1 < low:
                        low = c1
                    if c2 < low:
                        low = c2
                    if c3 < low:
                        low = c3
                    if low < pol.counter_max:
                        low += 1
                        if c0 < low:
                            r0[i0] = low
                        if c1 < low:
                            r1[i1] = low
                        if c2 < low:
                            r2[i2] = low
                        if c3 < low:
                            r3[i3] = low
                    entry[5] = low + 1
                else:
                    door[i0] = 1
                    entry[5] = 1
                t = pol._ticks + 1
                pol._ticks = t
                if t >= pol._sample:
                    pol._age()
                n = self._count + 1
                b = self._bytes + size
                if n > pol._grow_at:  # bounded by bytes only: the sketch grows
                    pol._set_capacity(max(n, pol._cap + pol._cap // 4))
                    self._account_policy()  # counted against max_bytes
                    max_bytes = self._limit
            max_entries = self._max_entries
            if b > max_bytes or n > max_entries:
                win_max = pol._win_max
                main_max = pol._main_max
                cmax = pol.counter_max
                win_popitem = pol._win_popitem
                while True:
                    lw = len(win)
                    if lw > win_max and prob and n - lw >= main_max:
                        # TinyLFUPolicy.victim's common case, the admission contest:
                        # the window's oldest against probation's oldest.
                        ck, ce = win_popitem(False)
                        vk = next(iter(prob))
                        ve = prob[vk]
                        cf = ce[4] + ce[5]
                        vf = ve[4] + ve[5]
                        if cf > vf and vf < cmax:  # i.e. min(cf, cmax) > min(vf, cmax)
                            del prob[vk]
                            prob[ck] = ce
                            ck, ce = vk, ve
                        if ce[4]:
                            pol._add(ck, ce[4])
                    else:
                        ce = pol.victim()
                    b -= ce[1]
                    n -= 1
                    self._evicted_size += 1
                    if b <= max_bytes and n <= max_entries:
                        break
            self._count = n
            self._bytes = b
            if ttl and not self._watched:
                self._watched = True
                sweeper.watch(self)
            return True
        finally:
            lock.release()


for _cls in (_LRUCache, _TinyLFUCache):
    _cls.get.__doc__ = SharedPromptCache.get.__doc__
    _cls.set.__doc__ = SharedPromptCache.set.__doc__

# The pure-Python get of each class, kept under this name: the C get (below) hands it
# every case it does not answer itself, and tests compare the two.
_LRUCache._py_get = _LRUCache.get  # type: ignore[attr-defined]
_TinyLFUCache._py_get = _TinyLFUCache.get  # type: ignore[attr-defined]
_LRUCache._py_set = _LRUCache.set  # type: ignore[attr-defined]
_TinyLFUCache._py_set = _TinyLFUCache.set  # type: ignore[attr-defined]


def _install_c_get() -> bool:
    """Replace both classes' get by the C one (``_fastget.c``) where it was built.

    It does the lock-free hit of the Python get above (and LRU's lock-free miss) in one
    C call, without a Python frame; everything else goes to the Python get. Off with
    ``MEMDIAG_CACHE_PURE_PYTHON=1``. Returns whether the C get is in use.
    """
    if os.environ.get("MEMDIAG_CACHE_PURE_PYTHON"):
        return False
    try:
        from ._fastget import install, install_lru_set, install_tinylfu  # type: ignore[import-not-found]
    except ImportError:  # not built (no compiler at install time): the Python get stays
        return False
    # LRU's set too, for a str key and a str/bytes value without ttl when the lock is free
    # (the inlined path of _LRUCache.set above, kept in step); else that Python set.
    install_lru_set(_LRUCache, _LRUCache._py_set, ENTRY_OVERHEAD)  # type: ignore[attr-defined]
    install(_LRUCache, _LRUCache._py_get, False, True, globals())  # type: ignore[attr-defined]
    install(_TinyLFUCache, _TinyLFUCache._py_get, True, False, globals())  # type: ignore[attr-defined]
    # TinyLFU's set of a new key (str key, str/bytes value, no per-call ttl) and the locked
    # part of a get that missed protected: the inlined paths of the Python set and get
    # above, kept in step; every other case goes to them.
    install_tinylfu(_TinyLFUCache, _TinyLFUCache._py_set, TinyLFUPolicy, ENTRY_OVERHEAD)  # type: ignore[attr-defined]
    return True


# Not on a free-threaded build (FAST_PATHS stays empty): the lock-free hits rely on the GIL.
C_GET = False
if getattr(sys, "_is_gil_enabled", lambda: True)():
    register_fast_path(LRUPolicy, _LRUCache)
    register_fast_path(TinyLFUPolicy, _TinyLFUCache)
    C_GET = _install_c_get()
