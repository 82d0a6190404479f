"""What ``memdiag.start()`` with default settings adds to a process, and whether it stays flat.

Run:  python benchmarks/bench_footprint.py [--rounds N] [--soak SECONDS] [--json]

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

``--soak S`` adds the steady state: a process with ``memdiag.start()`` at default settings
(``sample_interval`` 1 s, the history store written every 10 s, the leak detector free to
open its tracing windows) and a baseline, one pair per round, all left running ``S``
seconds at the same time; the first minutes are when memdiag's structures fill up.
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
if mode in ("soak", "soak_baseline"):  # default settings, left running for argv[2] seconds
    if mode == "soak":
        import memdiag
        m = memdiag.start()
    time.sleep(float(sys.argv[2]))
    out["warm"] = out["later"] = mem()
    if mode == "soak":
        hp = sys.modules.get("memdiag.leaks.heapprof")
        out["sampler"] = bool(hp and hp.running() and hp.backend() != "tracemalloc")
        out["traced"] = "tracemalloc" in sys.modules  # a leak detector's tracing window ran
        out["own_cost"] = m.overhead()["own_cost"]["memory_bytes"]
        m.stop()
    print(json.dumps(out))
    sys.exit(0)
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
    hp = sys.modules.get("memdiag.leaks.heapprof")  # the sampled heap profiler, if leak detection runs it
    out["sampler"] = bool(hp and hp.running() and hp.backend() != "tracemalloc")
    wait_ticks(m, 90)
    out["later"] = mem()
    out["sqlite3"] = "sqlite3" in sys.modules
    m.stop()
else:
    out["warm"] = out["later"] = mem()
print(json.dumps(out))
"""

MIB = 1024 * 1024
BAR_MIB = 8.0  # issue 17: the monitor within 8 MiB at default settings


def _env(sub: str = "") -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(SRC))
    env["XDG_STATE_HOME"] = os.path.join(env.get("BENCH_STATE_DIR", "/tmp/memdiag-bench-footprint"), sub)
    return env


def run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, env=_env(), timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def soak(rounds: int, seconds: float) -> dict:
    """``rounds`` pairs of processes (defaults; a baseline), all at once, left ``seconds``:
    memory does not depend on the load, so the pairs need not take turns."""
    procs = [
        (
            mode,
            subprocess.Popen(
                [sys.executable, "-c", CHILD, mode, str(seconds)],
                stdout=subprocess.PIPE,
                text=True,
                env=_env(f"soak-{i}"),  # a history file each: they run at the same time
            ),
        )
        for i in range(rounds)
        for mode in ("soak_baseline", "soak")
    ]
    rows: dict[str, list[dict]] = {"soak_baseline": [], "soak": []}
    for mode, p in procs:
        stdout, _ = p.communicate(timeout=seconds + 600)
        if p.returncode != 0:
            raise SystemExit(f"{mode} failed with {p.returncode}")
        rows[mode].append(json.loads(stdout.strip().splitlines()[-1]))
    deltas = [r["warm"][1] - b["warm"][1] for r, b in zip(rows["soak"], rows["soak_baseline"])]
    return {
        "seconds": seconds,
        "uss_delta_mib": round(statistics.median(deltas) / MIB, 2),
        "uss_delta_range_mib": [round(min(deltas) / MIB, 2), round(max(deltas) / MIB, 2)],
        "sampler": all(r["sampler"] for r in rows["soak"]),
        "tracing_windows": sum(r["traced"] for r in rows["soak"]),
        "own_cost_mib": round(statistics.median(r["own_cost"] for r in rows["soak"]) / MIB, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--soak",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also leave processes at default settings running this long (all rounds at once): the steady state",
    )
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
    res["native_sampler_running"] = all(r["sampler"] for r in rows["memdiag"])
    if args.soak:
        res["soak"] = soak(args.rounds, args.soak)
    if args.json:
        print(json.dumps(res, indent=1))
        return
    _table(res, args.rounds)


def _table(res: dict, rounds: int) -> None:
    """The figures as the Markdown table of docs/benchmarks.md."""
    sampler = "running" if res["native_sampler_running"] else "not running (not built, or leak detection off)"
    print(
        f"`memdiag.start()` with defaults, {rounds} interleaved rounds of fresh processes, medians [min, max]; "
        f"native heap sampler {sampler}; history store open: {res['history_store_open']}; "
        f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs\n"
    )
    print(f"| measure | figure | bar ({BAR_MIB:g} MiB) |")
    print("| --- | --- | --- |")
    for mode, label in (("memdiag", "defaults (leak detection on)"), ("no_leaks", "`leak_detection=False`")):
        uss = res[f"{mode}_uss_delta_mib"]
        lo, hi = res[f"{mode}_uss_delta_range_mib"]
        bar = ("met" if uss <= BAR_MIB else "NOT met") if mode == "memdiag" else "-"
        print(f"| USS added, {label} | +{uss:.2f} MiB [{lo:.2f}, {hi:.2f}] | {bar} |")
        lo, hi = res[f"{mode}_rss_delta_range_mib"]
        print(f"| RSS added, {label} | +{res[f'{mode}_rss_delta_mib']:.2f} MiB [{lo:.2f}, {hi:.2f}] | - |")
        print(
            f"| growth over 60 more ticks, {label} | USS {res[f'{mode}_uss_growth_60_ticks_kib']:+.0f} KiB, "
            f"RSS {res[f'{mode}_rss_growth_60_ticks_kib']:+.0f} KiB | flat |"
        )
    print(f"| Python heap added (tracemalloc, after warm-up) | +{res['python_traced_mib']:.2f} MiB | - |")
    print(f"| memdiag's bounded structures (`own_cost` memory_bytes) | {res['own_cost_structures_mib']:.2f} MiB | - |")
    if "soak" in res:
        sk = res["soak"]
        lo, hi = sk["uss_delta_range_mib"]
        bar = "met" if sk["uss_delta_mib"] <= BAR_MIB else "NOT met"
        print(
            f"| USS added after {sk['seconds']:g} s at default settings (`sample_interval` 1 s; native sampler "
            f"{'running' if sk['sampler'] else 'not running'}; {sk['tracing_windows']} of {rounds} processes opened "
            f"a tracing window) | +{sk['uss_delta_mib']:.2f} MiB [{lo:.2f}, {hi:.2f}] | {bar} |"
        )
        print(f"| `own_cost` memory_bytes after {sk['seconds']:g} s | {sk['own_cost_mib']:.2f} MiB | - |")
    _bars(res, rounds)


def _bars(res: dict, rounds: int) -> None:
    """The bar lines run_all.py composes the summary of docs/benchmarks.md from."""
    print()
    uss, (lo, hi) = res["memdiag_uss_delta_mib"], res["memdiag_uss_delta_range_mib"]
    print(
        f"- bar: `memdiag.start()` at defaults adds <= {BAR_MIB:g} MiB USS: {'met' if uss <= BAR_MIB else 'NOT met'} "
        f"(+{uss:.2f} MiB [{lo:.2f}, {hi:.2f}] at start, {rounds} fresh processes; "
        f"+{res['no_leaks_uss_delta_mib']:.2f} MiB with leak detection off)"
    )
    if "soak" in res:
        sk = res["soak"]
        lo, hi = sk["uss_delta_range_mib"]
        print(
            f"- bar: the same after {sk['seconds']:g} s at default settings: "
            f"{'met' if sk['uss_delta_mib'] <= BAR_MIB else 'NOT met'} "
            f"(+{sk['uss_delta_mib']:.2f} MiB [{lo:.2f}, {hi:.2f}])"
        )


if __name__ == "__main__":
    main()
