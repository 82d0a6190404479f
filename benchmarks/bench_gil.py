"""How long memdiag's background threads keep the application's threads waiting for the GIL.

A request that arrives while one of memdiag's threads (the monitor's tick, the heap
profile's snapshots and container scans, the leak detector's checks) runs Python code
waits for the GIL: until that thread blocks, or for the interpreter's switch interval
(5 ms by default) at most. This measures it from the application's side: a process
with ``memdiag.start()`` (default settings, as in bench_servers.py) and a small
application heap, where a probe thread sleeps ``--period`` s in a loop and records how
late each wake-up is. A wake-up is late by the time the GIL was held by another thread,
plus what the kernel's scheduler adds: the same process without memdiag is the control,
and a second one without memdiag the A/A control (what the noise alone gives).

Per role it prints, medians over ``--rounds`` interleaved rounds: the probe's late
wake-ups (p50/p99/p99.9/max of the delay, how many per second over 1 and 4 ms), the
GIL time lost per second (sum of delays less the probe thread's own run-queue wait,
from ``/proc/self/task/*/schedstat``), and the CPU of memdiag's threads per second.
With ``--steps`` the memdiag run also times the monitor's steps (wall time of each
call: the sampler, the leak detector's listener, checks, snapshots, scans) and prints
their count, median, p99 and max.

    python benchmarks/bench_gil.py [--rounds 5] [--seconds 20] [--warmup 5] [--steps] [--rt]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
ROLES = ("memdiag", "none", "control")

# (module, attribute path) of the steps timed with --steps: what runs on memdiag's threads
STEPS = (
    ("memdiag.service", "MemoryDiagnostics.tick"),
    ("memdiag.sample", "Sampler.take"),
    ("memdiag.leaks.detector", "LeakDetector._on_sample"),
    ("memdiag.leaks.detector", "LeakDetector.check"),
    ("memdiag.leaks.livecheck", "LiveChecker.tick"),
    ("memdiag.leaks.census", "CensusHistory.take"),
    ("memdiag.leaks.live", "ContainerWatch.scan"),
    ("memdiag.leaks.heapprof", "snapshot"),
    ("memdiag.leaks.live", "HeapSeries.add"),
    ("memdiag.http.tick", "PerTick.prebuild"),
)


def _schedstat(tid: int) -> tuple[int, int]:
    """(CPU ns, run-queue wait ns) of thread ``tid`` of this process."""
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            cpu, wait, _ = f.read().split()
        return int(cpu), int(wait)
    except (OSError, ValueError):
        return 0, 0


def _time_steps() -> dict[str, list[float]]:
    """Wrap each of STEPS with a wall-time recorder; returns name -> durations (s)."""
    import importlib

    got: dict[str, list[float]] = {}
    for mod_name, path in STEPS:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        owner: Any = mod
        *outer, attr = path.split(".")
        for part in outer:
            owner = getattr(owner, part, None)
        fn = getattr(owner, attr, None) if owner is not None else None
        if fn is None:
            continue
        times = got.setdefault(path, [])

        def timed(*a: Any, _fn: Any = fn, _times: list[Any] = times, **k: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return _fn(*a, **k)
            finally:
                _times.append((time.perf_counter() - t0, time.thread_time() - c0))

        setattr(owner, attr, timed)
    return got


def _app_heap() -> list[Any]:
    """A web service's heap: the three servers' frameworks imported, their apps built."""
    sys.path.insert(0, str(HERE))
    import bench_servers  # noqa: F401  (its frameworks below)
    import uvicorn  # noqa: F401
    from aiohttp import web
    from fastapi import FastAPI
    from flask import Flask

    apps = [FastAPI(), web.Application(), Flask("bench_gil")]
    apps[0].get("/")(bench_servers._payload)
    return apps


def child(mounted: bool, seconds: float, warmup: float, period: float, steps: bool) -> None:
    heap = _app_heap()
    timed = _time_steps() if steps and mounted else {}
    if mounted:
        import memdiag

        memdiag.start()
    time.sleep(warmup)  # memdiag's first sample, profile, snapshot
    for v in timed.values():
        v.clear()
    own = [t for t in threading.enumerate() if t.name.startswith("memdiag")]
    own0 = {t.name: _schedstat(t.native_id or 0)[0] for t in own}
    delays: list[float] = []
    me = threading.get_native_id()
    cpu0, wait0 = _schedstat(me)
    end = time.perf_counter() + seconds
    t_prev = time.perf_counter()
    while t_prev < end:
        time.sleep(period)
        t = time.perf_counter()
        delays.append(t - t_prev - period)
        t_prev = t
    cpu1, wait1 = _schedstat(me)
    own_cpu = {t.name: (_schedstat(t.native_id or 0)[0] - own0.get(t.name, 0)) / 1e9 for t in own}
    print(json.dumps({"delays": delays, "runq_wait": (wait1 - wait0) / 1e9, "seconds": seconds, "own_cpu": own_cpu,
                      "steps": timed, "heap": len(heap)}))  # fmt: skip


def _run(role: str, a: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "1" if role == "memdiag" else "0",
                          str(a.seconds), str(a.warmup), str(a.period), "1" if a.steps else "0"],
                         capture_output=True, text=True, env=env, timeout=a.seconds + a.warmup + 120)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{role} child failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def _figures(r: dict[str, Any], period: float) -> dict[str, float]:
    d = r["delays"]
    secs = r["seconds"]
    slack = statistics.median(d)  # the timer's own lateness, paid by every wake-up
    return {
        "p50_ms": _pct(d, 0.5) * 1e3,
        "p99_ms": _pct(d, 0.99) * 1e3,
        "p999_ms": _pct(d, 0.999) * 1e3,
        "max_ms": max(d) * 1e3,
        "over1ms_per_s": sum(x > 1e-3 for x in d) / secs,
        "over4ms_per_s": sum(x > 4e-3 for x in d) / secs,
        "lost_ms_per_s": max(0.0, sum(x - slack for x in d) - r["runq_wait"]) / secs * 1e3,
        "own_cpu_ms_per_s": sum(r["own_cpu"].values()) / secs * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--period", type=float, default=0.001, help="the probe's sleep (s)")
    ap.add_argument("--steps", action="store_true", help="time memdiag's steps in the memdiag run")
    ap.add_argument("--rt", action="store_true", help="real-time priority (SCHED_FIFO 10; root): other processes wait")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(a.child[0] == "1", float(a.child[1]), float(a.child[2]), float(a.child[3]), a.child[4] == "1")
        return 0
    if a.rt:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))  # the children inherit it
    with open("/proc/loadavg") as f:
        print(("real-time priority; " if a.rt else "") + f"load average {f.read().split()[0]} on {os.cpu_count()} cores; {a.rounds} rounds x {a.seconds:g} s "
              f"per role after {a.warmup:g} s, probe period {a.period * 1e3:g} ms; switch interval "
              f"{sys.getswitchinterval() * 1e3:g} ms", flush=True)
    res: dict[str, list[dict[str, float]]] = {k: [] for k in ROLES}
    steps: dict[str, list[Any]] = {}
    own: dict[str, list[float]] = {}
    for r in range(a.rounds):
        order = ROLES[r % 3:] + ROLES[: r % 3]
        for role in order:
            got = _run(role, a)
            res[role].append(_figures(got, a.period))
            for k, v in got["steps"].items():
                steps.setdefault(k, []).extend(v)
            for k, v in got["own_cpu"].items():
                own.setdefault(k, []).append(v / got["seconds"] * 1e3)
        print(f"  round {r + 1}: " + ", ".join(f"{k} p99.9 {res[k][-1]['p999_ms']:.2f} ms lost "
                                               f"{res[k][-1]['lost_ms_per_s']:.2f} ms/s" for k in ROLES), flush=True)
    keys = list(res["memdiag"][0])
    print("role      " + " ".join(f"{k:>16s}" for k in keys))
    for role in ROLES:
        print(f"{role:9s} " + " ".join(f"{statistics.median(x[k] for x in res[role]):16.3f}" for k in keys))
    print("memdiag's threads, CPU ms/s (median over rounds): " +
          ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in sorted(own.items())))
    for k, v in steps.items():
        if v:
            w, c = [x[0] for x in v], [x[1] for x in v]
            print(f"step {k:32s} n {len(v):5d}  CPU median {statistics.median(c) * 1e3:7.3f} ms  p99 "
                  f"{_pct(c, .99) * 1e3:7.3f} ms  max {max(c) * 1e3:7.3f} ms  total {sum(c):.3f} s;  "
                  f"wall p99 {_pct(w, .99) * 1e3:7.3f} ms max {max(w) * 1e3:7.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
