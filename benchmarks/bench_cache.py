"""Benchmark SharedPromptCache against cachetools, cachebox and theine, read-through.

Traces (``--traces``): ``zipf``, ``--ops`` requests over ``--keys`` distinct string keys
drawn from a Zipf(s) distribution (fixed seed); ``scan``, the same stream with a scan of
``capacity`` never-repeated keys after every ``4 x capacity`` requests; ``loop``, a loop
over ``1.5 x capacity`` keys. Capacity ``--capacity`` entries, read-through: ``get``, and
on a miss ``load`` + ``set``. Every contender serves the same stream. Then the Zipf stream
again from ``--mix-threads`` threads sharing one cache (the thread-safe contenders only). In each round all
contenders start a fresh cache and take turns, slice by slice (``--chunk`` requests,
the order rotating every slice), so that a shared machine's noise, which comes and goes
over tenths of a second, falls on all of them alike. The table reports the median
throughput over rounds, the ratio to ``cachetools.LRUCache`` guarded by a
``threading.Lock`` (the baseline: cachetools is not thread-safe) - the median and range
of the per-round ratios - and the hit ratio. Belady's clairvoyant
optimum and the static top-k probability mass (what a perfect frequency oracle gets)
are reported for reference.

Then ``--threads`` threads hammer one cache with a mix of reads, read-throughs and
increments done with ``get_or_set`` + a per-key lock-free check: the test is that no
update is lost (every thread's writes are counted) and the throughput is reported.

Run:  PYTHONHASHSEED=0 python benchmarks/bench_cache.py
(the figures in docs/benchmarks.md: ``--ops 1000000 --rounds 3 --thread-ops 50000``)
"""

from __future__ import annotations

import argparse
import bisect
import functools
import gc
import heapq
import itertools
import platform
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable

from memdiag.cache import SharedPromptCache

try:
    import cachetools
except ImportError:  # pragma: no cover - the benchmark needs it
    sys.exit("this benchmark needs cachetools: pip install cachetools")


try:  # peers, compared when installed
    import cachebox
except ImportError:  # pragma: no cover
    cachebox = None
try:
    import theine
except ImportError:  # pragma: no cover
    theine = None

BASELINE = "cachetools LRUCache + Lock (baseline)"

# CPU time of this process: on a shared machine, wall time mostly measures the
# neighbours. (--wall switches to time.perf_counter.)
CLOCK = time.process_time


def zipf_stream(n_keys: int, n_ops: int, s: float, seed: int) -> list[str]:
    """``n_ops`` keys drawn from Zipf(s) over ``n_keys`` keys (rank order shuffled)."""
    rng = random.Random(seed)
    cum = list(itertools.accumulate(1.0 / (i**s) for i in range(1, n_keys + 1)))
    total = cum[-1]
    keys = [f"prompt:{i:06d}" for i in range(n_keys)]
    rng.shuffle(keys)
    r = rng.random
    last = n_keys - 1
    bl = bisect.bisect_left
    return [keys[min(bl(cum, r() * total), last)] for _ in range(n_ops)]


def scan_stream(zipf: list[str], capacity: int) -> list[str]:
    """The Zipf stream with scans: after every ``4 x capacity`` requests, ``capacity`` keys
    never seen before nor after (a batch job, a crawler). A fifth of the traffic; a
    scan-resistant policy keeps the popular keys through it."""
    out: list[str] = []
    block = 4 * capacity
    n = len(zipf)
    scan = 0
    i = 0
    while len(out) < n:
        out.extend(zipf[i : i + block])
        i += block
        out.extend(f"scan:{scan}:{j}" for j in range(capacity))
        scan += 1
    return out[:n]


def loop_stream(n_ops: int, capacity: int) -> list[str]:
    """Keys requested in a loop over ``1.5 x capacity`` keys: LRU never hits; a policy
    that keeps a fixed part of the loop hits about capacity / loop length."""
    keys = [f"loop:{i:06d}" for i in range(capacity * 3 // 2)]
    n = len(keys)
    return [keys[i % n] for i in range(n_ops)]


def belady_hit_ratio(stream: list[str], capacity: int) -> float:
    """Hit ratio of the clairvoyant optimal policy (evict the farthest next use)."""
    n = len(stream)
    nxt = [0] * n
    last: dict[str, int] = {}
    for i in range(n - 1, -1, -1):
        k = stream[i]
        nxt[i] = last.get(k, n + i)
        last[k] = i
    cache: dict[str, int] = {}
    heap: list[tuple[int, str]] = []
    hits = 0
    for i, k in enumerate(stream):
        if k in cache:
            hits += 1
        elif len(cache) >= capacity:
            while True:
                neg, victim = heapq.heappop(heap)
                if cache.get(victim) == -neg:
                    break
            del cache[victim]
        cache[k] = nxt[i]
        heapq.heappush(heap, (-nxt[i], k))
    return hits / n


def static_optimum(n_keys: int, capacity: int, s: float) -> float:
    w = [1.0 / (i**s) for i in range(1, n_keys + 1)]
    return sum(w[:capacity]) / sum(w)


def load(key: str) -> str:
    return "response to " + key


# -- contenders ---------------------------------------------------------------------------
# A contender is started once per round: start() builds its cache and returns step(chunk),
# which serves a slice of the stream, and hits(), the round's total. Every inner loop reads
# locals only (closure cells are slower to read, and would tax each side differently).

Step = Callable[[list[str]], None]
Contender = Callable[[], tuple[Step, Callable[[], int]]]


def memdiag_contender(policy: str, capacity: int, **kw: object) -> Contender:
    def start() -> tuple[Step, Callable[[], int]]:
        cache = SharedPromptCache(max_bytes=1 << 40, max_entries=capacity, policy=policy, name=f"bench-{policy}", **kw)

        def step(chunk: list[str]) -> None:
            get, put = cache.get, cache.set
            for k in chunk:
                if get(k) is None:
                    put(k, load(k))

        return step, lambda: cache.metrics()["hits"]

    return start


def memdiag_get_or_set_contender(policy: str, capacity: int) -> Contender:
    def start() -> tuple[Step, Callable[[], int]]:
        cache = SharedPromptCache(max_bytes=1 << 40, max_entries=capacity, policy=policy, name=f"bench-gos-{policy}")

        def step(chunk: list[str]) -> None:
            gos, partial = cache.get_or_set, functools.partial
            for k in chunk:
                gos(k, partial(load, k))

        return step, lambda: cache.metrics()["hits"]

    return start


def cachetools_contender(capacity: int, *, locked: bool) -> Contender:
    def start() -> tuple[Step, Callable[[], int]]:
        cache: cachetools.LRUCache[str, str] = cachetools.LRUCache(capacity)
        lock = threading.Lock()
        total = [0]

        def step_locked(chunk: list[str]) -> None:
            c, lk = cache, lock
            hits = 0
            for k in chunk:
                with lk:
                    v = c.get(k)
                if v is None:
                    v = load(k)
                    with lk:
                        c[k] = v
                else:
                    hits += 1
            total[0] += hits

        def step_unlocked(chunk: list[str]) -> None:
            c = cache
            hits = 0
            for k in chunk:
                v = c.get(k)
                if v is None:
                    c[k] = load(k)
                else:
                    hits += 1
            total[0] += hits

        return (step_locked if locked else step_unlocked), lambda: total[0]

    return start


def cachebox_contender(capacity: int) -> Contender:
    def start() -> tuple[Step, Callable[[], int]]:
        cache = cachebox.LRUCache(capacity)  # thread-safe itself (a lock in Rust)
        total = [0]

        def step(chunk: list[str]) -> None:
            c = cache
            get = c.get
            hits = 0
            for k in chunk:
                v = get(k)
                if v is None:
                    c[k] = load(k)
                else:
                    hits += 1
            total[0] += hits

        return step, lambda: total[0]

    return start


def theine_contender(capacity: int) -> Contender:
    def start() -> tuple[Step, Callable[[], int]]:
        cache = theine.Cache(capacity)  # W-TinyLFU (Rust core), thread-safe
        total = [0]

        def step(chunk: list[str]) -> None:
            get, put = cache.get, cache.set
            hits = 0
            for k in chunk:
                _v, ok = get(k)
                if ok:
                    hits += 1
                else:
                    put(k, load(k))
            total[0] += hits

        return step, lambda: total[0]

    return start


def functools_contender(capacity: int) -> Contender:
    def start() -> tuple[Step, Callable[[], int]]:
        cached = functools.lru_cache(maxsize=capacity)(load)

        def step(chunk: list[str]) -> None:
            f = cached
            for k in chunk:
                f(k)

        return step, lambda: cached.cache_info().hits

    return start


# -- contention --------------------------------------------------------------------------


def contention(threads: int, ops_per_thread: int, policy: str) -> dict[str, float]:
    """``threads`` threads: read-through over shared keys + private counters.

    Each thread also increments its own counter key with get/set (only it writes that
    key, so any lost update is the cache's fault) and loads shared keys through
    ``get_or_set``. At the end every counter must equal its thread's increments.
    """
    cache = SharedPromptCache(max_bytes=1 << 30, max_entries=50_000, policy=policy)
    stream = zipf_stream(10_000, ops_per_thread, 1.0, seed=7)
    barrier = threading.Barrier(threads + 1)
    increments = [0] * threads

    def worker(t: int) -> None:
        counter = f"counter:{t}"
        cache.set(counter, 0)
        gos = cache.get_or_set
        get, put = cache.get, cache.set
        barrier.wait()
        n = 0
        for i, k in enumerate(stream):
            gos(k, functools.partial(load, k))
            if i % 4 == 0:
                put(counter, get(counter) + 1)
                n += 1
        increments[t] = n

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    lost = sum(increments[t] - cache.get(f"counter:{t}") for t in range(threads))
    m = cache.metrics()
    total_ops = threads * ops_per_thread * 1.25
    return {
        "ops_per_s": total_ops / dt,
        "lost_updates": lost,
        "hit_rate": m["hit_rate"],
        "lookups_ok": m["lookups"] == m["hits"] + m["misses"],
        "loads": m["loads"],
        "coalesced": m["coalesced"],
    }


THREAD_SAFE = (BASELINE, "cachebox LRUCache", "theine Cache (W-TinyLFU)")


def interleaved(
    stream: list[str], contenders: dict[str, Contender], rounds: int, chunk: int, threads: int = 1
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Per round: every contender starts a fresh cache, then they take turns slice by slice
    (the order rotating), so that the machine's noise falls on all alike. With ``threads``
    > 1 each slice is split among that many threads sharing the contender's cache."""
    names = list(contenders)
    chunks = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    times: dict[str, list[float]] = {name: [] for name in names}
    hits: dict[str, int] = {}
    clock = CLOCK
    for rnd in range(rounds):
        gc.collect()
        steps = {name: contenders[name]() for name in names}
        spent = dict.fromkeys(names, 0.0)
        for i, part in enumerate(chunks):
            shift = (rnd + i) % len(names)
            for name in names[shift:] + names[:shift]:
                step = steps[name][0]
                if threads == 1:
                    t = clock()
                    step(part)
                    spent[name] += clock() - t
                else:
                    spent[name] += run_threads(step, part, threads)
        for name in names:
            times[name].append(spent[name])
            hits[name] = steps[name][1]()
        del steps
        print(f"# round {rnd + 1}/{rounds} done", file=sys.stderr)
    return times, hits


def run_threads(step: Step, part: list[str], threads: int) -> float:
    """Serve ``part`` split among ``threads`` threads started together; the time they took."""
    size = -(-len(part) // threads)
    barrier = threading.Barrier(threads + 1)

    def work(piece: list[str]) -> None:
        barrier.wait()
        step(piece)

    ts = [threading.Thread(target=work, args=(part[i : i + size],)) for i in range(0, len(part), size)]
    barrier = threading.Barrier(len(ts) + 1)
    for t in ts:
        t.start()
    barrier.wait()
    t0 = CLOCK()
    for t in ts:
        t.join()
    return CLOCK() - t0


def print_table(
    times: dict[str, list[float]], hits: dict[str, int] | None, ops: int, rounds: int, kind: str
) -> dict[str, tuple[float, float | None]]:
    """Print the table; returns each contender's median ratio to the baseline and hit ratio."""
    base = times[BASELINE]
    out: dict[str, tuple[float, float | None]] = {}
    ratio_head = f"vs baseline: median (range) of {rounds} per-round ratios"
    print(f"| contender | median ops/s ({kind} time) | {ratio_head} | hit ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name in times:
        med = statistics.median(times[name])
        ratios = [b / t for b, t in zip(base, times[name])]
        spread = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        hr = f"{hits[name] / ops:.2%}" if hits is not None else "-"
        print(f"| {name} | {ops / med / 1e6:.2f}M | {spread} | {hr} |")
        out[name] = (statistics.median(ratios), hits[name] / ops if hits is not None else None)
    return out


def print_bars(results: dict[str, dict[str, tuple[float, float | None]]]) -> None:
    """The bar lines run_all.py composes the summary of docs/benchmarks.md from (issue 17):
    TinyLFU >= 1.5x and LRU >= 2x the locked cachetools on every trace, hit ratio >= theine's."""
    theine_name = "theine Cache (W-TinyLFU)"
    for policy, name, bar in (("W-TinyLFU", "memdiag tinylfu (default)", 1.5), ("LRU", "memdiag lru", 2.0)):
        got = {trace: r[name][0] for trace, r in results.items() if name in r}
        if got:
            ok = all(x >= bar for x in got.values())
            figs = ", ".join(f"{trace} {x:.2f}x" for trace, x in got.items())
            print(f"- bar: {policy} >= {bar:g}x cachetools.LRUCache + Lock: {'met' if ok else 'NOT met'} ({figs})")
    pairs = {
        t: (r["memdiag tinylfu (default)"][1], r[theine_name][1])
        for t, r in results.items()
        if theine_name in r and "memdiag tinylfu (default)" in r and r[theine_name][1] is not None
    }
    if pairs:
        ok = all(a >= b for a, b in pairs.values())
        figs = ", ".join(f"{t} {a:.2%} vs {b:.2%}" for t, (a, b) in pairs.items())
        print(f"- bar: W-TinyLFU hit ratio >= theine's: {'met' if ok else 'NOT met'} ({figs})")


def profile(contender: Contender, stream: list[str]) -> None:
    """The read-through under cProfile: calls and own time per function, biggest first."""
    import cProfile
    import pstats

    from memdiag.cache import fastpaths

    step, _hits = contender()
    prof = cProfile.Profile()
    prof.runcall(step, stream)
    stats = pstats.Stats(prof)
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])  # type: ignore[attr-defined]
    total = sum(v[2] for _k, v in rows)
    print(f"\n{len(stream):,} requests, C paths {'on' if fastpaths.C_GET else 'off'}; cProfile own time\n")
    print("| function | calls | own time | share |")
    print("| --- | ---: | ---: | ---: |")
    for (file, line, name), (_cc, calls, tottime, _ct, _callers) in rows[:12]:
        where = name if file == "~" else f"{name} ({file.rsplit('/', 1)[-1]}:{line})"
        print(f"| {where} | {calls:,} | {tottime:.3f} s | {tottime / total:.0%} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--ops", type=int, default=4_000_000)
    ap.add_argument("--capacity", type=int, default=10_000)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=50_000, help="requests per interleaved slice")
    ap.add_argument("--threads", type=int, default=8, help="threads of the lost-update check (0: skip)")
    ap.add_argument("--traces", default="zipf,scan,loop", help="comma-separated: zipf, scan, loop")
    ap.add_argument(
        "--mix-threads", default="8", help="comma-separated thread counts for the shared-cache mix ('' to skip)"
    )
    ap.add_argument("--thread-ops", type=int, default=100_000)
    ap.add_argument("--no-belady", action="store_true")
    ap.add_argument("--extra", action="store_true", help="also time get_or_set and ttl variants")
    ap.add_argument("--wall", action="store_true", help="time with perf_counter, not CPU time")
    ap.add_argument("--only", default="", help="comma-separated name prefixes to run")
    ap.add_argument(
        "--one",
        choices=["none", "baseline", "lru", "tinylfu"],
        help="serve the stream once with one contender, untimed, and exit: for counting "
        "instructions under valgrind ('none' builds the stream only, to subtract)",
    )
    ap.add_argument(
        "--profile",
        choices=["lru", "tinylfu"],
        help="serve the stream once with that policy under cProfile and print where the time goes, "
        "then exit (MEMDIAG_CACHE_PURE_PYTHON=1: the Python paths, else the C ones)",
    )
    args = ap.parse_args()
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter

    t0 = time.perf_counter()
    stream = zipf_stream(args.keys, args.ops, args.zipf, args.seed)
    print(
        f"# stream: {args.ops:,} ops, {args.keys:,} keys, Zipf({args.zipf}), "
        f"capacity {args.capacity:,}, seed {args.seed} ({time.perf_counter() - t0:.1f}s)"
    )
    print(f"# python {platform.python_version()} on {platform.machine()}, cachetools {cachetools.__version__}")
    from importlib.metadata import PackageNotFoundError, version

    from memdiag.cache import fastpaths

    peers = []
    for name in ("cachebox", "theine"):
        try:
            peers.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            peers.append(f"{name} not installed")
    print(f"# {', '.join(peers)}; memdiag's C get and set {'built' if fastpaths.C_GET else 'not built'}")
    cap = args.capacity
    if args.profile:
        profile(memdiag_contender(args.profile, cap), stream)
        return
    if args.one:
        if args.one != "none":
            one = cachetools_contender(cap, locked=True) if args.one == "baseline" else memdiag_contender(args.one, cap)
            step, _ = one()
            step(stream)
        return
    contenders: dict[str, Contender] = {
        "memdiag tinylfu (default)": memdiag_contender("tinylfu", cap),
        "memdiag lru": memdiag_contender("lru", cap),
        BASELINE: cachetools_contender(cap, locked=True),
        "cachetools LRUCache, no lock": cachetools_contender(cap, locked=False),
        "functools.lru_cache": functools_contender(cap),
    }
    if cachebox is not None:
        contenders["cachebox LRUCache"] = cachebox_contender(cap)
    if theine is not None:
        contenders["theine Cache (W-TinyLFU)"] = theine_contender(cap)
    if args.extra:
        contenders["memdiag tinylfu, ttl=3600"] = memdiag_contender("tinylfu", cap, ttl=3600.0)
        contenders["memdiag tinylfu get_or_set"] = memdiag_get_or_set_contender("tinylfu", cap)
        contenders["memdiag lru get_or_set"] = memdiag_get_or_set_contender("lru", cap)
    if args.only:
        prefixes = [p.strip() for p in args.only.split(",")]
        contenders = {n: f for n, f in contenders.items() if n == BASELINE or any(n.startswith(p) for p in prefixes)}
    kind = "wall" if args.wall else "CPU"
    traces = [t.strip() for t in args.traces.split(",") if t.strip()]
    results: dict[str, dict[str, tuple[float, float | None]]] = {}
    for trace in traces:
        if trace == "zipf":
            tstream, note = stream, f"Zipf({args.zipf}) over {args.keys:,} keys"
        elif trace == "scan":
            tstream = scan_stream(stream, cap)
            note = f"the Zipf stream with a scan of {cap:,} new keys every {4 * cap:,}"
        elif trace == "loop":
            tstream, note = loop_stream(args.ops, cap), f"a loop over {cap * 3 // 2:,} keys"
        else:
            sys.exit(f"unknown trace {trace!r} (zipf, scan, loop)")
        times, hits = interleaved(tstream, contenders, args.rounds, args.chunk)
        print(f"\n### trace {trace}: {note}, {len(tstream):,} requests, 1 thread\n")
        results[trace] = print_table(times, hits, len(tstream), args.rounds, kind)
        if trace == "zipf":
            if not args.no_belady:
                opt = belady_hit_ratio(stream, cap)
                print(f"| optimum (Belady, clairvoyant) | - | - | {opt:.2%} |")
            print(
                f"| static top-{cap:,} mass (perfect frequency oracle, no cold misses) | - | - "
                f"| {static_optimum(args.keys, cap, args.zipf):.2%} |"
            )

    for nthreads in [int(t) for t in args.mix_threads.split(",") if t.strip()]:
        safe = {n: f for n, f in contenders.items() if n in THREAD_SAFE or n.startswith("memdiag")}
        safe = {n: f for n, f in safe.items() if "get_or_set" not in n}
        times, _hits = interleaved(stream, safe, args.rounds, args.chunk * nthreads, threads=nthreads)
        print(f"\n### Zipf stream from {nthreads} threads sharing one cache ({len(stream):,} requests in all)\n")
        results[f"{nthreads} threads"] = print_table(times, None, len(stream), args.rounds, kind)

    if args.threads:
        print()
        print(
            f"| {args.threads} threads, {args.thread_ops:,} requests each | ops/s "
            "| lost updates | hit ratio | loader calls | coalesced |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for policy in ("tinylfu", "lru"):
            r = contention(args.threads, args.thread_ops, policy)
            assert r["lookups_ok"]
            print(
                f"| memdiag {policy} | {r['ops_per_s'] / 1e6:.2f}M | {r['lost_updates']} "
                f"| {r['hit_rate']:.2%} | {r['loads']:,} | {r['coalesced']:,} |"
            )
    print()
    print_bars(results)


if __name__ == "__main__":
    main()
