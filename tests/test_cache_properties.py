"""Stateful property test of SharedPromptCache against a reference model.

The model knows every key's latest value, size and deadline, but not which entries
the eviction policy chose to drop, so it checks what must hold whatever the policy:
a value returned is the latest one stored and is not expired, deleted keys stay
gone, both bounds hold after every step, and the metrics add up to what the test
saw. Time is a fake clock, so expiry is exact and the test is deterministic.
"""

from __future__ import annotations

import sys
import time

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from memdiag.cache import ENTRY_OVERHEAD, SharedPromptCache, fastpaths
from memdiag.cache import core as cache_core

MAX_BYTES = 6_000
MAX_ENTRIES = 8
KEYS = st.sampled_from([f"k{i}" for i in range(12)] + ["ключ", "鍵"])
VALUES = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=60),
    st.integers(),
    st.none(),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=4),
    st.lists(st.text(max_size=5), max_size=4),
    st.builds(lambda n: "L" * n, st.integers(1_000, 7_000)),  # some too big to store
)
TTLS = st.one_of(st.none(), st.floats(0.5, 20.0))


class FakeClock:
    def __init__(self) -> None:
        # Start at the real clock so the shared sweeper thread (real time) never
        # finds these caches due: only the test's expire() rule sweeps.
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


class CacheMachine(RuleBasedStateMachine):
    policy = "tinylfu"

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        # Both modules read the clock: the generic paths and the inlined ones.
        self._saved_clock = cache_core._monotonic
        cache_core._monotonic = fastpaths._monotonic = self.clock
        self.cache = SharedPromptCache(
            max_bytes=MAX_BYTES,
            max_entries=MAX_ENTRIES,
            cleanup_interval=3600,
            policy=self.policy,
            pressure_threshold=0.75,
        )
        # key -> (value, expires or None); only keys whose latest set was accepted.
        self.model: dict[str, tuple[object, float | None]] = {}
        # key -> the exact charge of its str/bytes value when stored. Taken then, not at the
        # check: a str's sys.getsizeof grows once something caches its UTF-8 form (the test
        # framework does, for values it generated), and the cache charges what it stored.
        self.charged: dict[str, int] = {}
        self.hits = self.misses = 0
        self.accepted = 0  # sets and loads stored: each is an insert or an update
        self.deleted = 0
        self.rejections = 0

    def teardown(self) -> None:
        cache_core._monotonic = fastpaths._monotonic = self._saved_clock

    @initialize(default_ttl=st.one_of(st.none(), st.floats(1.0, 10.0)))
    def configure(self, default_ttl: float | None) -> None:
        self.cache.ttl = default_ttl

    def _expected(self, key: str) -> object:
        """The value if the key may be cached and is live, else None."""
        if key not in self.model:
            return None
        value, expires = self.model[key]
        if expires is not None and expires <= self.clock.now:
            return None
        return value

    def _check_read(self, key: str, got: object, present: bool) -> None:
        if present:
            assert key in self.model, f"{key!r} returned but never stored/deleted"
            value, expires = self.model[key]
            assert got == value
            assert expires is None or expires > self.clock.now, "expired value returned"

    @rule(key=KEYS, value=VALUES, ttl=TTLS)
    def set(self, key: str, value: object, ttl: float | None) -> None:
        if self.cache.set(key, value, ttl=ttl):
            self.charged[key] = sys.getsizeof(key) + sys.getsizeof(value) + ENTRY_OVERHEAD
            self.accepted += 1
            eff = ttl if ttl is not None else self.cache.ttl
            self.model[key] = (value, self.clock.now + eff if eff else None)
        else:  # refused: only ever because it alone exceeds max_bytes
            if type(value) in (str, bytes):
                # the policy's own structures (the TinyLFU sketch) count against max_bytes
                room = MAX_BYTES - self.cache.metrics()["policy_bytes"]
                assert sys.getsizeof(key) + sys.getsizeof(value) + ENTRY_OVERHEAD > room
            self.rejections += 1
            self.model.pop(key, None)
            assert self.cache._policy.peek(key) is None

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        sentinel = object()
        got = self.cache.get(key, sentinel)
        present = got is not sentinel
        self._check_read(key, got, present)
        if present:
            self.hits += 1
        else:
            self.misses += 1
            if key in self.model and self._expected(key) is None:
                del self.model[key]  # expired: the cache freed it on this read

    @rule(key=KEYS)
    def contains(self, key: str) -> None:
        if key in self.cache:
            _value, expires = self.model[key]
            assert expires is None or expires > self.clock.now

    @rule(key=KEYS, value=st.text(max_size=20))
    def get_or_set(self, key: str, value: str) -> None:
        called = []
        got = self.cache.get_or_set(key, lambda: called.append(1) or value)
        if called:
            self.charged[key] = sys.getsizeof(key) + sys.getsizeof(value) + ENTRY_OVERHEAD
            assert got == value
            self.misses += 1
            self.accepted += 1
            eff = self.cache.ttl
            self.model[key] = (value, self.clock.now + eff if eff else None)
        else:
            self._check_read(key, got, True)
            self.hits += 1

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        existed = self.cache.delete(key)
        if existed:
            assert key in self.model
            self.deleted += 1
        self.model.pop(key, None)

    @rule(dt=st.floats(0.0, 8.0))
    def advance_clock(self, dt: float) -> None:
        self.clock.now += dt

    @rule()
    def expire(self) -> None:
        self.cache.expire()
        for key, (_v, expires) in list(self.model.items()):
            if expires is not None and expires <= self.clock.now:
                del self.model[key]
                assert self.cache._policy.peek(key) is None, "expired entry not freed"

    @rule(fraction=st.floats(0.0, 1.0))
    def shrink(self, fraction: float) -> None:
        before = self.cache.metrics()["bytes"]
        freed = self.cache.shrink(fraction)
        after = self.cache.metrics()["bytes"]
        assert freed == before - after
        assert after <= before * (1 - fraction) + 1

    @precondition(lambda self: len(self.cache) > 0)
    @rule()
    def clear(self) -> None:
        held = self.cache.metrics()["bytes"]
        assert self.cache.clear() == held
        self.model.clear()

    @invariant()
    def bounds_hold(self) -> None:
        m = self.cache.metrics()
        assert m["bytes"] <= MAX_BYTES
        assert m["entries"] <= MAX_ENTRIES
        assert m["entries"] == len(self.cache)

    @invariant()
    def bytes_are_the_sum_of_exact_entry_sizes(self) -> None:
        total = 0
        for key, entry in self.cache._policy.items():
            value, _expires = self.model[key]  # nothing cached the model does not know
            if type(value) in (str, bytes):
                assert entry[1] == self.charged[key]
            total += entry[1]
        assert total == self.cache.metrics()["bytes"]

    @invariant()
    def metrics_add_up(self) -> None:
        m = self.cache.metrics()
        assert m["hits"] == self.hits
        assert m["misses"] == self.misses
        assert m["lookups"] == m["hits"] + m["misses"]
        assert m["hit_rate"] == (m["hits"] / m["lookups"] if m["lookups"] else 0.0)
        assert m["inserts"] - m["deletes"] - m["evictions_total"] == m["entries"]
        assert m["evictions_total"] == sum(m["evictions"].values())
        assert m["rejections"] == self.rejections
        assert m["deletes"] == self.deleted
        # inserts is derived from entries + deletes + evictions, so this checks that
        # every entry that left was counted once, under some cause.
        assert m["inserts"] + m["updates"] == self.accepted
        assert m["sets"] == m["inserts"] + m["updates"] + m["rejections"]
        assert m["memory_pressure"] == (m["fill_ratio"] >= 0.75)


class LRUCacheMachine(CacheMachine):
    policy = "lru"


SETTINGS = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestTinyLFUCacheModel = CacheMachine.TestCase
TestTinyLFUCacheModel.settings = SETTINGS
TestLRUCacheModel = LRUCacheMachine.TestCase
TestLRUCacheModel.settings = SETTINGS
