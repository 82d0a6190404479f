"""memdiag's walks of the collector's objects never hand a host thread a second reference
to the tuple it is building (``tuple(generator)``: ``SystemError`` in ``_PyTuple_Resize``).

Real threads, a real heap: builder threads loop ``tuple(gen())`` over generators whose
yields do a little work, while memdiag's walks (the reap pass, the container scan, the
follower's pass, the referrer look-ups) run over a heap large enough that a Python walk
outlasts the 0.1 s switch interval of ``exclusive_gil``, so the GIL is handed over
mid-walk. Before ``probes._gcwalk`` (on a loaded 2-core machine) the builders failed on
most runs; see CHANGELOG.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from memdiag.leaks import live
from memdiag.leaks.census import type_census
from memdiag.probes import python as pyprobe
from memdiag.processes import reap


def _gen(n: int):
    for i in range(n):
        sum(range(30))  # a little work per item: the builder holds its tuple a while
        yield i


def test_tracked_objects_leaves_out_only_tuples_held_once_and_counts_everything() -> None:
    held = (object(), object())
    keep = [held, held]
    objs, counts = pyprobe.tracked_objects(count=True)
    try:
        assert any(o is held for o in objs)  # three references: kept
        assert counts is not None and counts[tuple] >= 1 and counts[list] >= 1
        assert sum(counts.values()) >= len(objs)
    finally:
        del objs
    assert any(r is keep for r in pyprobe.referrers(held))
    assert type_census()[tuple] >= 1  # the census still counts tuples


@pytest.mark.slow
@pytest.mark.skipif(pyprobe._gcwalk is None, reason="probes._gcwalk not built")
def test_walks_do_not_break_tuple_builders_in_other_threads() -> None:
    heap = [{"k": i} for i in range(700_000)]  # a Python walk of this outlasts 0.1 s
    errors: list[BaseException] = []
    stop = threading.Event()

    def builder() -> None:
        while not stop.is_set():
            try:
                tuple(_gen(200))
            except BaseException as e:  # noqa: BLE001 - the failure under test
                errors.append(e)
                return

    threads = [threading.Thread(target=builder, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    target = heap[0]
    slowest = 0.0
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not errors:
            t0 = time.perf_counter()
            reap._popen_objects({child.pid})
            slowest = max(slowest, time.perf_counter() - t0)
            live._gather_containers({}, set(), native=False)
            live._referrers(target)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    del heap
    assert not errors, f"a builder failed: {errors[0]!r}"
    assert slowest > 0.1, f"the walk took {slowest:.3f} s: not long enough to force a GIL hand-over"
