"""What ``memdiag.start()`` with default settings adds to a process, and whether it stays flat.

Run:  python benchmarks/bench_footprint.py [--rounds N] [--json]

Fresh processes, interleaved round by round (the machines here are shared and noisy; the
figures are memory, not time, so load moves them little), medians over the rounds:

* ``baseline``: the same application imports (logging, json, threading), no memdiag;
* ``memdiag``: plus ``import memdiag; memdiag.start()`` (defaults; leak detection on);
* ``no_leaks``: the same with ``leak_detection=False``.

Each memdiag process warms up for 30 ticks (``sample_interval=0.1``,
``history_db_interval=1``, so the SQLite history store has opened and written), then
reads RSS and USS (``/proc/self/smaps_rollup``), runs 60 more ticks and reads them again
(flatness). A separate process per round measures the Python part with tracemalloc
(traced bytes after warm-up minus before ``import memdiag``), and its own-cost report
(``overhead()["own_cost"]["memory_bytes"]``: memdiag's bounded structures).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

CHILD = r"""
import json, logging, sys, threading, time
mode = sys.argv[1]

def mem():
    d = {}
    with open("/proc/self/smaps_rollup") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if v.strip().endswith("kB"):
                d[k] = int(v.split()[0]) * 1024
    return d["Rss"], d.get("Private_Clean", 0) + d.get("Private_Dirty", 0)

def wait_ticks(m, n):
    deadline = time.monotonic() + 300
    while m.stats.ticks < n and time.monotonic() < deadline:
        time.sleep(0.05)

out = {}
if mode == "tracemalloc":
    import tracemalloc
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
if mode != "baseline":
    import memdiag
    kw = {"sample_interval": 0.1, "history_db_interval": 1.0}
    if mode == "no_leaks":
        kw["leak_detection"] = False
    m = memdiag.start(**kw)
    wait_ticks(m, 30)
    out["warm"] = mem()
    if mode == "tracemalloc":
        out["traced"] = tracemalloc.get_traced_memory()[0] - before
        out["own_cost"] = m.overhead()["own_cost"]["memory_bytes"]
    wait_ticks(m, 90)
    out["later"] = mem()
    out["sqlite3"] = "sqlite3" in sys.modules
    m.stop()
else:
    out["warm"] = out["later"] = mem()
print(json.dumps(out))
"""

MIB = 1024 * 1024


def run(mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(SRC))
    env["XDG_STATE_HOME"] = env.get("BENCH_STATE_DIR", "/tmp/memdiag-bench-footprint")
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows: dict[str, list[dict]] = {"baseline": [], "memdiag": [], "no_leaks": [], "tracemalloc": []}
    for _ in range(args.rounds):
        for mode in rows:  # interleaved: one of each per round
            rows[mode].append(run(mode))

    def med(mode: str, key: str, idx: int) -> float:
        return statistics.median(r[key][idx] for r in rows[mode])

    res = {"rounds": args.rounds}
    for mode in ("memdiag", "no_leaks"):
        for idx, what in ((0, "rss"), (1, "uss")):
            deltas = [r["warm"][idx] - b["warm"][idx] for r, b in zip(rows[mode], rows["baseline"])]
            res[f"{mode}_{what}_delta_mib"] = round(statistics.median(deltas) / MIB, 2)
            res[f"{mode}_{what}_delta_range_mib"] = [round(min(deltas) / MIB, 2), round(max(deltas) / MIB, 2)]
            growth = [r["later"][idx] - r["warm"][idx] for r in rows[mode]]
            res[f"{mode}_{what}_growth_60_ticks_kib"] = round(statistics.median(growth) / 1024, 1)
    res["python_traced_mib"] = round(statistics.median(r["traced"] for r in rows["tracemalloc"]) / MIB, 2)
    res["own_cost_structures_mib"] = round(statistics.median(r["own_cost"] for r in rows["tracemalloc"]) / MIB, 2)
    res["history_store_open"] = all(r["sqlite3"] for r in rows["memdiag"])
    if args.json:
        print(json.dumps(res, indent=1))
        return
    print(f"memdiag.start() with defaults, {args.rounds} interleaved rounds of fresh processes, medians:")
    for mode, label in (("memdiag", "defaults (leak detection on)"), ("no_leaks", "leak_detection=False")):
        print(
            f"  {label:30s} USS +{res[f'{mode}_uss_delta_mib']} MiB {res[f'{mode}_uss_delta_range_mib']}, "
            f"RSS +{res[f'{mode}_rss_delta_mib']} MiB {res[f'{mode}_rss_delta_range_mib']}; "
            f"after 60 more ticks USS {res[f'{mode}_uss_growth_60_ticks_kib']:+} KiB, "
            f"RSS {res[f'{mode}_rss_growth_60_ticks_kib']:+} KiB"
        )
    print(
        f"  Python heap (tracemalloc): +{res['python_traced_mib']} MiB; "
        f"own_cost structures: {res['own_cost_structures_mib']} MiB; "
        f"history store open: {res['history_store_open']}"
    )


if __name__ == "__main__":
    main()
