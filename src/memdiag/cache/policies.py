"""Eviction policies for :class:`~memdiag.cache.SharedPromptCache`.

A policy owns the cache's key -> entry tables and decides two things: the order in
which entries are given up when the cache is over its bounds, and (for a
frequency-aware policy) which newcomer is worth keeping at all. The cache calls it
under its lock, so a policy needs no locking of its own, must be O(1) per call
(amortised), and must never call back into the cache.

Two policies ship:

* :class:`LRUPolicy` - least recently used; the cheapest, the right choice when
  recency is all that matters (e.g. a conversation's recent turns).
* :class:`TinyLFUPolicy` (the default) - W-TinyLFU as in Caffeine: a small LRU
  *window* admits every newcomer; a segmented LRU *main* area (probation +
  protected) keeps the entries that earned their place; an entry leaving the window
  only enters the main area if it was used more often, recently, than the main area's
  own eviction candidate. Frequencies come from a count-min sketch with periodic
  halving (aging), so the policy adapts when the popular set changes, in fixed memory.
  It beats LRU's hit ratio on skewed (Zipf-like) workloads, which prompt traffic is.

An entry is a ``list`` whose slots are :data:`VALUE`, :data:`SIZE`, :data:`EXPIRES`
(a ``time.monotonic()`` deadline), :data:`FLAGS` (bit 1: value pickled, bit 2: it
expires), :data:`FREQ` and :data:`AUX`. The cache increments :data:`FREQ` on
hits in a policy's hot table; a policy may use :data:`FREQ` and :data:`AUX` as it
likes. (The cache gives the built-in :class:`LRUPolicy`, which never writes them,
tuples instead: one allocation, and untracked by the garbage collector.)

For :class:`LRUPolicy` and :class:`TinyLFUPolicy` (exact types) the cache inlines the
hot operations - a read's lookup, ``put`` of a new key, the common ``victim`` - in its
own ``get``/``set`` (``fastpaths.py``), reading these classes' private tables directly:
one Python call per operation. Any other policy, subclasses included, is called through
this interface.

Writing a policy: subclass :class:`EvictionPolicy` and implement every method; see
:class:`LRUPolicy` for the smallest complete one.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterator

from .sizing import MIN_ENTRY_CHARGE

__all__ = [
    "AUX",
    "EXPIRES",
    "FLAGS",
    "FREQ",
    "SIZE",
    "VALUE",
    "EvictionPolicy",
    "LRUPolicy",
    "TinyLFUPolicy",
    "make_policy",
]

# Slots of an entry list.
VALUE = 0
SIZE = 1
EXPIRES = 2
FLAGS = 3
FREQ = 4
AUX = 5

Entry = list  # [value, size, expires, flags, freq, aux]


class EvictionPolicy:
    """Interface of an eviction policy (all calls are made under the cache lock).

    The cache keeps the byte and entry counts; the policy keeps the tables and the
    order. ``lookup``, ``put`` and ``victim`` are the hot paths: keep each to a few
    dict operations.
    """

    #: Short name shown in metrics.
    name: str = "policy"

    def bind(self, max_entries: int | None) -> None:
        """Called once by the cache before use, with its entry bound (None: unbounded)."""

    def bound_bytes(self, max_bytes: int) -> None:
        """Called once by the cache before :meth:`bind`: the most entries it can ever hold
        is ``max_bytes // MIN_ENTRY_CHARGE``; size nothing beyond that."""

    def lookup(self, key: str) -> Entry | None:
        """A read of ``key``: return its entry and record the access, or None."""
        raise NotImplementedError

    def hot_table(self) -> OrderedDict[str, Entry] | None:
        """Optional fast path: the table where most hits land, or None.

        The cache then handles a hit found there itself (``get``, ``move_to_end``,
        ``entry[FREQ] += 1``, saving a Python call per read) and calls
        :meth:`lookup_cold` for every other read. It asks again after ``clear()``.
        """
        return None

    def lookup_cold(self, key: str) -> Entry | None:
        """A read of ``key`` that missed :meth:`hot_table` (default: :meth:`lookup`)."""
        return self.lookup(key)

    def peek(self, key: str) -> Entry | None:
        """Return the entry of ``key`` without recording an access."""
        raise NotImplementedError

    def put(self, key: str, entry: Entry) -> Entry | None:
        """Store ``entry`` under ``key``; return the entry it replaced, if any."""
        raise NotImplementedError

    def remove(self, key: str) -> Entry | None:
        """Remove ``key``; return its entry, or None if absent."""
        raise NotImplementedError

    def victim(self) -> Entry:
        """Remove and return the entry to give up next (the cache is not empty)."""
        raise NotImplementedError

    def items(self) -> Iterator[tuple[str, Entry]]:
        """Iterate over every (key, entry); the caller does not mutate meanwhile."""
        raise NotImplementedError

    def clear(self) -> object:
        """Forget every entry in O(1); return the old tables for the caller to drop."""
        raise NotImplementedError

    def memory_bytes(self) -> int:
        """Bytes of the structures the policy keeps besides its tables' entries (which
        :data:`~memdiag.cache.sizing.ENTRY_OVERHEAD` covers). The cache counts them against
        its ``max_bytes``; it reads this after :meth:`bind` and after each insertion
        of a new key, so it must be O(1)."""
        return 0

    def __len__(self) -> int:
        raise NotImplementedError


class LRUPolicy(EvictionPolicy):
    """Least recently used: evicts the entry read or written longest ago."""

    name = "lru"

    def __init__(self) -> None:
        self._new_table()

    def _new_table(self) -> None:
        od: OrderedDict[str, Entry] = OrderedDict()
        self._od = od
        # Bound methods cached on the instance: one attribute load on the hot path.
        self._get = od.get
        self._mte = od.move_to_end
        self._popitem = od.popitem
        self._setdefault = od.setdefault

    def lookup(self, key: str) -> Entry | None:
        e = self._get(key)
        if e is not None:
            self._mte(key)
        return e

    def hot_table(self) -> OrderedDict[str, Entry]:
        return self._od

    def lookup_cold(self, key: str) -> Entry | None:
        return None  # the hot table is the whole cache

    def peek(self, key: str) -> Entry | None:
        return self._get(key)

    def put(self, key: str, entry: Entry) -> Entry | None:
        old = self._setdefault(key, entry)
        if old is entry:
            return None
        self._od[key] = entry
        self._mte(key)
        return old

    def remove(self, key: str) -> Entry | None:
        return self._od.pop(key, None)

    def victim(self) -> Entry:
        return self._popitem(False)[1]

    def items(self) -> Iterator[tuple[str, Entry]]:
        # A snapshot taken by one C call: lock-free readers reorder the table (see
        # fastpaths.py), which would break an iterator held across bytecodes.
        return iter(list(self._od.items()))

    def clear(self) -> object:
        old = self._od
        self._new_table()
        return old

    def __len__(self) -> int:
        return len(self._od)


def _pow2_at_least(n: int) -> int:
    w = 16
    while w < n:
        w <<= 1
    return w


def _first_key(od: OrderedDict[str, Entry]) -> str:
    """The oldest key of a non-empty table, even if a lock-free reader moves a key meanwhile.

    ``next(iter(od))`` is two calls, and a thread switch between them lets another
    thread's lock-free hit (fastpaths.py) reorder the table, which the iterator reports
    as a RuntimeError; the table's size does not change, so looking again succeeds.
    """
    while True:
        try:
            return next(iter(od))
        except RuntimeError:
            continue


# bytes.translate table that halves every byte: one C call ages a sketch row.
_HALVE = bytes(b >> 1 for b in range(256))
# Doorkeeper cells per sketch column: a sparser doorkeeper lets fewer repeat keys
# through by collision.
DOOR_FACTOR = 2


class TinyLFUPolicy(EvictionPolicy):
    """W-TinyLFU: an LRU window in front of a frequency-filtered segmented LRU.

    Layout (as in Caffeine): ``window`` (LRU, ``window_fraction`` of the capacity)
    receives every new entry; ``probation`` and ``protected`` (``protected_fraction`` of
    the main area) form a segmented LRU. A hit in probation - or, unlike Caffeine, in
    the window - promotes the entry to protected; protected's overflow is demoted
    back to probation. When the cache is
    over its bounds and the window is over its share, the window's LRU entry (the
    *candidate*) competes with probation's LRU entry (the *victim*): the one with the
    lower estimated frequency is evicted (ties evict the candidate, which protects
    the main area from one-hit wonders and scans).

    Frequencies: insertions are counted (as in Caffeine; in a read-through cache
    each miss is followed by one). The first insertion of a key since the last aging
    only sets its cell in a *doorkeeper* (a one-hash Bloom filter, as in Caffeine);
    later ones go to a 4-row count-min sketch (conservative update, counters
    saturating at ``counter_max``); the estimate is the sketch's count plus the
    doorkeeper's bit. Most keys of a skewed workload are seen once, and a doorkeeper
    cell costs one read and one write where the sketch costs four of each. A cached entry carries its own
    figure - the sketch's estimate when it was admitted (slot :data:`AUX`) plus the
    exact hits it received since (slot :data:`FREQ`) - so a hit never touches the
    sketch (the hot path stays a dict lookup, a move and an increment) and the
    admission contest between two cached entries reads no sketch at all. An entry
    that leaves the cache folds its hits back into the sketch. Aging: after
    ``sample_factor`` x capacity insertions every count is halved, so yesterday's
    favourites fade - quickly when the workload shifts (insertions pile up), slowly while
    the cache is hitting well - and the doorkeeper is cleared.

    Capacity is the cache's ``max_entries``; for a cache bounded by bytes only, the
    largest number of entries seen so far stands in (the sketch grows with it and
    keeps what it learnt). Memory: ``4 x width`` bytes for the sketch, ``width`` the
    power of two >= ``width_factor`` x capacity, and ``DOOR_FACTOR x width`` for the
    doorkeeper (192 KiB in all for 10,000 entries), reported as ``policy_bytes`` in the
    cache metrics.

    Args:
        window_fraction: share of the capacity for the admission window (0 < x < 1).
        protected_fraction: share of the main area for the protected segment.
        sample_factor: aging period, in insertions per unit of capacity.
        counter_max: saturation value of the frequency counters (<= 255).
        width_factor: sketch width per unit of capacity.
    """

    name = "tinylfu"

    # Slots: the C fast path (_fastget.c) reads and writes these at fixed offsets, taken
    # from the member descriptors when it is installed (a subclass keeps them: it gets a
    # __dict__ for anything else, through EvictionPolicy).
    __slots__ = (
        "_cap",
        "_cap_limit",
        "_dmask",
        "_door",
        "_grow_at",
        "_main_max",
        "_mask",
        "_max_entries",
        "_nbytes",
        "_prob",
        "_prob_pop",
        "_prot",
        "_prot_get",
        "_prot_max",
        "_prot_mte",
        "_prot_popitem",
        "_rows",
        "_s1",
        "_s2",
        "_s3",
        "_sample",
        "_ticks",
        "_win",
        "_win_max",
        "_win_pop",
        "_win_popitem",
        "counter_max",
        "protected_fraction",
        "sample_factor",
        "width_factor",
        "window_fraction",
    )

    def __init__(
        self,
        *,
        window_fraction: float = 0.01,
        protected_fraction: float = 0.8,
        sample_factor: int = 10,
        counter_max: int = 31,
        width_factor: int = 2,
    ) -> None:
        if not 0.0 < window_fraction < 1.0:
            raise ValueError(f"window_fraction must be in (0, 1), got {window_fraction!r}")
        if not 0.0 < protected_fraction < 1.0:
            raise ValueError(f"protected_fraction must be in (0, 1), got {protected_fraction!r}")
        if int(sample_factor) < 1:
            raise ValueError(f"sample_factor must be >= 1, got {sample_factor!r}")
        if not 1 <= int(counter_max) <= 255:
            raise ValueError(f"counter_max must be in [1, 255], got {counter_max!r}")
        if int(width_factor) < 1:
            raise ValueError(f"width_factor must be >= 1, got {width_factor!r}")
        self.window_fraction = float(window_fraction)
        self.protected_fraction = float(protected_fraction)
        self.sample_factor = int(sample_factor)
        self.counter_max = int(counter_max)
        self.width_factor = int(width_factor)
        self._max_entries: int | None = None
        self._cap = 0
        # The most entries the cache can hold (its max_bytes // MIN_ENTRY_CHARGE): the
        # sketch is never sized beyond it.
        self._cap_limit = sys.maxsize
        self._nbytes = 0  # memory_bytes(), kept by _set_capacity
        # Entry count above which a cache bounded by bytes only grows the sketch.
        self._grow_at = 0
        self._ticks = 0  # insertions since the last aging
        self._rows: tuple[bytearray, ...] = ()
        self._mask = 0
        self._door = bytearray()
        self._dmask = 0
        self._s1, self._s2, self._s3 = 16, 32, 48
        self._new_tables()
        self._set_capacity(64)

    def _new_tables(self) -> None:
        self._win: OrderedDict[str, Entry] = OrderedDict()
        self._prob: OrderedDict[str, Entry] = OrderedDict()
        self._prot: OrderedDict[str, Entry] = OrderedDict()
        # Bound methods cached on the instance (the cache's inlined paths call them
        # through locals: CPython 3.11 does not specialise LOAD_METHOD on an OrderedDict).
        self._prot_get = self._prot.get
        self._prot_mte = self._prot.move_to_end
        self._prot_popitem = self._prot.popitem
        self._prob_pop = self._prob.pop
        self._win_pop = self._win.pop
        self._win_popitem = self._win.popitem

    # -- capacity and sketch ------------------------------------------------------

    def bound_bytes(self, max_bytes: int) -> None:
        self._cap_limit = max(2, min(int(max_bytes) // MIN_ENTRY_CHARGE, self.max_capacity()))

    def max_capacity(self) -> int:
        """The most entries a sketch can be sized for: its doorkeeper (``DOOR_FACTOR`` x the
        width, a power of two >= ``width_factor`` x capacity) must be one ``bytearray``."""
        widest = 1 << ((sys.maxsize // DOOR_FACTOR).bit_length() - 1)
        return widest // self.width_factor

    def bind(self, max_entries: int | None) -> None:
        limit = self.max_capacity()
        if max_entries is not None and max_entries > limit and self._cap_limit >= limit:  # max_bytes no bound
            raise ValueError(
                f"max_entries={max_entries} is more than the tinylfu policy can size its frequency sketch "
                f"for: at most {limit} entries (a smaller max_entries or max_bytes bounds it; "
                "policy='lru' keeps no sketch)"
            )
        self._max_entries = max_entries
        self._rows = ()  # sized afresh: the bound may be below the provisional 64
        self._set_capacity(max_entries if max_entries is not None else 64)

    def _set_capacity(self, cap: int) -> None:
        # Capacity: the entry bound, else the most entries seen (it grows), and never
        # more than the byte budget can hold.
        cap = max(min(int(cap), self._cap_limit), 2)
        self._cap = cap
        self._grow_at = sys.maxsize if self._max_entries is not None or cap >= self._cap_limit else cap
        self._win_max = max(1, int(cap * self.window_fraction))
        self._main_max = max(1, cap - self._win_max)
        self._prot_max = max(1, int(self._main_max * self.protected_fraction))
        self._sample = self.sample_factor * cap
        width = _pow2_at_least(self.width_factor * cap)
        if not self._rows:
            self._rows = tuple(bytearray(width) for _ in range(4))
            self._door = bytearray(DOOR_FACTOR * width)
        elif width > len(self._rows[0]):
            # Doubling a row keeps every estimate: the new index h & (2w-1) maps to a
            # cell that holds the old h & (w-1) count. The same holds for the doorkeeper.
            rows = self._rows
            door = self._door
            while len(rows[0]) < width:
                rows = tuple(r + r for r in rows)
                door = door + door
            self._rows = rows
            self._door = door
        else:
            return
        rows = self._rows
        self._nbytes = sys.getsizeof(rows) + sum(sys.getsizeof(r) for r in rows) + sys.getsizeof(self._door)
        bits = width.bit_length() - 1
        self._mask = width - 1
        self._dmask = len(self._door) - 1
        # Four indexes from one 64-bit hash: disjoint bit ranges while they fit.
        step = 16 if bits <= 16 else max(1, (64 - bits) // 3)
        self._s1, self._s2, self._s3 = step, 2 * step, 3 * step

    def memory_bytes(self) -> int:
        return self._nbytes

    def _add(self, key: str, by: int) -> int:
        """Count ``by`` accesses (conservative update: raise only the minimum cells);
        return the key's new estimate."""
        h = hash(key)
        m = self._mask
        r0, r1, r2, r3 = self._rows
        i0 = h & m
        i1 = (h >> self._s1) & m
        i2 = (h >> self._s2) & m
        i3 = (h >> self._s3) & m
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
        new = low + by
        if new > self.counter_max:
            new = self.counter_max
        if c0 < new:
            r0[i0] = new
        if c1 < new:
            r1[i1] = new
        if c2 < new:
            r2[i2] = new
        if c3 < new:
            r3[i3] = new
        return new

    def frequency(self, key: str, entry: Entry | None = None) -> int:
        """Estimated recent accesses of ``key`` (the figure the admission test compares)."""
        h = hash(key)
        m = self._mask
        r0, r1, r2, r3 = self._rows
        f = r0[h & m]
        c = r1[(h >> self._s1) & m]
        if c < f:
            f = c
        c = r2[(h >> self._s2) & m]
        if c < f:
            f = c
        c = r3[(h >> self._s3) & m]
        if c < f:
            f = c
        f += self._door[h & self._dmask]
        if entry is not None:
            f = entry[4] + entry[5]
        return f if f < self.counter_max else self.counter_max

    def _record(self, key: str) -> int:
        """Count one insertion of ``key``; return its new estimate.

        The first insertion of a key since the last aging only sets its doorkeeper
        cell (one read and one write, not four counters: most keys of a skewed
        workload are seen once); later ones go to the sketch. The estimate is the
        sketch's count plus the doorkeeper's one.

        fastpaths._TinyLFUCache.set inlines a copy of this (its hot miss path): keep the
        two in step.
        """
        door = self._door
        i = hash(key) & self._dmask
        if not door[i]:
            door[i] = 1
            return 1
        return self._add(key, 1) + 1

    def _age(self) -> None:
        # In place: no new allocation, and the rows tuple stays the same.
        for r in self._rows:
            r[:] = r.translate(_HALVE)
        self._door[:] = bytes(len(self._door))
        cmax = self.counter_max
        for d in (self._win, self._prob, self._prot):
            for e in list(d.values()):  # a snapshot: see items()
                f = e[4]
                if f:
                    e[4] = (f if f < cmax else cmax) >> 1
                f = e[5]
                if f:
                    e[5] = f >> 1
        self._ticks = 0

    # -- the policy interface -------------------------------------------------------

    def hot_table(self) -> OrderedDict[str, Entry]:
        return self._prot

    def lookup(self, key: str) -> Entry | None:
        e = self._prot_get(key)
        if e is not None:
            self._prot_mte(key)
            e[4] += 1  # FREQ
            return e
        return self.lookup_cold(key)

    def lookup_cold(self, key: str) -> Entry | None:
        # A hit in probation, or a second access while in the window (the entry has
        # proved itself), moves the entry into protected, the cache's hot table. Going
        # straight there from the window keeps hot keys out of it, where each hit would
        # cost the slow path; on Zipf workloads it is hit-ratio neutral or slightly better.
        e = self._prob.pop(key, None)
        if e is None:
            e = self._win.pop(key, None)
        if e is not None:
            e[4] += 1
            prot = self._prot
            prot[key] = e
            if len(prot) > self._prot_max:
                k, d = prot.popitem(False)
                self._prob[k] = d
            return e
        # A miss records nothing: the put() that follows counts the key (as Caffeine does).
        return None

    def peek(self, key: str) -> Entry | None:
        e = self._prot_get(key)
        if e is None:
            e = self._prob.get(key)
            if e is None:
                e = self._win.get(key)
        return e

    def put(self, key: str, entry: Entry) -> Entry | None:
        old = self._win.setdefault(key, entry)
        if old is entry:  # not in the window: new, unless in the main area
            found = self._prot_get(key)
            if found is None:
                found = self._prob.get(key)
            if found is None:
                entry[5] = self._record(key)
                # Aging after the newcomer holds its estimate: it is halved with the rest.
                self._ticks += 1
                if self._ticks >= self._sample:
                    self._age()
                n = len(self)
                if n > self._grow_at:
                    self._set_capacity(max(n, self._cap + self._cap // 4))
                return None
            old = found
            del self._win[key]
            d = self._prot if key in self._prot else self._prob
        else:
            d = self._win
        entry[4] = old[4]
        entry[5] = old[5]
        d[key] = entry
        d.move_to_end(key)
        return old

    def remove(self, key: str) -> Entry | None:
        for d in (self._prot, self._prob, self._win):
            e = d.pop(key, None)
            if e is not None:
                if e[4]:
                    self._add(key, e[4])
                return e
        return None

    def victim(self) -> Entry:
        win, prob = self._win, self._prob
        win_max = self._win_max
        if len(win) > win_max:
            prot = self._prot
            # Main area not full yet: the window's overflow moves in without a contest.
            while len(win) > win_max and len(prob) + len(prot) < self._main_max:
                k, e = win.popitem(False)
                prob[k] = e
            if len(win) > win_max and (prob or prot):
                main = prob if prob else prot
                ck = next(iter(win))
                vk = _first_key(main)
                ce = win[ck]
                ve = main[vk]
                # Both are cached: their frequency is in the entry (estimate when it
                # was admitted + hits since), no sketch read needed.
                cf = ce[4] + ce[5]
                vf = ve[4] + ve[5]
                cmax = self.counter_max
                if cf > vf and vf < cmax:  # i.e. min(cf, cmax) > min(vf, cmax)
                    del win[ck]
                    prob[ck] = ce
                    k, e = vk, main.pop(vk)
                else:
                    k, e = ck, win.pop(ck)
            else:
                k, e = (prob or prot or win).popitem(False)
        else:
            k, e = (prob or self._prot or win).popitem(False)
        if e[4]:
            self._add(k, e[4])
        return e

    def items(self) -> Iterator[tuple[str, Entry]]:
        # Snapshots taken by C calls: see LRUPolicy.items().
        return iter([*self._win.items(), *self._prob.items(), *self._prot.items()])

    def clear(self) -> object:
        old = (self._win, self._prob, self._prot)
        self._new_tables()
        return old

    def __len__(self) -> int:
        return len(self._win) + len(self._prob) + len(self._prot)


def make_policy(policy: str | EvictionPolicy | None) -> EvictionPolicy:
    """Resolve the ``policy`` argument of the cache constructor.

    Args:
        policy: ``"tinylfu"`` (default), ``"lru"``, or an unused policy instance.

    Raises:
        ValueError: unknown policy name.
        TypeError: not a name nor an :class:`EvictionPolicy`.
    """
    if policy is None or policy == "tinylfu":
        return TinyLFUPolicy()
    if policy == "lru":
        return LRUPolicy()
    if isinstance(policy, EvictionPolicy):
        return policy
    if isinstance(policy, str):
        raise ValueError(f"policy must be 'tinylfu' or 'lru', got {policy!r}")
    raise TypeError(f"policy must be a name or an EvictionPolicy, got {type(policy).__name__}")
