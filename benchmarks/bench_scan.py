"""The container scan's stall: leak detection's walk over every tracked object.

While the walk runs, every other thread of the service waits (``exclusive_gil``), so its
duration is a latency spike the service sees every scan (every 10 s at most, and at most
1 % of the time: ``leaks.live.scan_interval``). Heaps of ``--objects`` request-like objects
(a dict and a list each, so twice as many tracked objects); per round, in rotating order:

  get_objects   ``gc.get_objects()`` and dropping the list: the floor of any such walk
  python        the walk in Python (``_gather_containers(..., native=False)``)
  c             the walk in C (``memdiag.leaks._scan``, the default where it is built)

Printed: the median over rounds of each, and the ratio python / c.

    python benchmarks/bench_scan.py [--objects 300000,1000000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

from memdiag.leaks import live


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", default="300000,1000000")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    if live._scan_gather is None:
        raise SystemExit("memdiag.leaks._scan is not built (pip install -e . with a C compiler)")
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds, medians")
    print(f"{'objects':>9} {'tracked':>9} {'get_objects':>12} {'python':>9} {'c':>9} {'python / c':>11}")
    for n in (int(x) for x in args.objects.split(",")):
        heap = [{"id": i, "items": [i]} for i in range(n)]
        tracked = len(gc.get_objects())
        runs = {
            "get_objects": lambda: gc.get_objects().clear(),
            "python": lambda: live._gather_containers({}, set(), native=False),
            "c": lambda: live._gather_containers({}, set(), native=True),
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        order = list(runs)
        for r in range(args.rounds):
            for k in order[r % 3 :] + order[: r % 3]:
                times[k].append(_time(runs[k]))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"{n:>9} {tracked:>9} {med['get_objects']:>9.1f} ms {med['python']:>6.1f} ms {med['c']:>6.1f} ms "
              f"{med['python'] / med['c']:>10.1f}x")
        del heap


if __name__ == "__main__":
    main()
