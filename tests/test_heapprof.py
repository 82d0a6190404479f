"""The sampled heap profiler (memdiag.leaks.heapprof and its C extension), really run.

Statistical assertions use tolerances of four to five standard deviations of the
sampling error (a sample per ``interval`` bytes: relative error ~ 1/sqrt(samples)).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from memdiag.leaks import heapprof

from ._asan import asan_build, asan_run
from .conftest import wait_for

native_ok, native_reason = heapprof.available()
needs_native = pytest.mark.skipif(not native_ok, reason=f"native sampler not built: {native_reason}")


@pytest.fixture
def sampler() -> Iterator[None]:
    heapprof.stop()
    heapprof.start(32 * 1024, 16)
    try:
        yield
    finally:
        heapprof.stop()


def _site_bytes(profile: heapprof.HeapProfile, lineno: int, live: bool = True) -> float:
    here = os.path.abspath(__file__)
    return sum(
        (s.live_bytes if live else s.alloc_bytes)
        for s in profile.sites
        if s.stack and s.stack[0].filename == here and s.stack[0].lineno == lineno
    )


def _line_of(marker: str) -> int:
    with open(__file__, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if marker in line and "_line_of" not in line:
                return n
    raise AssertionError(marker)


def test_the_extension_is_built_here() -> None:
    # CI builds it on install (setup.py); a missing build would silently test only the fallback.
    assert native_ok, native_reason
    assert heapprof.backend() in ("native", "preload")


@needs_native
@pytest.mark.parametrize("size,count", [(47, 200_000), (4000, 4096), (256 * 1024, 64)])
def test_estimates_are_unbiased(sampler: None, size: int, count: int) -> None:
    keep: list[bytes] = [b""] * count  # pre-sized: the site below allocates only the bytes objects
    for i in range(count):
        keep[i] = bytes(size)  # ALLOC-SITE-1
    true = sum(sys.getsizeof(b) for b in keep)
    line = _line_of("ALLOC-SITE-1")
    prof = heapprof.snapshot()
    est_live, est_alloc = _site_bytes(prof, line), _site_bytes(prof, line, live=False)
    samples = true / prof.interval_bytes
    tol = max(0.03, 4.5 / samples**0.5)
    assert abs(est_live - true) / true < tol, (size, est_live, true, tol)
    assert abs(est_alloc - true) / true < tol + 0.02
    assert prof.backend in ("native", "preload") and prof.interval_bytes == 32 * 1024
    assert 0 < prof.overhead_bytes < 64 * 1024 * 1024
    del keep


@needs_native
def test_frees_are_seen_and_the_live_heap_drops(sampler: None) -> None:
    keep = [bytearray(1000) for _ in range(20_000)]  # ALLOC-SITE-2
    line = _line_of("ALLOC-SITE-2")
    before = _site_bytes(heapprof.snapshot(), line)
    assert before > 10e6
    del keep
    prof = heapprof.snapshot()
    assert _site_bytes(prof, line) < 0.02 * before
    assert _site_bytes(prof, line, live=False) > 10e6  # churn is remembered


@needs_native
def test_every_free_is_seen_when_blocks_share_a_filter_slot() -> None:
    """Interval 1 byte: every block is sampled, with weight 1. 12 000 blocks of 433 bytes
    span over 5 MiB, so the free filter's 1 MiB window wraps and blocks share its slots:
    freeing one must leave its slot-mates visible (the live count stays exact). Small
    sampled blocks are served by the raw allocator (their frees come back through the raw
    hook): this also checks that every one of those frees is seen."""
    heapprof.stop()
    heapprof.start(1, 4)
    try:
        keep: list[bytes] = [b""] * 12_000
        for i in range(12_000):
            keep[i] = bytes(400)  # EVERY-SITE
        line = _line_of("EVERY-SITE")

        def live_count() -> float:
            here = os.path.abspath(__file__)
            return sum(s.live_count for s in heapprof.snapshot().sites if s.stack and s.stack[0].filename == here
                       and s.stack[0].lineno == line)  # fmt: skip

        assert live_count() == pytest.approx(12_000, abs=0.5)
        del keep[::2]
        assert live_count() == pytest.approx(6_000, abs=0.5)
        del keep
        assert live_count() == pytest.approx(0, abs=0.5)
        assert heapprof.stats()["dropped"] == 0
    finally:
        heapprof.stop()


FREES_SCRIPT = """
import json, sys, tracemalloc
if sys.argv[1] == "tracemalloc-first":
    tracemalloc.start(1)
from memdiag.leaks import heapprof
heapprof.start(1, 4)
keep = [bytes(100) for _ in range(5000)]  # small blocks: rerouted over plain pymalloc
big = [bytearray(2000) for _ in range(500)]
before = heapprof.stats()["samples_live"]
del keep, big
after = heapprof.stats()["samples_live"]
print(json.dumps({"before": before, "after": after}))
"""


@needs_native
@pytest.mark.parametrize(
    "setup", ["pymalloc", "PYTHONMALLOC=malloc", "PYTHONMALLOC=pymalloc_debug", "tracemalloc-first"]
)
def test_frees_are_seen_under_every_allocator(setup: str) -> None:
    """Over plain pymalloc the mem/object frees are not hooked (sampled small blocks are
    served by the raw allocator); under any other allocator they are: either way every
    free of a sampled block leaves the live heap."""
    env = dict(os.environ)
    env.pop("PYTHONMALLOC", None)
    if setup.startswith("PYTHONMALLOC="):
        env["PYTHONMALLOC"] = setup.split("=", 1)[1]
    out = subprocess.run([sys.executable, "-c", FREES_SCRIPT, setup], capture_output=True, text=True, timeout=120,
                         env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] >= 5500, got
    assert got["after"] < 0.02 * got["before"], got


@needs_native
def test_realloc_moves_the_sample(sampler: None) -> None:
    buf = bytearray()
    for _ in range(4000):
        buf += b"x" * 1000  # REALLOC-SITE (a growing buffer: realloc after realloc)
    prof = heapprof.snapshot()
    line = _line_of("REALLOC-SITE")
    live = _site_bytes(prof, line)
    # one 4 MB block is live, not the sum of all its former sizes
    assert 0.5 * len(buf) < live < 2.0 * len(buf), live
    del buf
    assert _site_bytes(heapprof.snapshot(), line) < 0.5e6


@needs_native
def test_ignored_threads_and_memdiag_threads_are_not_sampled(sampler: None) -> None:
    kept: list[object] = []

    def work(ignore: bool) -> None:
        if ignore:
            heapprof.ignore_current_thread()
        kept.append([bytes(1000) for _ in range(10_000)])  # THREAD-SITE

    t1 = threading.Thread(target=work, args=(True,))
    t1.start()
    t1.join()
    go = threading.Event()

    def named() -> None:
        go.wait(10)
        work(False)

    t2 = threading.Thread(target=named, name="memdiag-test-worker")
    t2.start()
    heapprof.snapshot()  # every snapshot refreshes the set of memdiag-* threads
    go.set()
    t2.join()
    assert len(kept) == 2
    line = _line_of("THREAD-SITE")
    assert _site_bytes(heapprof.snapshot(), line) == 0
    t3 = threading.Thread(target=work, args=(False,))
    t3.start()
    t3.join()
    assert _site_bytes(heapprof.snapshot(), line) > 5e6


@needs_native
def test_memdiag_frames_are_left_out(sampler: None) -> None:
    from memdiag.leaks import export

    junk = [export._varint(i * 1000) for i in range(100_000)]  # allocated inside memdiag
    prof = heapprof.snapshot()
    own = os.path.dirname(heapprof.__file__)
    for s in prof.sites:
        assert not any(f.filename.startswith(own) for f in s.stack), s
    del junk


@needs_native
def test_reentrancy_with_tracemalloc_on_top(sampler: None) -> None:
    import tracemalloc

    from memdiag.leaks import _heapprof

    tracemalloc.start(1)  # wraps our hooks
    try:
        keep = [bytes(3000) for _ in range(5000)]  # TM-SITE
        stat = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, __file__)])
        assert sum(s.size for s in stat.statistics("lineno")) > 10e6
    finally:
        tracemalloc.stop()  # puts our hooks back on top
    line = _line_of("TM-SITE")
    assert _site_bytes(heapprof.snapshot(), line) > 10e6  # both profilers saw the allocations
    tracemalloc.start(1)
    try:
        heapprof.stop()  # tracemalloc is on top: ours stay in its chain, passive
        assert _heapprof.chained() and not heapprof.running()
        more = [bytes(3000) for _ in range(1000)]
    finally:
        tracemalloc.stop()
    heapprof.start(32 * 1024, 16)  # re-enabled in place, samples start afresh
    assert heapprof.snapshot().samples_live < 5  # (the few made since start())
    del keep, more
    heapprof.stop()
    assert not _heapprof.chained()


@needs_native
def test_fork_child_starts_afresh(sampler: None) -> None:
    keep = [bytes(2000) for _ in range(10_000)]
    stop = threading.Event()

    def churn() -> None:  # allocations in flight while the process forks
        while not stop.is_set():
            [str(i) * 10 for i in range(1000)]

    t = threading.Thread(target=churn)
    t.start()
    try:
        parent_live = heapprof.snapshot().samples_live
        assert parent_live > 300  # the 20 MB kept above, one sample per 32 KiB
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                first = heapprof.snapshot()
                mine = [bytes(2000) for _ in range(10_000)]  # CHILD-SITE
                second = heapprof.snapshot()
                out = {
                    "live0": first.samples_live,
                    "child": _site_bytes(second, _line_of("CHILD-SITE")),
                    "running": heapprof.running(),
                }
                os.write(w, json.dumps(out).encode())
                del mine
            finally:
                os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 4096):
            data += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        res = json.loads(data)
        assert res["running"]
        # the parent's samples were forgotten (the few left: the child's own after-fork work)
        assert res["live0"] < parent_live / 10, (res, parent_live)
        assert res["child"] > 5e6  # and the child samples its own
    finally:
        stop.set()
        t.join()
    del keep


def test_bad_arguments_leave_state_intact() -> None:
    was = heapprof.running()
    for kwargs in ({"interval_bytes": 0}, {"interval_bytes": -5}, {"interval_bytes": 1.5}, {"max_frames": 0}):
        with pytest.raises(ValueError):
            heapprof.start(**kwargs)  # type: ignore[arg-type]
    assert heapprof.running() == was


def test_fallback_says_so_once_and_stands_in_with_tracemalloc() -> None:
    code = textwrap.dedent(
        """
        import logging, sys
        sys.modules["memdiag.leaks._heapprof"] = None  # as if it could not be built
        records = []
        class H(logging.Handler):
            def emit(self, r): records.append(r.getMessage())
        logging.getLogger("memdiag").addHandler(H())
        from memdiag.leaks import heapprof
        ok, why = heapprof.available()
        heapprof.start(); heapprof.start()
        keep = [bytes(1000) for _ in range(1000)]
        p = heapprof.snapshot()
        heapprof.stop()
        import tracemalloc
        print(ok, heapprof.backend(), p.backend, len([m for m in records if "falling back" in m]), bool(why),
              sum(s.live_bytes for s in p.sites) > 1e6, tracemalloc.is_tracing())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "tracemalloc", "tracemalloc", "1", "True", "True", "False"]


# -- export ---------------------------------------------------------------------------------
def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def _decode(buf: bytes) -> dict[int, list[object]]:
    """A minimal protobuf reader (wire types 0 and 2): {field: [values]}. Written here
    because neither the protobuf package nor `go tool pprof` is installed on this machine."""
    out: dict[int, list[object]] = {}
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(buf, i)
        elif wire == 2:
            n, i = _read_varint(buf, i)
            v, i = buf[i : i + n], i + n
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        out.setdefault(field, []).append(v)
    return out


def _packed_ints(b: bytes) -> list[int]:
    vals, i = [], 0
    while i < len(b):
        v, i = _read_varint(b, i)
        vals.append(v)
    return vals


def _profile() -> heapprof.HeapProfile:
    F = heapprof.Frame
    a, b, c = F("/app/a.py", 10, "leak"), F("/app/b.py", 20, "handler"), F("", 0, "<no Python frame>")
    return heapprof.HeapProfile(
        taken_at=time.monotonic(),
        sites=(
            heapprof.HeapSite((a, b), "python", 1000.0, 10.0, 5000.0, 50.0),
            heapprof.HeapSite((c,), "native", 300.0, 3.0, 300.0, 3.0),
        ),
        interval_bytes=512 * 1024,
        samples_live=2,
        dropped=0,
        overhead_bytes=1,
        backend="native",
    )


def test_pprof_decodes(tmp_path) -> None:
    from memdiag.leaks.export import write_pprof

    path = tmp_path / "heap.pb.gz"
    write_pprof(_profile(), str(path))
    msg = _decode(gzip.decompress(path.read_bytes()))
    strings = [s.decode() for s in msg[6]]  # type: ignore[union-attr]
    assert strings[0] == ""
    types = [_decode(v) for v in msg[1]]  # type: ignore[arg-type]
    names = [(strings[t[1][0]], strings[t[2][0]]) for t in types]  # type: ignore[index]
    assert ("alloc_space", "bytes") in names and ("inuse_space", "bytes") in names
    assert strings[msg[14][0]] == "inuse_space"  # type: ignore[index]
    funcs = {f[1][0]: _decode(v) for v in msg[5] for f in [_decode(v)]}  # type: ignore[arg-type, index]
    locs = {}
    for v in msg[4]:
        loc = _decode(v)  # type: ignore[arg-type]
        line = _decode(loc[4][0])  # type: ignore[arg-type]
        fn = funcs[line[1][0]]
        locs[loc[1][0]] = (strings[fn[4][0]] if 4 in fn else "", line.get(2, [0])[0], strings[fn[3][0]])
    samples = [_decode(v) for v in msg[2]]  # type: ignore[arg-type]
    first = samples[0]
    stack = [locs[i] for i in _packed_ints(first[1][0])]  # type: ignore[arg-type]
    assert stack == [("/app/a.py", 10, "leak"), ("/app/b.py", 20, "handler")]  # leaf first
    idx = names.index(("inuse_space", "bytes"))
    assert _packed_ints(first[2][0])[idx] == 1000  # type: ignore[arg-type]
    assert _packed_ints(first[2][0])[names.index(("alloc_space", "bytes"))] == 5000  # type: ignore[arg-type]
    label = _decode(first[3][0])  # type: ignore[arg-type]
    assert (strings[label[1][0]], strings[label[2][0]]) == ("domain", "python")  # type: ignore[index]
    assert msg[12] == [512 * 1024]


def test_speedscope_has_the_schema_shape(tmp_path) -> None:
    from memdiag.leaks.export import write_speedscope

    path = tmp_path / "heap.speedscope.json"
    write_speedscope(_profile(), str(path))
    doc = json.loads(path.read_text())
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = doc["shared"]["frames"]
    assert all(isinstance(f["name"], str) for f in frames)
    for p in doc["profiles"]:
        assert p["type"] == "sampled" and p["unit"] == "bytes"
        assert set(p) >= {"name", "startValue", "endValue", "samples", "weights"}
        assert len(p["samples"]) == len(p["weights"])
        assert p["endValue"] == sum(p["weights"])
        for stack in p["samples"]:
            assert all(isinstance(i, int) and 0 <= i < len(frames) for i in stack)
    live = doc["profiles"][0]
    root_first = [frames[i]["name"].split()[0] for i in live["samples"][0]]
    assert root_first == ["handler", "leak"]
    assert live["weights"] == [1000]


@needs_native
def test_snapshot_is_cheap_and_exports_a_real_profile(sampler: None, tmp_path) -> None:
    keep = [{"k": i, "v": str(i) * 5} for i in range(100_000)]
    from memdiag.leaks.export import write_pprof, write_speedscope

    t0 = time.perf_counter()
    prof = heapprof.snapshot()
    assert time.perf_counter() - t0 < 0.1
    write_pprof(prof, str(tmp_path / "p.pb.gz"))
    write_speedscope(prof, str(tmp_path / "p.json"))
    assert _decode(gzip.decompress((tmp_path / "p.pb.gz").read_bytes()))[2]
    del keep


REALLOC_SCRIPT = """
import json, os, sys
from memdiag.leaks import heapprof
heapprof.start(1, 4)
def grow(n):
    b = bytearray(8)
    for _ in range(n):
        b += b"x" * 40  # GROW-SITE
    return b
keep = [grow(5) for _ in range(2000)] + [grow(20) for _ in range(2000)]
line = [n for n, t in enumerate(open(__file__), 1) if "GROW-SITE" in t and "n, t" not in t][0]
def at_line():
    sites = [s for s in heapprof.snapshot().sites if s.stack and s.stack[0].lineno == line]
    return sum(s.live_count for s in sites), sum(s.live_bytes for s in sites)
count, size = at_line()
expected = sum(len(b) + 1 for b in keep)
del keep
print(json.dumps({"count": count, "size": size, "expected": expected, "after": at_line()[0],
                  "dropped": heapprof.stats()["dropped"]}))
"""


def test_reallocs_under_and_over_pymallocs_limit_keep_the_live_heap_exact(tmp_path) -> None:
    """Interval 1 byte (every allocation sampled, weight 1), in a fresh process (its stack
    table empty). Over plain pymalloc the mem and object realloc hooks count only requests
    of up to 512 bytes (tail-calling pymalloc, no guard); larger ones and reallocs of raw
    blocks reach the raw hooks, which count, sample and untrack them. Buffers grown by
    realloc to ~208 and ~808 bytes: each live one is seen once, at its final size, and none
    is left once they are freed."""
    script = tmp_path / "grow.py"
    script.write_text(REALLOC_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["count"] == pytest.approx(4000, abs=0.5), got  # one buffer each (objects are made elsewhere)
    assert got["size"] == pytest.approx(got["expected"], rel=0.02), got
    assert got["after"] == pytest.approx(0, abs=0.5) and got["dropped"] == 0, got


def test_snapshots_reuse_the_objects_of_known_stacks(sampler: None) -> None:
    """A stack's frames are converted once: the extension returns the same frames tuple for
    it at every snapshot, and heapprof the same HeapSite stack (so the heap thread's work
    per snapshot is the rows' figures, not thousands of tuples and Frame objects)."""
    src = "\n".join(f"def f{i}():\n    return bytearray(40_000)\n" for i in range(200))
    ns: dict = {}
    exec(compile(src, "/app/many_sites.py", "exec"), ns)
    keep = [ns[f"f{i}"]() for i in range(200) for _ in range(3)]
    rows1, _ = heapprof._native.snapshot()
    rows2, st = heapprof._native.snapshot()
    by_frames = {r[1][0]: r[1] for r in rows1 if r[1] and r[1][0][0] == "/app/many_sites.py"}
    assert len(by_frames) >= 150
    again = [r[1] for r in rows2 if r[1] and r[1][0][0] == "/app/many_sites.py"]
    assert all(by_frames[f[0]] is f for f in again)
    assert st["overhead_bytes"] > 0
    p1, p2 = heapprof.snapshot(), heapprof.snapshot()
    stacks1 = {s.stack[0]: s.stack for s in p1.sites if s.stack and s.stack[0].filename == "/app/many_sites.py"}
    assert stacks1 and all(stacks1[s.stack[0]] is s.stack for s in p2.sites if s.stack and s.stack[0] in stacks1)
    del keep


def test_the_heap_thread_keeps_to_its_duty(sampler: None, monkeypatch) -> None:
    """A heap snapshot (and the line series' update) is charged the CPU it takes, and the
    next one waits 200x that (0.5 %): a snapshot that burns 20 ms of CPU is followed by ~4 s
    of nothing (container scans have their own 1 % rule on their wall time)."""
    from memdiag.leaks.livecheck import SNAPSHOT_DUTY_DIVISOR, LiveChecker

    real = heapprof.snapshot

    def costly() -> heapprof.HeapProfile:
        c0 = time.thread_time()
        while time.thread_time() - c0 < 0.02:  # a large profile's conversion, in CPU
            pass
        return real()

    monkeypatch.setattr(heapprof, "snapshot", costly)
    lc = LiveChecker()
    lc._every = 0.05  # the floor between rounds: a cheap round would run 20 times a second
    heapprof.stop()
    try:
        lc.start("on", 32 * 1024)
        assert wait_for(lambda: lc.round_cost is not None, timeout=30)  # set at the end of a round
        t0, n = time.monotonic(), lc.heap.snapshots
        assert lc.round_cost >= 0.02
        time.sleep(1.5)  # the observation window itself, not a synchronisation
        assert lc.heap.snapshots - n <= 1, (lc.heap.snapshots - n, time.monotonic() - t0)
        assert lc.report()["heap_cost_seconds"] >= 0.02
        assert SNAPSHOT_DUTY_DIVISOR * lc.round_cost >= 4.0
    finally:
        lc.stop()


# -- AddressSanitizer and stress --------------------------------------------------------------
STRESS = os.path.join(os.path.dirname(__file__), "fixtures", "heapprof_stress.py")


def test_stress_threads_fork_exceptions() -> None:
    out = subprocess.run([sys.executable, STRESS, "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ok ")


@pytest.mark.slow
def test_asan_build_survives_the_stress(tmp_path) -> None:
    """The extension built with -fsanitize=address, run under the stress script.

    Python itself is not instrumented: libasan is preloaded so that the extension's
    memory accesses (and every malloc/free of the process) are checked; leak detection
    is off (the interpreter keeps memory until exit by design): tests/_asan.py."""
    so = asan_build(os.path.join(os.path.dirname(heapprof.__file__), "_heapprof.c"), tmp_path, "-lm")
    out = asan_run([STRESS, "6", str(so)])
    assert out.startswith("ok ") and str(so) in out


@pytest.mark.slow
def test_asan_build_survives_the_stress_under_the_preload_shim(tmp_path) -> None:
    """The same under ``memdiag run``'s malloc shim (preloaded after libasan), every 4 KiB
    sampled: the raw hooks then mask Python's calls from the shim and count Python's bytes
    from malloc (``hk_*_rawcm``), and the shim hands stacks over to the hooks."""
    from memdiag.leaks import preload

    so = asan_build(os.path.join(os.path.dirname(heapprof.__file__), "_heapprof.c"), tmp_path, "-lm")
    lib = preload.library_path()
    assert lib, "the shim is built with the extension"
    out = asan_run([STRESS, "4", str(so)], preload_also=[lib], env_extra={preload.ENV_INTERVAL: "4096"})
    assert out.startswith("ok ") and str(so) in out


# -- the preload shim (native allocations) -----------------------------------------------------
NATIVE_LEAK = """
import ctypes, ctypes.util, json, sys
from memdiag.leaks import heapprof, preload
heapprof.start(64 * 1024)  # as memdiag run's start-up does, before the program's code
libc = ctypes.CDLL(None if sys.argv[1] == "default" else ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
kept = []
for i in range(20000):
    kept.append(libc.malloc(1000))  # NATIVE-SITE
p = heapprof.snapshot()
line = [n for n, t in enumerate(open(__file__), 1) if "NATIVE-SITE" in t and "n, t" not in t][0]
site = sum(s.live_bytes for s in p.sites if s.domain == "native" and s.stack and s.stack[0].lineno == line)
py = sum(s.live_bytes for s in p.sites if s.domain == "python" and s.stack and s.stack[0].lineno == line)
print(json.dumps({"active": preload.active(), "backend": p.backend, "site": site, "python": py}))
"""


@pytest.mark.parametrize("handle", ["default", "libc"])
def test_preload_shim_names_a_ctypes_leak_at_its_line(tmp_path, handle: str) -> None:
    """``CDLL(None).malloc`` finds the preloaded shim; ``CDLL("libc.so.6").malloc`` is looked
    up in libc's own handle, which LD_PRELOAD does not interpose (it was never sampled: no
    line, no verdict): preload.route_ctypes hands ctypes the shim's function there too."""
    from memdiag.leaks import preload

    assert preload.library_path(), "the shim is built with the extension"
    script = tmp_path / "native_leak.py"
    script.write_text(NATIVE_LEAK)
    env = preload.environment(dict(os.environ), 64 * 1024)
    out = subprocess.run([sys.executable, str(script), handle], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["active"] and res["backend"] == "preload"
    true = 20000 * 1000
    assert abs(res["site"] - true) < 0.25 * true, res  # the first samples may precede the line's frames
    # The line's Python bytes are its 20 000 ints (~0.6 MB) and the list: a stack hand-over
    # to the shim once made the next Python allocation a sample, 20 MB of them here.
    assert res["python"] < 2e6, res


def test_preload_shim_leaves_other_programs_alone() -> None:
    from memdiag.leaks import preload

    env = preload.environment(dict(os.environ), 4096)
    env["LD_BIND_NOW"] = "1"  # every symbol resolved at load: Python's are weak in the shim
    out = subprocess.run(["sh", "-c", "ls / >/dev/null && echo fine"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "fine", out.stderr


def test_memdiag_run_preloads_the_shim() -> None:
    from memdiag.cli._run import child_environment
    from memdiag.leaks import preload

    env = child_environment({}, agent=True, http=False, base={})
    assert env["LD_PRELOAD"].split()[0] == preload.library_path()
    assert "LD_PRELOAD" not in child_environment({"heap_profile": "off"}, agent=True, http=False, base={})


GROW = r"""
import json, sys
from memdiag.leaks import heapprof
heapprof.start(1, 4)  # every allocation sampled
first = heapprof.stats()
src = "\n".join(f"def f{i}(keep):\n    keep.append(bytes(1000 + {i}))" for i in range(6000))
ns = {}
exec(compile(src, "many_lines.py", "exec"), ns)
keep = []
for i in range(6000):
    ns[f"f{i}"](keep)
prof = heapprof.snapshot()
last = heapprof.stats()
heapprof.stop()
lines = {s.stack[0].lineno for s in prof.sites if s.stack and s.stack[0].filename == "many_lines.py" and s.live_count >= 1 and s.stack[0].lineno % 2 == 0}  # the bytes lines (odd: the defs)
print(json.dumps({"first": first, "last": last, "lines": len(lines)}))
"""


@needs_native
def test_tables_grow_from_small_and_report_what_they_hold() -> None:
    """The tables are filled from the front and the frame index doubles as frames come: at
    start the profiler holds ~0.2 MB (it reported 4.5 MB of reserved, untouched tables), and
    6000 distinct lines (past the frame index's first sizes) are each found at their line."""
    out = subprocess.run([sys.executable, "-c", GROW], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    first, last = res["first"], res["last"]
    assert first["overhead_bytes"] < 512 * 1024, first
    assert last["frames"] > 6000 and last["stacks"] > 6000, last
    assert res["lines"] == 6000  # every frame still found after the index grew (twice)
    # grown with what it holds (frames x 32 B, stacks x 48 B, the index, the live samples), bounded
    assert first["overhead_bytes"] + 400 * 1024 < last["overhead_bytes"] < last["bound_bytes"]
