"""Leak verdicts from the live heap and from resource creation sites.

The growth test runs on synthetic series (a leak, a warm-up, steps, transients); the
creation-site hooks on real fds, sockets, threads, asyncio tasks and children in this
process (a simulated clock only for the times the counts are recorded at).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import socket
import subprocess
import sys
import threading

import pytest

from memdiag.leaks import origins
from memdiag.leaks.live import ContainerWatch, growth_test, slowed_down
from memdiag.leaks.sites import ResourceSites

HERE = os.path.abspath(__file__)


def _series(fn, seconds: float = 120.0, step: float = 5.0) -> tuple[list[float], list[float]]:
    xs = [i * step for i in range(int(seconds / step) + 1)]
    return xs, [fn(x) for x in xs]


def test_growth_test_names_a_steady_leak_and_its_rate() -> None:
    rng = random.Random(1)
    xs, ys = _series(lambda t: 50e6 + t / 60 * 1024 * 1024 + rng.uniform(-20e3, 20e3))
    g = growth_test(xs, ys, 128 * 1024)
    assert g is not None
    assert abs(g["slope_per_min"] - 1024 * 1024) / (1024 * 1024) < 0.05


@pytest.mark.parametrize(
    "shape",
    [
        lambda t: 80e6 * (1 - math.exp(-t / 40)),  # a cache warming up and levelling off
        lambda t: 20e6 * min(3, int(t // 25)),  # three steps, then flat
        lambda t: 100e6 if int(t) % 25 < 5 else 0.0,  # 100 MB transients every 25 s
        lambda t: 10e6,  # flat
    ],
    ids=["warm-up", "steps", "transients", "flat"],
)
def test_growth_test_ignores_what_levels_off(shape) -> None:
    xs, ys = _series(shape)
    assert growth_test(xs, ys, 128 * 1024) is None


@pytest.mark.parametrize("seconds", [60.0, 70.0, 90.0, 150.0])
def test_a_slow_warm_up_is_not_a_leak_while_it_still_grows(seconds: float) -> None:
    xs, ys = _series(lambda t: 12e6 * (1 - math.exp(-t / 75)), seconds)  # 63 % full at 75 s
    assert growth_test(xs, ys, 128 * 1024) is None


@pytest.mark.parametrize("tau", [75.0, 300.0])  # 300 s: the same memo on a loaded machine, 4x slower
@pytest.mark.parametrize("at", [310.0, 450.0, 600.0])
def test_growth_that_keeps_slowing_down_is_a_warm_up_over_two_windows(at: float, tau: float) -> None:
    """A memo over random keys fills as 1 - exp(-t/tau): one 150 s window of it can look
    straight (it was flagged at 310 s in a 10-minute run); two windows show it slowing."""
    memo = [(float(t), 12e6 * (1 - math.exp(-t / tau))) for t in range(0, int(at) + 1, 10)]
    assert slowed_down(memo, at)


@pytest.mark.parametrize("at", [310.0, 450.0, 600.0])
def test_a_leak_is_not_a_warm_up_even_after_one(at: float) -> None:
    rng = random.Random(int(at))
    leak = [(float(t), 50e6 + t / 60 * 1024 * 1024 + rng.uniform(-40e3, 40e3)) for t in range(0, int(at) + 1, 5)]
    assert not slowed_down(leak, at)
    # a warm-up (done within ~150 s) and then a steady leak: vetoed while the warm-up is in
    # the window before, a leak again once it is two windows behind
    both = [(float(t), 12e6 * (1 - math.exp(-t / 30)) + t / 60 * 1024 * 1024) for t in range(0, int(at) + 1, 5)]
    assert not slowed_down(both, at) or at < 450.0


def test_nothing_is_vetoed_before_two_windows_of_history() -> None:
    memo = [(float(t), 12e6 * (1 - math.exp(-t / 75))) for t in range(0, 201, 5)]
    assert not slowed_down(memo, 200.0)  # the first verdict is never delayed by this rule


def test_own_proc_fds_and_threads_are_memdiags(tmp_path) -> None:
    origins.install()
    fd = os.open("/proc/self/status", os.O_RDONLY)  # this test's: opened here
    try:
        table = {f: (target, site) for f, target, site in origins.fd_table()}
        assert table[fd][1] == (HERE, _line_of("fd = os.open(\"/proc/self/status\""))
        from memdiag.probes._io import PreadCache

        cache = PreadCache(4)
        cache.read("/proc/self/statm")  # memdiag's own kept-open /proc fd
        own = [f for f, target, site in origins.fd_table() if site == origins.OWN and target == "/proc/self/statm" or site == origins.OWN and target.endswith("/statm")]
        assert own, "memdiag's kept-open /proc descriptor is not recognised as its own"
        cache.close()
    finally:
        os.close(fd)


def _line_of(text: str) -> int:
    with open(HERE, encoding="utf-8") as fh:
        return next(i for i, line in enumerate(fh, 1) if text in line and "_line_of" not in line)


def test_sites_are_memoised_per_instruction_not_per_function() -> None:
    """site_of memoises the line by (code, instruction offset): two creation sites in one
    function stay two lines, on every call (reading f_lineno decodes the line table)."""
    loop = asyncio.new_event_loop()
    origins.install()
    origins.follow_tasks()

    def two_sites() -> tuple:
        first = loop.create_task(asyncio.sleep(0))  # MEMO-A
        second = loop.create_task(asyncio.sleep(0))  # MEMO-B
        return first, second

    try:
        for _ in range(3):
            tasks = two_sites()
            sites = origins.tasks_by_site(tasks)
            assert sites == {(HERE, _line_of("# MEMO-A")): 1, (HERE, _line_of("# MEMO-B")): 1}, sites
            loop.run_until_complete(asyncio.gather(*tasks))
    finally:
        loop.close()


def test_fd_socket_thread_task_child_sites_and_verdicts(tmp_path) -> None:
    origins.install()
    origins.follow_tasks()  # what growing task counts do (see the next test)
    rs = ResourceSites()
    held: list = []
    stop = threading.Event()
    procs: list[subprocess.Popen[bytes]] = []
    exited: list[subprocess.Popen[bytes]] = []
    loop = asyncio.new_event_loop()
    try:
        for i in range(14):  # one of each every "10 s" of a simulated clock
            held.append(open(tmp_path / f"f{i}", "w"))  # LEAK-FD
            held.append(socket.socket())  # LEAK-SOCK
            t = threading.Thread(target=stop.wait, daemon=True)
            t.start()  # LEAK-THREAD
            held.append(loop.create_task(asyncio.sleep(3600)))  # LEAK-TASK
            procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))  # LEAK-CHILD
            exited.append(subprocess.Popen(["true"]))  # LEAK-ZOMBIE (never waited for)
            rs.sample(1000.0 + 10 * i, [p.pid for p in procs], [p.pid for p in exited])
        found = {(s["kind"], s["line"]) for s in rs.suspects(1000.0 + 130)}
        for kind, marker in [
            ("fds", "# LEAK-FD"),
            ("fds", "# LEAK-SOCK"),
            ("threads", "# LEAK-THREAD"),
            ("asyncio_tasks", "# LEAK-TASK"),
            ("child_processes", "# LEAK-CHILD"),
            ("zombies", "# LEAK-ZOMBIE"),
        ]:
            assert (kind, _line_of(marker)) in found, (kind, marker, found)
        fd_s = next(s for s in rs.suspects(1130.0) if s["line"] == _line_of("# LEAK-SOCK"))
        assert fd_s["evidence"]["targets"] == {"socket": 14}
        assert 4.0 <= fd_s["growth_per_min"] <= 8.0
        assert all(s["file"] == HERE for s in rs.suspects(1130.0))
    finally:
        stop.set()
        for p in procs:
            p.kill()
            p.wait()
        for p in exited:
            p.wait()
        for h in held:
            if hasattr(h, "cancel"):
                h.cancel()
            else:
                h.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


def test_the_task_hook_waits_for_the_tasks_to_grow() -> None:
    """Tasks cost nothing more (asyncio's own Task class) while their count is flat or
    steps up once (a server's connections when load comes); a steady rise turns the hook
    on, and the tasks created from then on carry their creating line. Before, a task's
    site is its coroutine's definition."""
    origins.install()
    origins.unfollow_tasks()
    assert not origins.tasks_followed()
    import asyncio.tasks as asyncio_tasks

    base = asyncio_tasks.Task
    loop = asyncio.new_event_loop()
    held: list = []

    async def pending() -> None:  # COROUTINE-DEF
        await asyncio.sleep(3600)

    try:
        rs = ResourceSites()
        for i in range(14):  # a step: 6 connections' tasks at once, then flat
            if i == 3:
                held.extend(loop.create_task(pending()) for _ in range(6))
            rs.sample(3000.0 + 10 * i, [])
        assert not origins.tasks_followed() and asyncio_tasks.Task is base
        assert origins.tasks_by_site(held) == {(HERE, _line_of("# COROUTINE-DEF")): 6}
        for i in range(14, 26):  # then one more every "10 s": growth
            held.append(loop.create_task(pending()))
            rs.sample(3000.0 + 10 * i, [])
            if origins.tasks_followed():
                break
        assert origins.tasks_followed() and rs.tasks_followed_at is not None
        assert rs.report()["task_sites"] == "creating line"
        t = loop.create_task(pending())  # FOLLOWED-TASK
        held.append(t)
        assert origins.tasks_by_site([t]) == {(HERE, _line_of("# FOLLOWED-TASK")): 1}
    finally:
        for t in held:
            t.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        origins.unfollow_tasks()
    assert asyncio_tasks.Task is base


def test_a_task_leak_found_at_its_coroutine_is_named_at_its_creating_line_one_sample_later() -> None:
    """Before the Task hook goes in, a task leak is counted at its coroutine's definition;
    once it does, the coroutine's count (its history included) moves to the line that
    creates its tasks, so the verdict names that line at the next sample instead of
    waiting a whole growth test on a new series (issue 14: the creating line within 120 s
    for a few tasks a minute)."""
    origins.install()
    origins.unfollow_tasks()
    loop = asyncio.new_event_loop()
    held: list = []

    async def leaked() -> None:  # LEAKED-CORO
        await asyncio.sleep(3600)

    def spawn() -> None:
        held.append(loop.create_task(leaked()))  # LEAKED-CREATE

    try:
        rs = ResourceSites()
        i = 0
        while not origins.tasks_followed() and i < 40:
            spawn()
            rs.sample(5000.0 + 10 * i, [])
            i += 1
        assert origins.tasks_followed(), "the growing tasks never turned the hook on"
        before = {(s["kind"], s["line"]) for s in rs.suspects(5000.0 + 10 * (i - 1))}
        assert ("asyncio_tasks", _line_of("# LEAKED-CREATE")) not in before
        spawn()  # the first task that carries its creating line
        rs.sample(5000.0 + 10 * i, [])
        found = {(s["kind"], s["line"]): s for s in rs.suspects(5000.0 + 10 * i)}
        assert ("asyncio_tasks", _line_of("# LEAKED-CREATE")) in found, found
        assert ("asyncio_tasks", _line_of("# LEAKED-CORO")) not in found, found
        s = found[("asyncio_tasks", _line_of("# LEAKED-CREATE"))]
        assert 4.0 <= s["growth_per_min"] <= 8.0, s  # one per 10 s, the history carried over
    finally:
        for t in held:
            t.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        origins.unfollow_tasks()


def test_one_coroutines_growing_tasks_turn_the_hook_on_under_the_noise_of_request_tasks() -> None:
    """A plain asyncio service whose requests each run a short task: the application's
    pending total jumps around, so it alone never passed the growth test (a new user's
    service at 4 leaked tasks a minute had no creating line after 210 s). The leaking
    coroutine's own count turns the hook on; the line's verdict replaces the coroutine's."""
    origins.install()
    origins.unfollow_tasks()
    loop = asyncio.new_event_loop()
    held: list = []
    noise: list = []
    rng = random.Random(3)

    async def leaked() -> None:  # NOISY-LEAK-CORO
        await asyncio.sleep(3600)

    async def request() -> None:
        await asyncio.sleep(3600)

    def spawn() -> None:
        held.append(loop.create_task(leaked()))  # NOISY-LEAK-CREATE

    try:
        rs = ResourceSites()
        i = 0
        while not origins.tasks_followed() and i < 40:
            spawn()
            for t in noise:  # the last burst of requests finished
                t.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            noise = [loop.create_task(request()) for _ in range(rng.choice((0, 15, 40, 5, 30)))]
            rs.sample(7000.0 + 10 * i, [])
            i += 1
        assert origins.tasks_followed(), "the leaking coroutine's tasks never turned the hook on"
        assert i <= 14, i  # within a growth test of the coroutine's series
        coro = rs.suspects(7000.0 + 10 * (i - 1))
        assert [s["line"] for s in coro] == [_line_of("# NOISY-LEAK-CORO")], coro
        spawn()  # the first task that carries its creating line
        rs.sample(7000.0 + 10 * i, [])
        line = {s["line"]: s for s in rs.suspects(7000.0 + 10 * i)}
        assert list(line) == [_line_of("# NOISY-LEAK-CREATE")], line
        assert line[_line_of("# NOISY-LEAK-CREATE")]["evidence"]["replaces"] == [coro[0]["id"]]
    finally:
        for t in held + noise:
            t.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        origins.unfollow_tasks()


def test_the_audit_hook_is_in_c_and_passes_only_its_three_events_to_python(tmp_path) -> None:
    """The C hook (``_audit``, built by setup.py: a missing build fails here) calls Python
    for open/socket.__new__/subprocess.Popen only; every other event (sys._getframe:
    per log record, os.listdir, ...) returns in C. A callback that raises never fails the
    audited operation."""
    from memdiag.leaks import _audit

    origins.install()
    assert origins.hook_kind() == "c"
    assert [_audit.wanted(e) for e in ("open", "socket.__new__", "subprocess.Popen")] == [True] * 3
    assert not any(_audit.wanted(e) for e in ("time.sleep", "sys._getframe", "o", "s", "", "opened", "socket.bind"))
    line = _line_of("# C-HOOK-OPEN")
    before = _audit.stats()
    for _ in range(50):
        sys._getframe(0)
        os.listdir(tmp_path)
    mid = _audit.stats()
    assert mid["seen"] - before["seen"] >= 100 and mid["called"] == before["called"]
    with open(tmp_path / "x", "w") as fh:  # C-HOOK-OPEN
        assert _audit.stats()["called"] == mid["called"] + 1
        table = {f: site for f, _target, site in origins.fd_table()}
        assert table[fh.fileno()] == (HERE, line)

    def boom(event, args):
        raise RuntimeError("a failing callback")

    try:
        assert _audit.install(boom) is False  # installed once; the callback replaced
        with open(tmp_path / "y", "w") as fh:  # still opens
            fh.write("ok")
    finally:
        _audit.install(origins._hook)
    assert (tmp_path / "y").read_text() == "ok"


def test_a_pool_that_fills_then_stays_is_no_resource_leak(tmp_path) -> None:
    origins.install()
    rs = ResourceSites()
    held = []
    try:
        for i in range(14):
            if i < 5:
                held.append(open(tmp_path / f"p{i}", "w"))  # POOL-FD
            rs.sample(2000.0 + 10 * i, [])
        assert rs.suspects(2130.0) == []
    finally:
        for h in held:
            h.close()


_KEPT: dict[str, bytes] = {}


def test_container_watch_finds_an_untracked_dict_and_its_holder() -> None:
    cw = ContainerWatch()
    for i in range(8):
        for j in range(150):
            _KEPT[f"k-{i}-{j}-{random.random()}"] = bytes(500)
        cw.scan(float(10 * i), interval=0.0, describe=set(cw._lens))
    grow = [c for c in cw.growing(75.0) if c.get("holder")]
    assert grow and grow[0]["holder"].endswith("test_leaks_sites._KEPT")
    assert 500 <= grow[0]["bytes_per_item"] <= 700
    assert 800 <= grow[0]["items_per_min"] <= 1000
    _KEPT.clear()


_APP_PATHS: dict[str, int] = {}


def test_memdiags_own_containers_are_never_a_verdict(tmp_path) -> None:
    """The paths the application opens fill memdiag's own table (origins._paths, bounded):
    a service opening a temporary file per request had it reported as its top leak. An
    application dict growing alike in the same scans is still found (the control)."""
    origins.install()
    cw = ContainerWatch()
    app_paths = _APP_PATHS
    for i in range(8):
        for j in range(150):
            path = tmp_path / f"req-{i}-{j}.json"
            with open(path, "w") as fh:  # the application's open: origins remembers the path
                fh.write("{}")
            app_paths[str(path)] = j
        cw.scan(float(10 * i), interval=0.0, describe=set(cw._lens))
    assert len(origins._paths) >= 1200
    assert id(origins._paths) not in cw._lens
    grown = {c["object_id"] for c in cw.growing(75.0)}
    assert id(app_paths) in grown and id(origins._paths) not in grown
    app_paths.clear()


def test_a_container_held_by_memdiag_is_not_the_applications() -> None:
    from memdiag.leaks.live import own_holder

    assert own_holder("memdiag.leaks.origins._paths")
    assert own_holder("memdiag.http.tick.PerTick instance._answers")
    assert own_holder("lru_cache of memdiag.probes.system.read_x")
    assert not own_holder("app.memdiag_cache._KEPT") and not own_holder(None) and not own_holder("")


def test_a_cache_that_reorders_while_it_fills_is_turnover_not_growth() -> None:
    import collections

    lru: collections.OrderedDict[int, bytes] = collections.OrderedDict()
    cw = ContainerWatch()
    for i in range(8):
        for j in range(150):
            lru[i * 1000 + j] = bytes(100)
        lru.move_to_end(next(iter(lru)))  # a hit on the oldest entry: an LRU
        cw.scan(float(10 * i), interval=0.0)
    mine = [c for c in cw.growing(75.0) if c["object_id"] == id(lru)]
    assert mine and mine[0]["turnover"] is True


@pytest.mark.slow
def test_shortened_scenarios_name_the_line_and_stay_quiet_on_a_twin() -> None:
    """Real services from benchmarks/bench_leaks.py, in subprocesses, shortened: a dict keyed
    by fresh strings (the sampled profiler's live heap, where built), an fd leak, and 100 MB
    transients."""
    import json

    bench = os.path.join(os.path.dirname(os.path.dirname(HERE)), "benchmarks", "bench_leaks.py")
    from memdiag.leaks import heapprof

    runs = {"fds": ("125", {}, "200"), "twin_transients": ("110", {}, "200")}
    # The live heap only with the sampled profiler: the tracemalloc stand-in's snapshots
    # take seconds each on a loaded 2-core machine, too few for a verdict in 110 s.
    sampled = heapprof.available()[0]
    if sampled:
        runs["dict_fresh_keys"] = ("130", {"heap_profile": "auto"}, "200")
    procs = {
        k: subprocess.Popen(
            [sys.executable, bench, "_kind", "--kind", k, "--seconds", secs, "--config", json.dumps(cfg), "--rate", rate],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, (secs, cfg, rate) in runs.items()
    }
    out = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-2000:]
        out[k] = json.loads(stdout.strip().splitlines()[-1])
    if sampled:
        d = out["dict_fresh_keys"]
        assert d["top_at"] is not None and d["top"]["kind"] == "python_objects", d["suspects"]
        assert abs(d["top"]["growth_bytes_per_min"] - d["truth"]) <= 0.25 * d["truth"], d["top"]
        assert d["top"]["evidence"]["container"]["holder"].endswith("_SESSIONS")
        assert not d["own_listed"]
        # named by the live heap: no tracing window opened on its own in any of these services
        assert all(o["windows_run"] == 0 for o in out.values()), {k: o["windows_run"] for k, o in out.items()}
    f = out["fds"]
    assert f["top_at"] is not None and f["top"]["kind"] == "fds", f["suspects"]
    assert f["top"]["evidence"]["targets"] == {"dev": f["top"]["evidence"]["live"]}
    assert not f["own_listed"]
    assert out["twin_transients"]["suspects"] == []


def test_the_audit_hook_never_breaks_an_open(tmp_path, monkeypatch) -> None:
    origins.install()

    def boom(frame, limit=64):
        raise RuntimeError("site lookup failed")

    monkeypatch.setattr(origins, "site_of", boom)  # a failure inside the hook
    with open(tmp_path / "still-opens", "w") as fh:
        fh.write("x")
    assert (tmp_path / "still-opens").read_text() == "x"


def test_turnover_rates_name_a_warming_lru_whatever_its_growth_test_says() -> None:
    import collections

    lru: collections.OrderedDict[int, bytes] = collections.OrderedDict()
    cw = ContainerWatch()
    for i in range(4):
        for j in range(200):
            lru[i * 1000 + j] = bytes(100)
        lru.move_to_end(next(iter(lru)))
        cw.scan(float(10 * i), interval=0.0)
    rates = cw.turnover_rates(30.0)
    assert any(1100 <= r <= 1300 for r in rates), rates  # 200 entries per 10 s


def test_match_site_prefers_the_line_growing_at_the_containers_byte_rate() -> None:
    from memdiag.leaks.live import match_site

    c = {"items_per_min": 1000.0, "bytes_per_item": 1100.0}
    sites = [
        {"file": "/app.py", "line": 10, "domain": "python", "blocks_per_min": 1000.0, "growth_bytes_per_min": 90e3},  # key
        {"file": "/app.py", "line": 11, "domain": "python", "blocks_per_min": 1000.0, "growth_bytes_per_min": 1.0e6},  # value
        {"file": "/lru.py", "line": 5, "domain": "python", "blocks_per_min": 1500.0, "growth_bytes_per_min": 6e6},  # a cache
    ]
    assert match_site(c, sites)["line"] == 11
    assert match_site(c, sites[2:]) is not None and match_site(c, sites[2:], {("/lru.py", 5)}) is None


def test_match_site_takes_a_coarse_sampled_block_count_when_the_bytes_agree() -> None:
    """A sampled profile sees a 1 MiB/min line in a few samples a minute: its block rate can
    be 3x off the container's entry rate while its bytes match (the CI failure at 9f9ca3c:
    the container listed with no line, the line itself second)."""
    from memdiag.leaks.live import fits_container, match_site

    c = {"items_per_min": 1000.0, "bytes_per_item": 1100.0}
    value = {"file": "/app.py", "line": 11, "domain": "python", "blocks_per_min": 330.0, "growth_bytes_per_min": 1.13e6}
    other = {"file": "/other.py", "line": 3, "domain": "python", "blocks_per_min": 330.0, "growth_bytes_per_min": 6e6}
    far = {"file": "/far.py", "line": 4, "domain": "python", "blocks_per_min": 100.0, "growth_bytes_per_min": 1.1e6}
    assert fits_container(c, value) and not fits_container(c, other) and not fits_container(c, far)
    assert match_site(c, [other, far, value])["line"] == 11
    assert match_site(c, [other, far]) is None


def test_container_scans_take_at_most_one_percent_of_the_time() -> None:
    """A scan holds the other threads off while it walks the heap: a slow one (a large
    heap) spaces the next ones out to 100x its duration, a fast one keeps the 10 s pace."""
    from memdiag.leaks.live import CONTAINER_SCAN_SECONDS, SCAN_DUTY_DIVISOR, scan_interval

    assert SCAN_DUTY_DIVISOR >= 100
    assert scan_interval(CONTAINER_SCAN_SECONDS, None) == CONTAINER_SCAN_SECONDS
    assert scan_interval(CONTAINER_SCAN_SECONDS, 0.001) == CONTAINER_SCAN_SECONDS
    assert scan_interval(CONTAINER_SCAN_SECONDS, 2.0) == 2.0 * SCAN_DUTY_DIVISOR  # a 2 s walk: 200 s apart
    cw = ContainerWatch()
    cw.scan(1000.0, interval=scan_interval(CONTAINER_SCAN_SECONDS, 2.0))
    cw.scan(1000.0 + CONTAINER_SCAN_SECONDS, interval=scan_interval(CONTAINER_SCAN_SECONDS, 2.0))
    assert cw.scans == 1
    cw.scan(1000.0 + 2.0 * SCAN_DUTY_DIVISOR, interval=scan_interval(CONTAINER_SCAN_SECONDS, 2.0))
    assert cw.scans == 2


def test_points_keep_the_last_points_in_24_bytes_each() -> None:
    from memdiag.leaks.live import Points

    pts = Points(keep=4)
    assert not pts and len(pts) == 0
    for i in range(6):
        pts.append((float(i), 10.0 * i, 100.0 * i))
    assert len(pts) == 4 and pts
    assert list(pts) == [(float(i), 10.0 * i, 100.0 * i) for i in range(2, 6)]
    assert pts[0] == (2.0, 20.0, 200.0) and pts[-1] == (5.0, 50.0, 500.0)
    with pytest.raises(IndexError):
        pts[4]
    with pytest.raises(IndexError):
        pts[-5]
    big = Points(keep=256)
    for i in range(300):
        big.append((float(i), 1.0, 2.0))
    assert len(big) == 256 and big.nbytes() < 256 * 24 * 1.1 + 200  # the array over-allocates a little


def test_leak_series_reach_their_steady_size_within_minutes_and_stay_flat() -> None:
    """30 simulated minutes of 5 s snapshots of a service whose small lines come and go (a
    few new ones per snapshot, as the sampler meets them) beside 40 steady large lines, and
    a few containers followed: the series' bytes at 10 minutes and at 30 are the same within
    10 % (the soak's own_memory_flat); before, lines kept 256 points (21 minutes) and idle
    lines stayed until 300 were followed, so the bytes rose for over 20 minutes."""
    from memdiag.leaks.heapprof import Frame, HeapProfile, HeapSite
    from memdiag.leaks.live import ContainerWatch, HeapSeries

    def site(n: int, nbytes: float) -> HeapSite:
        return HeapSite((Frame("/srv/app/x.py", n, "f"),), "python", nbytes, nbytes / 100, nbytes, nbytes / 100)

    hs, cw = HeapSeries(), ContainerWatch()
    sizes = {}
    t0 = 1_000_000.0
    for k in range(360):  # 30 minutes at 5 s
        now = t0 + 5.0 * k
        transient = [site(1000 + 3 * k + j, 2e4) for j in range(3)]  # lines met once, then gone
        prof = HeapProfile(now, tuple([site(n, 1e6 + n) for n in range(40)] + transient), 524288, 0, 0, 0, "native")
        hs.add(prof, now)
        cw._record(now, {i: (list, 500 + i) for i in range(5)}, {i: i for i in range(5)})
        if k in (120, 359):
            sizes[k] = hs.memory_bytes() + cw.memory_bytes()
    assert sizes[359] <= sizes[120] * 1.10, sizes


class _Session:
    def __init__(self, user: str, roles: tuple[str, ...], ip: str) -> None:
        self.user = user
        self.roles = list(roles)
        self.ip = ip
        self.history: list[str] = []


def _session_entry(i: int) -> tuple[str, _Session]:
    sid = f"session-{random.random()}-{i}"
    s = _Session(f"user{i:06d}", ("reader", "buyer", f"tenant:{i % 1000}"), f"10.0.{i % 250}.{i % 7}")
    s.history.append(f"trace-{random.random()}")
    return sid, s


def _closure_entry(i: int) -> tuple[None, object]:
    ctx = {"request_id": f"req-{random.random()}", "buffer": bytearray(384), "skus": [f"sku-{i}-{j}" for j in range(3)]}

    def on_update(event: object) -> tuple[object, object]:
        return ctx["request_id"], event

    return None, on_update


@pytest.mark.parametrize("make", [_session_entry, _closure_entry], ids=["session", "closure"])
def test_bytes_retained_per_entry_follow_objects_and_closures(make) -> None:
    """What a container's entry keeps, measured against tracemalloc: a session object's
    attributes and their items, a closure's captured context (one level down counted 225
    of ~1270 bytes for the closure: a leak's byte rate 82 % low)."""
    import tracemalloc

    from memdiag.leaks.live import _deep

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keys, values = [], []
        for i in range(2000):
            k, v = make(i)
            keys.append(k)
            values.append(v)
        true = (tracemalloc.get_traced_memory()[0] - before) / 2000 - 16  # less the two lists' slots
    finally:
        tracemalloc.stop()
    seen: set[int] = set()
    est = sum(_deep(k, seen) + _deep(v, seen) for k, v in zip(keys[-32:], values[-32:])) / 32
    assert 0.8 * true <= est <= 1.25 * true, (est, true)


def test_bytes_per_entry_never_run_the_applications_attribute_hooks() -> None:
    """The walk reads an entry's own storage only: a proxy's ``__getattr__`` (which may do
    anything, I/O included) is never called from memdiag's thread."""
    from memdiag.leaks.live import _deep

    calls: list[str] = []

    class Proxy:
        __slots__ = ("target", "unset")

        def __init__(self) -> None:
            self.target = bytearray(500)

        def __getattr__(self, name: str) -> object:
            calls.append(name)
            raise AttributeError(name)

    class Lazy:
        def __init__(self) -> None:
            self.data = bytearray(300)

        def __getattribute__(self, name: str) -> object:
            calls.append(name)
            return object.__getattribute__(self, name)

    assert _deep(Proxy(), set()) >= 500 and _deep(Lazy(), set()) >= 300
    assert calls == []


def test_bytes_per_entry_never_run_a_container_subclass_s_methods() -> None:
    from memdiag.leaks.live import _deep

    calls: list[str] = []

    class Tracked(dict):
        def items(self):  # type: ignore[override]
            calls.append("items")
            return super().items()

    class Logged(list):
        def __iter__(self):  # type: ignore[override]
            calls.append("iter")
            return super().__iter__()

    assert _deep(Tracked(a=bytearray(400)), set()) >= 400
    assert _deep(Logged([bytearray(400)]), set()) >= 400
    assert calls == []
