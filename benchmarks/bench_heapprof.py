"""Overhead of the sampled heap profiler, side by side with tracemalloc and memray.

Two services, each run in a fresh process per contender and round, rounds interleaved
(the contenders' order rotates every round), so a noisy machine hits all of them alike:

- busy: four threads of JSON churn and many small objects (dicts, lists, strings);
- quiet: one thread serving a small request every millisecond.

The figure is operations per CPU second of the process (throughput at equal CPU): on a
shared machine wall-clock throughput moves with what other processes take (a first run
here gave 0.44-1.50 for the same contender), CPU time per operation much less; the
quiet service's throughput is set by its sleep anyway. Wall-clock throughput is printed
beside it for the busy service.

Contenders: no profiler; memdiag's sampler at its default interval (512 KiB); tracemalloc
with 1 and with 16 frames; memray (``memray.Tracker``, if installed: ``pip install memray``).
Printed: the median over rounds of each contender's ratio to the no-profiler run of the
same round (1.00 = no cost), with the range.

    python benchmarks/bench_heapprof.py [--rounds 5] [--seconds 3]

Instruction counts (steadier than times on a shared machine): a fixed JSON loop with
40 MB live, sampler off and on, under callgrind; compare the two "Collected" totals:

    valgrind --tool=callgrind python benchmarks/bench_heapprof.py --loop 5000 --mode off
    valgrind --tool=callgrind python benchmarks/bench_heapprof.py --loop 5000 --mode on
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.abspath(__file__)
CONTENDERS = ["none", "sampler", "tracemalloc-1", "tracemalloc-16", "memray"]


def _busy(stop: threading.Event, counter: list[int], i: int) -> None:
    n = 0
    keep: list[Any] = []
    while not stop.is_set():
        d = {"id": n, "user": f"user{n % 1000}", "items": [{"k": str(j), "v": j * 1.5, "t": (j, n)} for j in range(12)]}
        s = json.dumps(d)
        back = json.loads(s)
        keep.append(back["items"][n % 12])
        if len(keep) > 2000:
            keep = keep[1000:]
        n += 1
        counter[i] += 1


def _quiet(stop: threading.Event, counter: list[int], i: int) -> None:
    while not stop.is_set():
        d = {"path": "/api/x", "headers": {f"h{j}": "v" * 20 for j in range(10)}, "body": list(range(50))}
        json.loads(json.dumps(d))
        counter[i] += 1
        time.sleep(0.001)


def child(workload: str, contender: str, seconds: float) -> dict[str, float]:
    """Run one workload under one contender; return its figure."""
    tracker = None
    if contender == "sampler":
        from memdiag.leaks import heapprof

        heapprof.start()
        assert heapprof.backend() == "native", heapprof.available()
    elif contender.startswith("tracemalloc"):
        import tracemalloc

        tracemalloc.start(int(contender.split("-")[1]))
    elif contender == "memray":
        import memray

        out = os.path.join(tempfile.mkdtemp(), "memray.bin")
        tracker = memray.Tracker(out)
        tracker.__enter__()
    threads_n = 4 if workload == "busy" else 1
    fn = _busy if workload == "busy" else _quiet
    stop = threading.Event()
    counter = [0] * threads_n
    threads = [threading.Thread(target=fn, args=(stop, counter, i), daemon=True) for i in range(threads_n)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # warm-up
    c0, t0, p0 = sum(counter), time.perf_counter(), time.process_time()
    time.sleep(seconds)
    c1, t1, p1 = sum(counter), time.perf_counter(), time.process_time()
    stop.set()
    for t in threads:
        t.join()
    if tracker is not None:
        tracker.__exit__(None, None, None)
    ops = c1 - c0
    return {"ops_per_s": ops / (t1 - t0), "cpu_per_op_us": (p1 - p0) / max(ops, 1) * 1e6}


def fixed_loop(n: int, sampler: bool) -> None:
    """The same work every time: 40 MB kept, then ``n`` JSON round trips."""
    from memdiag.leaks import heapprof

    keep = [bytes(100) for _ in range(300_000)]
    if sampler:
        heapprof.start()
    keep2 = [str(i) * 20 for i in range(200_000)]
    for i in range(n):
        d = {"id": i, "items": [{"k": str(j), "v": j * 1.5} for j in range(12)]}
        json.loads(json.dumps(d))
    del keep, keep2


def _available(contender: str) -> bool:
    if contender == "memray":
        try:
            import memray  # noqa: F401
        except ImportError:
            return False
    if contender == "sampler":
        from memdiag.leaks import heapprof

        return heapprof.available()[0]
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--workload", choices=["busy", "quiet", "both"], default="both")
    p.add_argument("--loop", type=int, help="run the fixed loop this many times (for callgrind)")
    p.add_argument("--mode", choices=["on", "off"], default="on")
    p.add_argument("--_child", nargs=2, metavar=("WORKLOAD", "CONTENDER"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.loop:
        fixed_loop(a.loop, a.mode == "on")
        return
    if a._child:
        print(json.dumps(child(a._child[0], a._child[1], a.seconds)))
        return
    contenders = [c for c in CONTENDERS if _available(c)]
    skipped = [c for c in CONTENDERS if c not in contenders]
    workloads = ["busy", "quiet"] if a.workload == "both" else [a.workload]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {a.rounds} rounds x {a.seconds:g} s"
          + (f"; not installed: {', '.join(skipped)}" if skipped else ""))
    for w in workloads:
        ratios: dict[str, list[float]] = {c: [] for c in contenders}
        wall: dict[str, list[float]] = {c: [] for c in contenders}
        for r in range(a.rounds):
            order = contenders[r % len(contenders):] + contenders[: r % len(contenders)]
            res = {}
            for c in order:
                out = subprocess.run([sys.executable, HERE, "--seconds", str(a.seconds), "--_child", w, c],
                                     capture_output=True, text=True, timeout=300)
                if out.returncode != 0:
                    raise SystemExit(f"{w}/{c} failed: {out.stderr[-2000:]}")
                res[c] = json.loads(out.stdout.strip().splitlines()[-1])
            for c in contenders:  # 1.00 = free
                ratios[c].append(res["none"]["cpu_per_op_us"] / res[c]["cpu_per_op_us"])
                wall[c].append(res[c]["ops_per_s"] / res["none"]["ops_per_s"])
        print(f"\n{w}: operations per CPU second vs none, median [min-max] over {a.rounds} rounds"
              + ("; wall-clock throughput vs none" if w == "busy" else ""))
        for c in contenders:
            v = ratios[c]
            med = statistics.median(v)
            line = f"  {c:15s} {med:.3f}  [{min(v):.3f}-{max(v):.3f}]  cost {100 * (1 - med):+.1f} %"
            if w == "busy":
                line += f"   wall {statistics.median(wall[c]):.3f} [{min(wall[c]):.3f}-{max(wall[c]):.3f}]"
            print(line)


if __name__ == "__main__":
    main()
