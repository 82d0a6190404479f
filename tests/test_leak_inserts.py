"""The line that inserts into a growing container, read from its holder's code (issue 14:
a dict keyed by fresh strings is blamed on the insertion, not on the key expression).

A new user's session store was named at ``sid = f"session-{uuid4()}"`` (where the sampled
key strings were allocated) instead of ``_SESSIONS[sid] = sess``; an ``lru_cache(maxsize=None)``
got no line at all, then a wrong one matched by byte rate.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import time

import pytest

from memdiag.leaks import inserts
from memdiag.leaks.live import _describe, _referrers
from memdiag.leaks.livecheck import _container_suspect, _insertion_site

STORE = textwrap.dedent(
    """
    import functools
    import uuid

    _SESSIONS = {}
    _AUDIT = []
    _OTHER = {}


    class Session:
        def __init__(self, user):
            self.user = user


    def open_session(user):
        sid = f"session-{uuid.uuid4()}"  # KEY
        sess = Session(user)
        _SESSIONS[sid] = sess  # INSERT-SUBSCR
        return sid


    def copy_one(sid):
        _OTHER[sid] = _SESSIONS[sid]  # a read of _SESSIONS, an insert into _OTHER


    def look(sid):
        return _SESSIONS.get(sid), len(_AUDIT)  # reads only


    class Auditor:
        def record(self, what):
            _AUDIT.append(what)  # INSERT-APPEND

        @staticmethod
        def many(items):
            def one(x):
                _SESSIONS.setdefault(x, None)  # INSERT-NESTED
            for x in items:
                one(x)


    @functools.lru_cache(maxsize=None)  # LRU-DEF
    def price(customer):
        return [customer * 1.5] * 40
    """
)


def _line(src: str, marker: str) -> int:
    return next(i for i, line in enumerate(src.splitlines(), 1) if marker in line)


def _user_module(tmp_path, monkeypatch, name: str, source: str):
    """``source`` imported as the application's module ``name`` (from a real file), dropped
    from ``sys.modules`` afterwards."""
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield importlib.import_module(name)
    finally:
        sys.modules.pop(name, None)


@pytest.fixture
def store(tmp_path, monkeypatch):
    yield from _user_module(tmp_path, monkeypatch, "user_store", STORE)


def test_stores_and_insert_methods_are_found_and_reads_are_not(store) -> None:
    path = store.__file__
    sessions = inserts.insertion_sites("user_store", "_SESSIONS")

    def at(marker: str) -> dict[str, object]:
        return {"file": path, "line": _line(STORE, marker)}

    assert sessions == sorted([at("# INSERT-SUBSCR"), at("# INSERT-NESTED")], key=lambda s: s["line"])
    assert inserts.insertion_sites("user_store", "_AUDIT") == [at("# INSERT-APPEND")]
    assert inserts.insertion_sites("user_store", "_OTHER") == [at("a read of _SESSIONS")]
    assert inserts.insertion_sites("user_store", "NOT_THERE") == []
    assert inserts.insertion_sites("no_such_module_here", "_SESSIONS") == []
    assert inserts.lru_site(store.price) == {"file": path, "line": _line(STORE, "# LRU-DEF")}


def test_a_dict_keyed_by_fresh_strings_is_named_at_its_insertion(store) -> None:
    """The verdict's line is the insertion; the line that allocated the entries (here the
    key's, as a sampled heap would say) follows it in the traceback."""
    for i in range(300):
        store.open_session(f"user{i}")
    info = _describe(store._SESSIONS, _referrers(store._SESSIONS))
    assert info["holder"] == "user_store._SESSIONS"
    key_line = _line(STORE, "# KEY")
    c = {**info, "file": store.__file__, "line": key_line, "type": "dict", "object_id": id(store._SESSIONS),
         "items_per_min": 600.0, "z": 5.0, "len": 300}  # fmt: skip
    site = _insertion_site(c, info["inserted_at"])
    s = _container_suspect(c, site, 600.0 * info["bytes_per_item"])
    assert (s["file"], s["line"]) == (store.__file__, _line(STORE, "# INSERT-SUBSCR"))
    assert s["evidence"]["site_from"] == "insertion"
    assert s["evidence"]["entries_allocated_at"] == f"{store.__file__}:{key_line}"
    assert s["traceback"][-1] == f"{store.__file__}:{key_line}"
    assert f"{store.__file__}:{_line(STORE, '# INSERT-SUBSCR')}" in s["suggestion"]


def test_an_lru_cache_is_named_at_the_function_it_caches(store) -> None:
    for i in range(200):
        store.price(i)
    cache = next(r for r in _referrers_of_lru(store.price))
    info = _describe(cache, _referrers(cache))
    assert info["holder"].startswith("lru_cache of user_store.price")
    assert info["inserted_at"] == [{"file": store.__file__, "line": _line(STORE, "# LRU-DEF")}]


def _referrers_of_lru(wrapper):
    """The lru_cache's own dict (its cache): a dict the wrapper refers to, keyed by argument tuples."""
    import gc

    return [r for r in gc.get_referents(wrapper) if isinstance(r, dict) and len(r) >= 100]


def test_a_line_matched_by_rate_alone_says_so() -> None:
    """Without an insertion read from code or a sampled entry, a container's line is the
    heap line growing at its rate, which another line at a like rate can be instead (a new
    user's lru_cache was named at a bounded loader's line): the verdict says it is a match."""
    from memdiag.leaks.livecheck import _matched

    c = {"type": "dict", "object_id": 1, "items_per_min": 600.0, "z": 5.0, "holder": None}
    s = _container_suspect(c, _matched({"file": "/srv/loader.py", "line": 57}), 1e6)
    assert s["evidence"]["site_from"] == "rate_match"
    assert "/srv/loader.py:57 (probably" in s["suggestion"]
    assert _matched(None) is None


def test_a_containers_verdict_under_a_new_line_replaces_the_old_one(monkeypatch) -> None:
    """A container first named at a line matched by rate, then at its sampled entries' line:
    the second verdict replaces the first at once (a new user's closure leak was listed at
    both lines for 50 s)."""
    from memdiag.leaks.livecheck import LiveChecker

    live = LiveChecker()
    monkeypatch.setattr(LiveChecker, "heap_running", property(lambda self: True))
    c = {"object_id": 77, "type": "list", "holder": None, "len": 900, "items_per_min": 800.0,
         "bytes_per_item": 1200.0, "z": 6.0, "followed_seconds": 90.0, "turnover": False}  # fmt: skip
    line_24 = {"file": "/srv/events.py", "line": 24, "domain": "python", "blocks_per_min": 800.0,
               "growth_bytes_per_min": 960000.0, "traceback": ["/srv/events.py:24"]}  # fmt: skip
    monkeypatch.setattr(live.containers, "growing", lambda now: [dict(c)])
    monkeypatch.setattr(live.heap, "growing", lambda now, floor: [line_24])
    first = [s for s in live.memory_suspects(100.0, 131072.0) if s["kind"] == "python_objects"]
    assert [(s["line"], s["evidence"]["site_from"]) for s in first] == [(24, "rate_match")]
    assert "replaces" not in first[0]["evidence"]
    monkeypatch.setattr(live.containers, "growing", lambda now: [{**c, "file": "/srv/events.py", "line": 26,
                                                                   "site_from": "sampled_entries"}])  # fmt: skip
    second = [s for s in live.memory_suspects(110.0, 131072.0) if s["kind"] == "python_objects"]
    assert [s["line"] for s in second] == [26]
    assert second[0]["evidence"]["replaces"] == [first[0]["id"]]
    third = [s for s in live.memory_suspects(120.0, 131072.0) if s["kind"] == "python_objects"]
    assert "replaces" not in third[0]["evidence"]


def test_of_several_insertions_the_one_nearest_the_entries_allocation_is_named() -> None:
    c = {"file": "/srv/reg.py", "line": 40, "object_id": 1}
    inserted = [{"file": "/srv/reg.py", "line": n} for n in (12, 42, 90)]
    site = _insertion_site(c, inserted)
    assert site["line"] == 42
    assert site["traceback"] == [f"/srv/reg.py:{n}" for n in (42, 12, 90, 40)]
    assert _insertion_site({"object_id": 1}, inserted)["line"] == 12  # no allocation known: the first


HOLDERS = textwrap.dedent(
    """
    import collections
    import os
    import uuid


    class Base:
        pass


    class AuditTrail:
        def __init__(self):
            self._history = []

        def note(self, i):
            rec = {"req": i, "detail": os.urandom(300).hex()}
            self._history.append(rec)  # INSERT-ATTR

        def last(self):
            return self._history[-1]  # a read


    AUDIT = AuditTrail()


    class Handler(Base):
        _registry = {}

        def __init__(self, i):
            self.session = f"sess-{i}-{uuid.uuid4().hex}"
            self.state = {"step": 1, "scratch": os.urandom(300).hex()}
            Handler._registry[self.session] = self  # INSERT-CLASS


    ERRORS = []


    def parse(i):
        raw = os.urandom(300).hex()
        raise ValueError(f"order {i} failed")


    class EventBus:
        def __init__(self):
            self._subs = collections.defaultdict(list)

        def subscribe(self, topic, fn):
            self._subs[topic].append(fn)  # INSERT-NESTED-ITEM

        def publish(self, topic, evt):
            for fn in self._subs[topic][-3:]:  # a read
                fn(evt)


    BUS = EventBus()


    def on_request(i):
        ctx = {"req": i, "body": os.urandom(300).hex()}

        def done(evt):
            return ctx["req"], evt

        BUS.subscribe("order.done", done)


    class Service:
        def __init__(self):
            self.table = list(range(50_000))  # long-lived, 400 KB

        def handle(self, i):
            try:
                parse(i)
            except ValueError as e:
                ERRORS.append(e)  # INSERT-ERRORS
    """
)


@pytest.fixture
def holders(tmp_path, monkeypatch):
    yield from _user_module(tmp_path, monkeypatch, "user_holders", HOLDERS)


def _traced_per_call(fn, n: int = 300) -> float:
    """tracemalloc's bytes kept per call of ``fn(i)``, over ``n`` calls."""
    import tracemalloc

    tracemalloc.start()
    try:
        t0 = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            fn(i)
        return (tracemalloc.get_traced_memory()[0] - t0) / n
    finally:
        tracemalloc.stop()


def _described(get):
    """``_describe`` of the container ``get()`` returns, no local of this frame referring to it."""
    obj = get()
    refs = _referrers(obj)
    return _describe(obj, refs)


def test_containers_held_as_attributes_are_named_at_their_insertions(holders) -> None:
    """A new user's long-lived singleton (``self._history.append(rec)``, the object held by a
    module global) and a class-level registry of a subclass (``Handler._registry[sid] =
    self``): no holder and no line (the instance's attributes live in the object itself
    since 3.11, not in a dict; the subclass's namespace has no ``__dict__`` entry), and the
    registry's bytes per entry 60 % low. Both are named at their insertion now."""
    per_handler = _traced_per_call(holders.Handler)
    for i in range(300):
        holders.AUDIT.note(i)
    path = holders.__file__
    audit = _described(lambda: holders.AUDIT._history)
    assert audit["holder"] == "user_holders.AUDIT._history"
    assert audit["inserted_at"] == [{"file": path, "line": _line(HOLDERS, "# INSERT-ATTR")}]
    reg = _described(lambda: holders.Handler._registry)
    assert reg["holder"] == "user_holders.Handler._registry"
    assert reg["inserted_at"] == [{"file": path, "line": _line(HOLDERS, "# INSERT-CLASS")}]
    assert abs(reg["bytes_per_item"] - per_handler) <= 0.25 * per_handler, (reg, per_handler)


def test_kept_exceptions_count_what_their_tracebacks_keep(holders) -> None:
    """A list of caught exceptions keeps their tracebacks, whose frames keep their locals:
    the bytes per entry counted the exception alone (~10 %) and no verdict came. A method's
    ``self`` (here a long-lived service holding a 400-KB table) is not the error's own."""
    service = holders.Service()  # every handle() frame's self: not an entry's bytes
    per_error = _traced_per_call(service.handle)
    info = _described(lambda: holders.ERRORS)
    assert info["holder"] == "user_holders.ERRORS"
    assert info["inserted_at"] == [{"file": holders.__file__, "line": _line(HOLDERS, "# INSERT-ERRORS")}]
    assert 0.75 * per_error <= info["bytes_per_item"] <= 1.25 * per_error, (info, per_error)


def test_a_container_seen_evicting_loses_its_verdict_at_once(diag, monkeypatch) -> None:
    """A TTL cache fills linearly for its TTL (90 s in a new user's twin): a verdict while it
    fills cannot be told from a leak's. Once its sweeps delete entries (turnover), the
    verdict went only after the minute-long hold that keeps flickering evidence listed; it
    is withdrawn at the next check now."""
    from memdiag.leaks.detector import LeakDetector

    det = LeakDetector(diag)
    live = det.live
    monkeypatch.setattr(type(live), "heap_running", property(lambda self: True))
    monkeypatch.setattr(live.heap, "growing", lambda now, floor: [])
    c = {"object_id": 5, "type": "dict", "holder": "svc.SESSIONS", "len": 800, "items_per_min": 1200.0,
         "bytes_per_item": 2000.0, "z": 6.0, "followed_seconds": 40.0, "turnover": False,
         "inserted_at": [{"file": "/srv/svc.py", "line": 15}]}  # fmt: skip
    monkeypatch.setattr(live.containers, "growing", lambda now: [dict(c)])
    t = time.time()
    first = {s["id"]: s for s in live.memory_suspects(t, 131072.0)}
    assert list(first) == ["python_objects:/srv/svc.py:15"] and live.retracted == set()
    det._commit(first, t, 300.0, None)
    monkeypatch.setattr(live.containers, "growing", lambda now: [{**c, "turnover": True}])
    second = {s["id"]: s for s in live.memory_suspects(t + 10, 131072.0)}
    assert second == {} and live.retracted == {"python_objects:/srv/svc.py:15"}
    det._commit(second, t + 10, 300.0, None)
    assert det.suspects() == []
    # a verdict that merely lapses (no eviction seen) is still held
    monkeypatch.setattr(live.containers, "growing", lambda now: [dict(c, object_id=6)])
    det._commit({s["id"]: s for s in live.memory_suspects(t + 20, 131072.0)}, t + 20, 300.0, None)
    monkeypatch.setattr(live.containers, "growing", lambda now: [])
    det._commit({s["id"]: s for s in live.memory_suspects(t + 30, 131072.0)}, t + 30, 300.0, None)
    assert [s["id"] for s in det.suspects()] == ["python_objects:/srv/svc.py:15"]


def test_a_list_in_a_dict_held_as_an_attribute_is_named_at_its_insertion(holders) -> None:
    """Subscribers kept in a ``defaultdict(list)`` on an event bus (``self._subs[topic]
    .append(fn)``), each closure keeping its request's context: a new user's service got
    "a dict entry 'order.done'" and a line matched by rate that came and went. The holder is
    ``module.BUS._subs['order.done']``, the line the append."""
    for i in range(300):
        holders.on_request(i)
    info = _described(lambda: holders.BUS._subs["order.done"])
    assert info["holder"] == "user_holders.BUS._subs['order.done']"
    assert info["inserted_at"] == [{"file": holders.__file__, "line": _line(HOLDERS, "# INSERT-NESTED-ITEM")}]
    assert inserts.insertion_sites("user_holders", "_subs", attribute=True) == []  # the dict itself: never stored into
