"""Benchmark SharedPromptCache against cachetools on a Zipf(1.0) read-through stream.

Workload: ``--ops`` requests over ``--keys`` distinct string keys drawn from a Zipf(s)
distribution (fixed seed), capacity ``--capacity`` entries, read-through: ``get``, and
on a miss ``load`` + ``set``. Every contender serves the same stream. In each round all
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--ops", type=int, default=4_000_000)
    ap.add_argument("--capacity", type=int, default=10_000)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=50_000, help="requests per interleaved slice")
    ap.add_argument("--threads", type=int, default=8)
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
    cap = args.capacity
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
    if args.extra:
        contenders["memdiag tinylfu, ttl=3600"] = memdiag_contender("tinylfu", cap, ttl=3600.0)
        contenders["memdiag tinylfu get_or_set"] = memdiag_get_or_set_contender("tinylfu", cap)
        contenders["memdiag lru get_or_set"] = memdiag_get_or_set_contender("lru", cap)
    if args.only:
        prefixes = [p.strip() for p in args.only.split(",")]
        contenders = {n: f for n, f in contenders.items() if n == BASELINE or any(n.startswith(p) for p in prefixes)}
    names = list(contenders)
    chunks = [stream[i : i + args.chunk] for i in range(0, len(stream), args.chunk)]
    times: dict[str, list[float]] = {name: [] for name in names}
    hits: dict[str, int] = {}
    clock = CLOCK
    for rnd in range(args.rounds):
        gc.collect()
        steps = {name: contenders[name]() for name in names}
        spent = dict.fromkeys(names, 0.0)
        for i, chunk in enumerate(chunks):
            shift = (rnd + i) % len(names)
            for name in names[shift:] + names[:shift]:
                step = steps[name][0]
                t = clock()
                step(chunk)
                spent[name] += clock() - t
        for name in names:
            times[name].append(spent[name])
            hits[name] = steps[name][1]()
        del steps
        print(f"# round {rnd + 1}/{args.rounds} done", file=sys.stderr)

    base = times[BASELINE]
    print()
    kind = "wall" if args.wall else "CPU"
    ratio_head = f"vs baseline: median (range) of {args.rounds} rounds"
    print(f"| contender | median ops/s ({kind} time) | {ratio_head} | hit ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name in names:
        med = statistics.median(times[name])
        ratios = [b / t for b, t in zip(base, times[name])]
        spread = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        print(f"| {name} | {args.ops / med / 1e6:.2f}M | {spread} | {hits[name] / args.ops:.2%} |")
    if not args.no_belady:
        t = time.perf_counter()
        opt = belady_hit_ratio(stream, cap)
        print(f"| optimum (Belady, clairvoyant) | - | - | {opt:.2%} |")
    print(
        f"| static top-{cap:,} mass (perfect frequency oracle, no cold misses) | - | - "
        f"| {static_optimum(args.keys, cap, args.zipf):.2%} |"
    )

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


if __name__ == "__main__":
    main()
