"""One monitor tick over 100 live children on a host with 1000 unrelated processes.

Compares, in interleaved rounds:

* ``memdiag tick``: a full ``MemoryDiagnostics.tick()`` (walker, pressure signals incl.
  the process-tree observer and Node/owned signals, history), no profile;
* ``memdiag walker``: ``ChildWalker.walk()`` alone (the tree part of the tick);
* ``psutil naive``: ``psutil.Process().children(recursive=True)`` + ``memory_info()``
  per child, what a user would write instead (it reads every PID's stat on the host).

The 1000 unrelated ``sleep`` processes are started by a shell in its own session that
exits at once, so they are orphans re-parented away from this process (not in its tree).

Run: python benchmarks/bench_tree.py [--children 100] [--unrelated 1000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import time

import psutil

from memdiag.config import MemoryConfig
from memdiag.probes.tree import ChildWalker
from memdiag.service import MemoryDiagnostics


def start_unrelated(n: int) -> int:
    """Start n sleeps outside our tree; returns their process group."""
    sh = subprocess.Popen(
        ["sh", "-c", f"i=0; while [ $i -lt {n} ]; do sleep 600 & i=$((i+1)); done"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )
    sh.wait()
    return sh.pid  # the session leader's PID is the group ID of the sleeps


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def naive() -> int:
    total = 0
    for c in psutil.Process().children(recursive=True):
        try:
            total += c.memory_info().rss
        except psutil.Error:
            pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--children", type=int, default=100)
    ap.add_argument("--unrelated", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    pgid = start_unrelated(args.unrelated)
    kids = []
    try:
        kids = [subprocess.Popen(["sleep", "600"]) for _ in range(args.children)]
        time.sleep(0.5)
        diag = MemoryDiagnostics(MemoryConfig(enable_auto_cleanup=False, enable_profiling=False))
        walker = ChildWalker()
        host = sum(1 for p in os.listdir("/proc") if p.isdigit())
        seen = len(diag.tick(profile=False)[0].children)
        assert seen >= args.children, seen
        assert len(psutil.Process().children(recursive=True)) >= args.children
        walker.walk()
        runs: dict[str, list[float]] = {"memdiag tick": [], "memdiag walker": [], "psutil naive": []}
        for _ in range(args.rounds):  # interleaved: noise hits all three alike
            runs["memdiag tick"] += timed(lambda: diag.tick(profile=False), args.reps)
            runs["memdiag walker"] += timed(walker.walk, args.reps)
            runs["psutil naive"] += timed(naive, args.reps)
        print(f"host processes: {host}; our descendants: {seen}; samples per method: {len(runs['psutil naive'])}")
        base = statistics.median(runs["psutil naive"])
        for name, xs in runs.items():
            xs.sort()
            med, p90 = statistics.median(xs), xs[int(0.9 * (len(xs) - 1))]
            print(
                f"{name:16s} median {med * 1e3:7.3f} ms   p90 {p90 * 1e3:7.3f} ms   x{med / base:5.2f} of psutil naive"
            )
        diag.close()
        walker.close()
    finally:
        for k in kids:
            k.kill()
            k.wait()
        try:
            os.killpg(pgid, signal.SIGKILL)  # the group this script started
        except ProcessLookupError:
            pass


if __name__ == "__main__":
    main()
