"""The container scan's walk in C (``memdiag.leaks._scan``) against the Python walk.

Leak detection walks every object the collector tracks with the other threads held off;
the C walk exists to make that stall short (``python benchmarks/bench_scan.py``).
It must give exactly the Python walk's results, refuse bad arguments with a TypeError,
and pass under AddressSanitizer.
"""

from __future__ import annotations

import collections
import gc
import os
import textwrap

import pytest

from memdiag.leaks import _scan, live  # built by `pip install` (setup.py): a missing build fails here


def _heap() -> dict[str, object]:
    """Every case the walk tells apart, kept alive by the returned dict."""
    od = collections.OrderedDict((i, str(i)) for i in range(150))
    od.move_to_end(0)  # its first item is now 1: the dict order and the iteration order differ
    dd = collections.defaultdict(list, {i: [i] for i in range(120)})
    untracked = {f"k{i}": i for i in range(130)}  # only str -> int: not tracked by the collector
    assert not gc.is_tracked(untracked)
    holder = {"sessions": untracked}  # found through a tracked dict's values
    in_cell = {f"c{i}": i for i in range(140)}
    closure = (lambda: in_cell)  # noqa: E731 - a cell holding an untracked dict
    small = [1, 2, 3]  # under the size floor, found only when known
    return {
        "list": [object() for _ in range(200)],
        "dict": {i: [i] for i in range(110)},
        "set": {(i,) for i in range(105)},
        "deque": collections.deque([[i] for i in range(101)]),
        "od": od,
        "dd": dd,
        "holder": holder,
        "closure": closure,
        "small": small,
        "empty_known": [],
    }


def test_the_c_walk_gives_the_python_walks_results() -> None:
    heap = _heap()
    known = {id(heap["small"]): None, id(heap["empty_known"]): None}
    want = {id(heap["od"]), id(heap["holder"]["sessions"]), id(heap["small"])}
    objs = gc.get_objects()  # one list for both walks (a walk's own results are containers too)
    c_found, c_heads, c_picked = _scan.gather(
        objs, live._CONTAINER_TYPES, live._ORDERED_TYPES, live._CELL, known, want, live.CONTAINER_MIN_LEN
    )
    p_found, p_heads, p_picked = live._gather_py(objs, known, want)
    del objs
    assert c_found == p_found
    assert c_heads == p_heads
    assert sorted(map(id, c_picked)) == sorted(map(id, p_picked))
    # and what the cases are there for
    for name in ("list", "dict", "set", "deque", "od", "dd"):
        assert id(heap[name]) in c_found, name
    assert c_found[id(heap["small"])] == (list, 3)  # known: reported below the floor
    assert c_found[id(heap["empty_known"])] == (list, 0)
    assert id(heap["holder"]["sessions"]) in c_found  # untracked, through a dict's values
    assert id(heap["closure"].__closure__[0].cell_contents) in c_found  # untracked, in a cell
    assert c_heads[id(heap["od"])] == id(next(iter(heap["od"])))  # iteration order, not dict order
    assert c_heads[id(heap["deque"])] == id(heap["deque"][0])
    assert id(heap["set"]) not in c_heads  # a set has no order
    assert {id(p) for p in c_picked} == want


def test_the_one_call_walk_finds_the_same_containers() -> None:
    """``gather_all`` takes the collector's list itself (no copy, no list ever seen by
    Python): the same results for every case as ``gather`` over ``gc.get_objects()``."""
    heap = _heap()
    known = {id(heap["small"]): None, id(heap["empty_known"]): None}
    want = {id(heap["od"]), id(heap["holder"]["sessions"]), id(heap["small"])}
    args = (live._CONTAINER_TYPES, live._ORDERED_TYPES, live._CELL, known, want, live.CONTAINER_MIN_LEN)
    a_found, a_heads, a_picked = _scan.gather_all(*args)
    objs = gc.get_objects()
    g_found, g_heads, g_picked = _scan.gather(objs, *args)
    del objs
    cases = [id(v) for v in heap.values()] + [id(heap["holder"]["sessions"]), id(heap["closure"].__closure__[0].cell_contents)]
    assert {i: a_found.get(i) for i in cases} == {i: g_found.get(i) for i in cases}
    assert all(a_found[i] is not None for i in cases if i in g_found)
    assert {i: a_heads.get(i) for i in cases} == {i: g_heads.get(i) for i in cases}
    assert {id(p) for p in a_picked} == {id(p) for p in g_picked} == want
    assert gc.isenabled()  # the collector is back on
    with pytest.raises(TypeError):
        _scan.gather_all(frozenset(live._CONTAINERS), live._ORDERED_TYPES, live._CELL, {}, set(), 100)
    assert gc.isenabled()


def test_bad_arguments_are_a_type_error_and_change_nothing() -> None:
    objs = [[1] * 200]
    ok = (live._CONTAINER_TYPES, live._ORDERED_TYPES, live._CELL)
    with pytest.raises(TypeError):
        _scan.gather(tuple(objs), *ok, {}, set(), 100)  # not a list
    with pytest.raises(TypeError):
        _scan.gather(objs, frozenset(live._CONTAINERS), live._ORDERED_TYPES, live._CELL, {}, set(), 100)
    with pytest.raises(TypeError):
        _scan.gather(objs, *ok, {"not an id": 1}, set(), 100)
    with pytest.raises(TypeError):
        _scan.gather(objs, *ok, {}, None, 100)
    found, heads, picked = _scan.gather(objs, *ok, {}, set(), 100)
    assert found == {id(objs[0]): (list, 200)} and heads == {id(objs[0]): id(objs[0][0])} and picked == []


ASAN_SCRIPT = textwrap.dedent(
    """
    import collections, gc, importlib.util, sys
    spec = importlib.util.spec_from_file_location("memdiag.leaks._scan", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from memdiag.leaks import live
    live._scan_gather = mod.gather
    live._scan_gather_all = mod.gather_all
    sys.path.insert(0, sys.argv[2])
    from test_container_scan import _heap
    for round in range(30):
        heap = _heap()
        known = {id(heap["small"]): None}
        want = {id(heap["od"]), id(heap["small"])}
        objs = gc.get_objects()
        c = mod.gather(objs, live._CONTAINER_TYPES, live._ORDERED_TYPES, live._CELL, known, want, live.CONTAINER_MIN_LEN)
        p = live._gather_py(objs, known, want)
        del objs
        assert c[0] == p[0] and c[1] == p[1], round
        live._gather_containers(known, want, native=True)  # the real path: gather_all
        a = mod.gather_all(live._CONTAINER_TYPES, live._ORDERED_TYPES, live._CELL, known, want, live.CONTAINER_MIN_LEN)
        assert a[0][id(heap["od"])] == p[0][id(heap["od"])], round
        for bad in ((), None, 1):
            try:
                mod.gather(bad, live._CONTAINER_TYPES, live._ORDERED_TYPES, live._CELL, {}, set(), 100)
            except TypeError:
                pass
    print("ok", mod.__file__)
    """
)


@pytest.mark.slow
def test_asan_build_of_the_walk(tmp_path) -> None:
    """``_scan.c`` built with -fsanitize=address; libasan preloaded into an uninstrumented
    Python (tests/_asan.py), the equivalence run 30 times."""
    from ._asan import asan_build, asan_run  # not at the top: the ASan script imports this module alone

    so = asan_build(os.path.join(os.path.dirname(live.__file__), "_scan.c"), tmp_path)
    script = tmp_path / "asan_scan.py"
    script.write_text(ASAN_SCRIPT)
    out = asan_run([str(script), str(so), os.path.dirname(os.path.abspath(__file__))])
    assert out.startswith("ok ") and str(so) in out


GCWALK_ASAN_SCRIPT = textwrap.dedent(
    """
    import gc, importlib.util, sys, threading
    spec = importlib.util.spec_from_file_location("memdiag.probes._gcwalk", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    stop = threading.Event()
    def gen():
        for i in range(100):
            sum(range(20))
            yield i
    def builder():
        while not stop.is_set():
            tuple(gen())
    threads = [threading.Thread(target=builder) for _ in range(3)]
    for t in threads:
        t.start()
    heap = [(i, [i]) for i in range(50_000)]
    for round in range(40):
        objs, pairs = mod.objects(round % 2 == 0)
        assert sum(n for _, n in pairs) >= len(objs) if pairs is not None else pairs is None
        assert not any(type(o) is tuple and sys.getrefcount(o) <= 3 for o in objs[:1000] if o is not objs)
        del objs
        assert any(r is heap for r in mod.referrers(heap[round]))
        for bad in ((), None):
            mod.referrers(bad)
    stop.set()
    for t in threads:
        t.join()
    print("ok", mod.__file__)
    """
)


@pytest.mark.slow
def test_asan_build_of_the_gc_walk(tmp_path) -> None:
    """``probes/_gcwalk.c`` built with -fsanitize=address, its lists taken 40 times while
    threads build tuples from generators."""
    from ._asan import asan_build, asan_run  # not at the top: see test_asan_build_of_the_walk
    from memdiag.probes import python as pyprobe

    so = asan_build(os.path.join(os.path.dirname(pyprobe.__file__), "_gcwalk.c"), tmp_path)
    script = tmp_path / "asan_gcwalk.py"
    script.write_text(GCWALK_ASAN_SCRIPT)
    out = asan_run([str(script), str(so)])
    assert out.startswith("ok ") and str(so) in out
