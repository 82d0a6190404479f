"""Benchmark SharedPromptCache against cachetools on a Zipf(1.0) read-through stream.

Workload: ``--ops`` requests over ``--keys`` distinct string keys drawn from a Zipf(s)
distribution (fixed seed), capacity ``--capacity`` entries, read-through: ``get``, and
on a miss ``load`` + ``set``. Every contender sees the same stream, in interleaved
rounds (so drift of the machine hits all alike; the order of the contenders rotates
from round to round); the table reports the median throughput, the ratio to
``cachetools.LRUCache`` guarded by a ``threading.Lock`` (the baseline: cachetools is
not thread-safe) - the median of the per-round ratios, each taken between runs of the
same round, with their range - and the hit ratio. Belady's clairvoyant
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


# -- contenders: each returns the number of hits over the stream ------------------------


def run_memdiag(policy: str, capacity: int, **kw: object) -> Callable[[list[str]], int]:
    def run(stream: list[str]) -> int:
        cache = SharedPromptCache(max_bytes=1 << 40, max_entries=capacity, policy=policy, name=f"bench-{policy}", **kw)
        get, put = cache.get, cache.set
        for k in stream:
            if get(k) is None:
                put(k, load(k))
        return cache.metrics()["hits"]

    return run


def run_memdiag_get_or_set(policy: str, capacity: int) -> Callable[[list[str]], int]:
    def run(stream: list[str]) -> int:
        cache = SharedPromptCache(max_bytes=1 << 40, max_entries=capacity, policy=policy, name=f"bench-gos-{policy}")
        gos = cache.get_or_set
        for k in stream:
            gos(k, functools.partial(load, k))
        return cache.metrics()["hits"]

    return run


def run_cachetools_locked(capacity: int) -> Callable[[list[str]], int]:
    def run(stream: list[str]) -> int:
        cache: cachetools.LRUCache[str, str] = cachetools.LRUCache(capacity)
        lock = threading.Lock()
        hits = 0
        for k in stream:
            with lock:
                v = cache.get(k)
            if v is None:
                v = load(k)
                with lock:
                    cache[k] = v
            else:
                hits += 1
        return hits

    return run


def run_cachetools_unlocked(capacity: int) -> Callable[[list[str]], int]:
    def run(stream: list[str]) -> int:
        cache: cachetools.LRUCache[str, str] = cachetools.LRUCache(capacity)
        hits = 0
        for k in stream:
            v = cache.get(k)
            if v is None:
                cache[k] = load(k)
            else:
                hits += 1
        return hits

    return run


def run_functools(capacity: int) -> Callable[[list[str]], int]:
    def run(stream: list[str]) -> int:
        cached = functools.lru_cache(maxsize=capacity)(load)
        for k in stream:
            cached(k)
        return cached.cache_info().hits

    return run


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
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--thread-ops", type=int, default=100_000)
    ap.add_argument("--no-belady", action="store_true")
    ap.add_argument("--extra", action="store_true", help="also time get_or_set and ttl variants")
    ap.add_argument("--wall", action="store_true", help="time with perf_counter, not CPU time")
    ap.add_argument("--only", default="", help="comma-separated name prefixes to run")
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
    contenders: dict[str, Callable[[list[str]], int]] = {
        "memdiag tinylfu (default)": run_memdiag("tinylfu", cap),
        "memdiag lru": run_memdiag("lru", cap),
        "cachetools LRUCache + Lock (baseline)": run_cachetools_locked(cap),
        "cachetools LRUCache, no lock": run_cachetools_unlocked(cap),
        "functools.lru_cache": run_functools(cap),
    }
    if args.extra:
        contenders["memdiag tinylfu, ttl=3600"] = run_memdiag("tinylfu", cap, ttl=3600.0)
        contenders["memdiag tinylfu get_or_set"] = run_memdiag_get_or_set("tinylfu", cap)
        contenders["memdiag lru get_or_set"] = run_memdiag_get_or_set("lru", cap)
    if args.only:
        prefixes = [p.strip() for p in args.only.split(",")]
        contenders = {n: f for n, f in contenders.items() if "baseline" in n or any(n.startswith(p) for p in prefixes)}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    hits: dict[str, int] = {}
    names = list(contenders)
    for rnd in range(args.rounds):
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:
            fn = contenders[name]
            gc.collect()
            t = CLOCK()
            h = fn(stream)
            times[name].append(CLOCK() - t)
            hits[name] = h
        print(f"# round {rnd + 1}/{args.rounds} done", file=sys.stderr)

    base = times["cachetools LRUCache + Lock (baseline)"]
    print()
    clock = "wall" if args.wall else "CPU"
    print(
        f"| contender | median ops/s ({clock} time) | vs baseline: median (range) of {args.rounds} rounds | hit ratio |"
    )
    print("| --- | ---: | ---: | ---: |")
    for name in contenders:
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
