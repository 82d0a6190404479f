"""One monitor tick over 100 live children on a host with 1000 unrelated processes.

Compares, in interleaved rounds:

* ``memdiag tick``: a full ``MemoryDiagnostics.tick()`` (walker, pressure signals incl.
  the process-tree observer and Node/owned signals, history), no profile;
* ``memdiag walker``: ``ChildWalker.walk()`` alone (the tree part of the tick);
* ``psutil naive``: ``psutil.Process().children(recursive=True)`` + ``memory_info()``
  per child, what a user would write instead (it reads every PID's stat on the host).

The 1000 unrelated ``sleep`` processes are started by a shell in its own session that
exits at once, so they are orphans re-parented away from this process (not in its tree).

With ``--baseline FILE`` (another version of ``memdiag/probes/tree.py``, e.g.
``git show REV:src/memdiag/probes/tree.py > /tmp/tree_base.py``) its walker runs in the same
interleaved rounds, and the per-round ratio of the medians (this walker / baseline) is printed.

Run: python benchmarks/bench_tree.py [--children 100] [--unrelated 1000] [--rounds 15] [--baseline FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
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


def load_walker(path: str) -> ChildWalker:
    """A ChildWalker from another copy of memdiag/probes/tree.py (loaded inside the package)."""
    spec = importlib.util.spec_from_file_location("memdiag.probes._tree_baseline", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ChildWalker()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--children", type=int, default=100)
    ap.add_argument("--unrelated", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--baseline", help="another tree.py whose walker runs in the same rounds")
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
        baseline = load_walker(args.baseline) if args.baseline else None
        if baseline is not None:
            assert len(baseline.walk()) == len(walker.walk())
        runs: dict[str, list[float]] = {"memdiag tick": [], "memdiag walker": [], "psutil naive": []}
        ratios: list[float] = []
        for r in range(args.rounds):  # interleaved: noise hits all of them alike
            runs["memdiag tick"] += timed(lambda: diag.tick(profile=False), args.reps)
            base_round = timed(baseline.walk, args.reps) if baseline is not None and r % 2 else []
            ours = timed(walker.walk, args.reps)
            runs["memdiag walker"] += ours
            if baseline is not None:
                base_round = base_round or timed(baseline.walk, args.reps)  # before ours in odd rounds
                runs.setdefault("baseline walker", []).extend(base_round)
                ratios.append(statistics.median(ours) / statistics.median(base_round))
            runs["psutil naive"] += timed(naive, args.reps)
        print(f"host processes: {host}; our descendants: {seen}; samples per method: {len(runs['psutil naive'])}")
        base = statistics.median(runs["psutil naive"])
        for name, xs in runs.items():
            xs.sort()
            med, p90 = statistics.median(xs), xs[int(0.9 * (len(xs) - 1))]
            print(
                f"{name:16s} median {med * 1e3:7.3f} ms   p90 {p90 * 1e3:7.3f} ms   x{med / base:5.2f} of psutil naive"
            )
        tick = statistics.median(runs["memdiag tick"]) * 1e3
        print(
            f"- bar: one tick over {seen} children, median <= 5 ms: {'met' if tick <= 5 else 'NOT met'} "
            f"({tick:.2f} ms; psutil children(recursive=True) + memory_info() {base * 1e3:.1f} ms)"
        )
        if ratios:
            ratios.sort()
            print(
                f"walker / baseline per round: median {statistics.median(ratios):.3f} "
                f"(range {ratios[0]:.3f}-{ratios[-1]:.3f}, {len(ratios)} rounds)"
            )
        diag.close()
        walker.close()
        if baseline is not None:
            baseline.close()
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
