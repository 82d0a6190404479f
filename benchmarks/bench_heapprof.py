"""Overhead of the sampled heap profiler, side by side with tracemalloc and memray.

Two services, each run in a fresh process per contender and round:

- busy: four threads of JSON churn and many small objects (dicts, lists, strings);
- quiet: one thread serving a small request every millisecond.

Contenders: no profiler; memdiag's sampler at its default interval (512 KiB); tracemalloc
with 1 and with 16 frames; memray (``memray.Tracker``, if installed: ``pip install memray``).
The ablation contenders (named with ``--contenders``): ``memdiag`` (``memdiag.start()`` at
default settings: monitor, control channel, leak detection with the sampler, the audit,
thread and task hooks and the heap thread), ``memdiag-noheap`` (``heap_profile="off"``),
``memdiag-noleaks`` (``leak_detection=False``), ``audit`` (the resource-origin hooks alone)
and ``audit-py`` (the same with the audit hook in Python, as before it was C). For the
memdiag contenders the times also print the CPU of memdiag's own threads (schedstat) as a
share of a core. ``--workload logged``: the quiet service logging one line per request
(logging's caller lookup raises audit events: sys._getframe, f_code).

The measures:

0. Alternating slices (``--alternate``: the one that resolves the 2 % bar on a shared
   machine). Every contender is its own process, and so are *two* processes without a
   profiler (the A/A pair), all started at once; then only one runs its workload at a
   time, in short slices (``--slice``, 10 ms), each process once per cycle in a shuffled
   order, for ``--cycles`` cycles. The others' workload threads wait behind a gate (their
   profiler's own threads keep their wall-clock pace). Every child is pinned to one CPU
   (``--pin``: the last by default, ``none`` not to). Per slice: process CPU time per
   operation (all threads, the profiler's included). Per contender: the median over cycles
   of (no profiler's CPU per op, its two processes pooled / its own) with a 95 %
   percentile-bootstrap interval (2 000
   resamples of the cycles, seeded), the same for the ratio of the totals (periodic work
   that falls in few slices counts in full there), and the A/A row of the same run beside
   each. Slices 10 ms apart meet the same machine: what other processes do to the caches
   and the scheduler hits every contender alike, and the per-cycle ratio cancels it. What
   it does not cancel is a process's own layout (one no-profiler process ran 1.7 % faster
   than the other through a whole run at load 13-16): an A/A interval that excludes 1 is
   flagged, and the bar line then says "not shown". For the quiet service (its bar names
   throughput) also operations per wall second over all of a process's slices, against the
   pooled pair, with its bootstrap interval: the quiet bar's measure. ``--procs N`` runs N
   processes of every contender and N in each half of the A/A pair, pools each group per
   cycle, and draws processes as well as cycles in every bootstrap resample (a
   hierarchical bootstrap): the layouts' spread is then inside the interval, not beside it.

       python benchmarks/bench_heapprof.py --alternate --workload both --contenders none,sampler,memdiag
       python benchmarks/bench_heapprof.py --alternate --procs 4 --workload both --contenders none,memdiag

   ``--dump PREFIX`` also writes every slice (JSON) for other estimators.

1. Times (the default without ``--alternate``). Each contender runs *at the same time as* its own no-profiler twin
   (two processes started together, so whatever else the shared machine does hits both
   alike), in many short rounds; the launch order alternates. The figure is the paired
   ratio per round of CPU time per operation (twin / contender: 1.00 = no cost; CPU time,
   not wall time, because on a shared machine wall time moves with what other processes
   take; the quiet service's throughput is set by its sleep anyway). Printed: the median
   over rounds, a 95 % confidence interval of that median (order statistics, no
   assumption on the distribution) and the range, with the absolute CPU microseconds per
   operation. An A/A pair (no profiler against no profiler) runs in every round: its
   spread is what the machine can resolve at that moment. For the quiet service the
   throughput itself (operations per wall second, set by its sleep) is printed beside.

       python benchmarks/bench_heapprof.py [--rounds 15] [--seconds 1.5] [--contenders none,sampler]

2. The sampler switched on and off in one process (``--inprocess``): ABBA cycles of short
   phases (on-off-off-on, then off-on-on-off), CPU time per operation per phase; the ratio
   per cycle, and an A/A ratio of each cycle's two "off" phases. Pairs adjacent in time in
   the same process resolve smaller differences than separate processes; stop() really
   unhooks (checked), but each start() begins with empty tables (the live table of a
   long-running service would be fuller: the count mode below keeps 20 MB live).

       python benchmarks/bench_heapprof.py --inprocess [--seconds 60] [--phase 0.2]

   Periodic work (the monitor's 1 s tick, the heap thread's 5 s snapshots and 10 s scans)
   is only in the figures when ``--seconds`` spans it: use 12 s or more for the memdiag
   contenders.

3. Counts (``--count``): the same operations run single-threaded, a fixed number of
   times, under cachegrind (``valgrind --tool=cachegrind --cache-sim=yes``, L1 32 KiB and
   a 1 MiB last level as this machine's L2); each contender is run with N and 2N
   operations and the difference divided by N, so start-up and imports cancel out.
   Printed per operation: instructions, L1 data misses, last-level misses and the
   KCachegrind cycle estimate (Ir + 10 x L1 misses + 100 x LL misses), with ratios to no
   profiler. Deterministic but for the sampling itself (a few dozen samples per run).

       python benchmarks/bench_heapprof.py --count [--ops 3000] [--contenders none,sampler]

   Background threads run by the clock, not by the operations: under valgrind (~50x
   slower) their instructions per operation are inflated ~50x, so count the memdiag
   contenders' application thread alone (``--count --threads``: callgrind ``--separate-threads``,
   the main thread's instructions per operation).

4. The heap thread's snapshot round on a profile of many stacks (``--snapshot``): CPU of
   the native snapshot, its conversion and the line series' update, first and next rounds.

       python benchmarks/bench_heapprof.py --snapshot [--stacks 3000]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.abspath(__file__)
CONTENDERS = ["none", "sampler", "tracemalloc-1", "tracemalloc-16", "memray"]
# The ablation (--contenders ...): memdiag as a whole at default settings and its parts.
#   memdiag          memdiag.start(), nothing changed (monitor, control channel, leak detection:
#                    allocator hooks, audit/thread/task hooks, heap thread)
#   memdiag-noheap   memdiag.start(heap_profile="off"): no allocator hooks, no heap thread
#   memdiag-noleaks  memdiag.start(leak_detection=False): the monitor and control channel only
#   audit            the resource-origin hooks alone (audit hook, threading/task wrappers)
#   audit-py         the same with the audit hook in Python (sys.addaudithook), as before _audit
ABLATION = ["memdiag", "memdiag-noheap", "memdiag-noleaks", "audit", "audit-py"]


# -- the services ----------------------------------------------------------------------------
def busy_op(n: int, keep: list[Any]) -> None:
    d = {"id": n, "user": f"user{n % 1000}", "items": [{"k": str(j), "v": j * 1.5, "t": (j, n)} for j in range(12)]}
    back = json.loads(json.dumps(d))
    keep.append(back["items"][n % 12])
    if len(keep) > 2000:
        del keep[:1000]


def quiet_op() -> None:
    d = {"path": "/api/x", "headers": {f"h{j}": "v" * 20 for j in range(10)}, "body": list(range(50))}
    json.loads(json.dumps(d))
    time.sleep(0.001)


_LOG = logging.getLogger("bench.requests")


def logged_op() -> None:
    """The quiet request, logged as services do: one record per request (logging takes
    its caller with sys._getframe, an audit event)."""
    quiet_op()
    _LOG.info("GET /api/x 200")


def _setup_log() -> None:
    _LOG.setLevel(logging.INFO)
    _LOG.propagate = False
    if not _LOG.handlers:
        _LOG.addHandler(logging.StreamHandler(open(os.devnull, "w")))  # noqa: SIM115 (process-long)


def _logged(stop: threading.Event, counter: list[int], i: int) -> None:
    _setup_log()
    while not stop.is_set():
        logged_op()
        counter[i] += 1


def _busy(stop: threading.Event, counter: list[int], i: int) -> None:
    n = 0
    keep: list[Any] = []
    while not stop.is_set():
        busy_op(n, keep)
        n += 1
        counter[i] += 1


def _quiet(stop: threading.Event, counter: list[int], i: int) -> None:
    while not stop.is_set():
        quiet_op()
        counter[i] += 1


def _start_contender(contender: str) -> Any:
    """Start the profiler `contender`; return what must be closed at the end (memray)."""
    if contender.startswith("sampler"):  # sampler@LABEL: another build, imported by PYTHONPATH
        from memdiag.leaks import heapprof

        heapprof.start()  # the defaults: 512 KiB, 32 frames
        assert heapprof.backend() == "native", heapprof.available()
    elif contender.startswith("memdiag"):
        import memdiag

        os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp()  # the history file: not the user's
        over = {"memdiag-noheap": {"heap_profile": "off"}, "memdiag-noleaks": {"leak_detection": False}}
        memdiag.start(**over.get(contender, {}))
        return memdiag
    elif contender == "audit":
        from memdiag.leaks import origins

        origins.install()
    elif contender == "audit-py":
        from memdiag.leaks import origins

        sys.addaudithook(origins._hook)  # what install() did before the C hook
        origins._wrap_thread_start()
        origins._wrap_tasks()
    elif contender.startswith("tracemalloc"):
        import tracemalloc

        tracemalloc.start(int(contender.split("-")[1]))
    elif contender == "memray":
        import memray

        tracker = memray.Tracker(os.path.join(tempfile.mkdtemp(), "memray.bin"))
        tracker.__enter__()
        return tracker
    return None


def _own_cpu_ns() -> int:
    """CPU time (ns, schedstat) of memdiag's own threads so far."""
    total = 0
    for t in threading.enumerate():
        if t.name.startswith("memdiag-") and t.native_id is not None:
            try:
                with open(f"/proc/self/task/{t.native_id}/schedstat") as fh:
                    total += int(fh.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def _close(contender: str, tracker: Any) -> None:
    if tracker is None:
        return
    if contender.startswith("memdiag"):
        tracker.stop()
    else:
        tracker.__exit__(None, None, None)


def _samples(contender: str) -> int:
    if not contender.startswith("sampler"):
        return 0
    from memdiag.leaks import heapprof

    return int(heapprof.stats().get("samples", 0))


def _start_workload(workload: str) -> tuple[threading.Event, list[int], list[threading.Thread]]:
    """The workload's threads, started: (their stop event, their operation counters, the threads)."""
    threads_n = 4 if workload == "busy" else 1
    fn = {"busy": _busy, "quiet": _quiet, "logged": _logged}[workload]
    stop = threading.Event()
    counter = [0] * threads_n
    threads = [threading.Thread(target=fn, args=(stop, counter, i), daemon=True) for i in range(threads_n)]
    for t in threads:
        t.start()
    return stop, counter, threads


def _stop_workload(stop: threading.Event, threads: list[threading.Thread]) -> None:
    stop.set()
    for t in threads:
        t.join()


def _last_json(proc: subprocess.Popen[str], what: str, timeout: float) -> Any:
    """The JSON line a child of this script prints last; stops the run if the child failed."""
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _launch(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """This script again, in a child process (``--_child``, ``--_inprocess``), output piped."""
    return subprocess.Popen([sys.executable, HERE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip


def child(workload: str, contender: str, seconds: float) -> dict[str, float]:
    """Run one workload under one contender; return its figures."""
    if contender.startswith("sampler") or contender == "none":
        from memdiag.leaks import heapprof  # noqa: F401  (both import it: same start-up)
    tracker = _start_contender(contender)
    stop, counter, threads = _start_workload(workload)
    time.sleep(1.0)  # warm-up
    s0, o0 = _samples(contender), _own_cpu_ns()
    c0, t0, p0 = sum(counter), time.perf_counter(), time.process_time()
    time.sleep(seconds)
    c1, t1, p1 = sum(counter), time.perf_counter(), time.process_time()
    s1, o1 = _samples(contender), _own_cpu_ns()
    _stop_workload(stop, threads)
    _close(contender, tracker)
    ops = c1 - c0
    return {"ops": ops, "ops_per_s": ops / (t1 - t0), "cpu_per_op_us": (p1 - p0) / max(ops, 1) * 1e6,
            "samples_per_s": (s1 - s0) / (t1 - t0), "own_cpu_share": (o1 - o0) / 1e9 / (t1 - t0)}  # fmt: skip


def inprocess(workload: str, seconds: float, phase: float) -> dict[str, list[float]]:
    """The sampler switched on and off in one process, in short phases (ABBA order).

    Each cycle is four phases, on-off-off-on or off-on-on-off; a phase's figure is the
    process CPU time per operation. Returned per cycle: off/on (1.00 = no cost) and the
    A/A ratio of the cycle's two "off" phases (what this method resolves). start() and
    stop() run between phases, outside the measured windows, and every phase starts after
    an unmeasured quarter phase (a first version without it measured the phase after a
    switch 3-4 % slower, for "off" as well as "on": start() walks its 1 MB of tables);
    stop() really unhooks (the hooks are on top here), and start() begins with empty
    tables each time.
    """
    from memdiag.leaks import heapprof

    native = heapprof._native
    stop, counter, threads = _start_workload(workload)
    heapprof.start()
    time.sleep(1.0)  # warm-up, sampler on
    heapprof.stop()
    out: dict[str, list[float]] = {"ratio": [], "aa": [], "wall": []}
    settle = phase / 4
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        order = ["on", "off", "off", "on"] if k % 2 == 0 else ["off", "on", "on", "off"]
        got: dict[str, list[tuple[int, float, float]]] = {"on": [], "off": []}
        for mode in order:
            if mode == "on":
                heapprof.start()
            else:
                heapprof.stop()
            assert bool(native.chained()) == (mode == "on"), "the hooks did not follow start/stop"
            time.sleep(settle)  # every phase, switched or not: start() walks its tables (1 MB), cooling caches
            c0, p0, t0 = sum(counter), time.process_time(), time.perf_counter()
            time.sleep(phase)
            c1, p1, t1 = sum(counter), time.process_time(), time.perf_counter()
            got[mode].append((c1 - c0, p1 - p0, t1 - t0))
        cpu = {m: sum(p for _, p, _ in v) / max(sum(c for c, _, _ in v), 1) for m, v in got.items()}
        rate = {m: sum(c for c, _, _ in v) / sum(t for _, _, t in v) for m, v in got.items()}
        out["ratio"].append(cpu["off"] / cpu["on"])
        out["wall"].append(rate["on"] / rate["off"])
        (ca, pa, _), (cb, pb, _) = got["off"]
        out["aa"].append((pa / max(ca, 1)) / (pb / max(cb, 1)))
        k += 1
    heapprof.stop()
    _stop_workload(stop, threads)
    return out


def run_inprocess(a: argparse.Namespace) -> None:
    workloads = ["busy", "quiet"] if a.workload == "both" else [a.workload]
    head = f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}"
    print(f"{head}; the sampler switched on and off in one process, ABBA cycles of {a.phase:g} s phases, "
          f"{a.seconds:g} s per workload")  # fmt: skip
    for w in workloads:
        proc = _launch("--seconds", str(a.seconds), "--phase", str(a.phase), "--_inprocess", w)
        res = _last_json(proc, w, timeout=3600)
        print(f"\n{w}: CPU per operation, off / on (wall: operations per second, on / off), per cycle: median, "
              f"95 % CI of the median, [min-max] over {len(res['ratio'])} cycles")  # fmt: skip
        rows = [("sampler", "ratio"), ("A/A (off/off)", "aa"), ("sampler, wall", "wall")]
        for name, key in rows:
            v = res[key]
            med = statistics.median(v)
            lo, hi = median_ci(v)
            print(
                f"  {name:15s} {med:.3f}  CI [{lo:.3f}-{hi:.3f}]  [{min(v):.3f}-{max(v):.3f}]  "
                f"cost {100 * (1 - med):+.1f} %"
            )


def fixed_ops(workload: str, contender: str, n: int) -> None:
    """The same work every time (for --count): 20 MB kept live, then ``n`` operations."""
    from memdiag.leaks import heapprof  # noqa: F401

    live = [bytes(100) for _ in range(150_000)]
    _setup_log()
    tracker = _start_contender(contender)
    keep: list[Any] = []
    for i in range(n):
        if workload == "busy":
            busy_op(i, keep)
        elif workload == "logged":
            logged_op()
        else:
            quiet_op()
    _close(contender, tracker)
    del live, keep


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


# -- statistics ------------------------------------------------------------------------------
def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval of the median (binomial order statistics)."""
    v = sorted(values)
    n = len(v)
    if n < 6:
        return v[0], v[-1]
    # the largest k with P(Binomial(n, 1/2) < k) <= (1 - level) / 2
    cdf, k = 0.0, 0
    while True:
        nxt = cdf + math.comb(n, k) / 2**n
        if nxt > (1 - level) / 2:
            break
        cdf, k = nxt, k + 1
    k = max(k, 1)
    return v[k - 1], v[n - k]


# -- times -----------------------------------------------------------------------------------
ALSO: dict[str, str] = {}  # "sampler@LABEL" -> the src directory of another build (--also)


def _env(contender: str) -> dict[str, str] | None:
    if contender not in ALSO:
        return None
    return {**os.environ, "PYTHONPATH": ALSO[contender]}


def _pair(workload: str, first: str, second: str, seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    procs = [_launch("--seconds", str(seconds), "--_child", workload, c, env=_env(c)) for c in (first, second)]
    res = [_last_json(p, f"{workload}/{c}", timeout=300) for c, p in zip((first, second), procs)]
    return res[0], res[1]


def run_times(a: argparse.Namespace, contenders: list[str]) -> None:
    workloads = ["busy", "quiet"] if a.workload == "both" else [a.workload]
    rivals = [c for c in contenders if c != "none"]
    rows = ["none (A/A)", *rivals]
    head = f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}"
    print(f"{head}; {a.rounds} rounds x {a.seconds:g} s, each contender side by side with its own no-profiler twin")
    for w in workloads:
        ratios: dict[str, list[float]] = {c: [] for c in rows}
        cpu: dict[str, list[float]] = {c: [] for c in rows}
        twin_cpu: list[float] = []
        wall: dict[str, list[float]] = {c: [] for c in rows}  # ops per wall second (quiet: sleep-bound)
        sps: list[float] = []
        own: dict[str, list[float]] = {c: [] for c in rows}  # memdiag's threads: CPU s per wall s
        for r in range(a.rounds):
            for c in rows:
                rival = "none" if c == "none (A/A)" else c
                if r % 2:
                    base, res = _pair(w, "none", rival, a.seconds)
                else:
                    res, base = _pair(w, rival, "none", a.seconds)
                ratios[c].append(base["cpu_per_op_us"] / res["cpu_per_op_us"])
                cpu[c].append(res["cpu_per_op_us"])
                wall[c].append(res["ops_per_s"] / base["ops_per_s"])
                twin_cpu.append(base["cpu_per_op_us"])
                if c == "sampler":
                    sps.append(res["samples_per_s"])
                own[c].append(res.get("own_cpu_share", 0.0))
        print(f"\n{w}: operations per CPU second vs the twin without profiler: median, 95 % CI of the median, "
              f"[min-max] over {a.rounds} rounds; CPU us/op (twin {statistics.median(twin_cpu):.1f})")  # fmt: skip
        for c in rows:
            v = ratios[c]
            med = statistics.median(v)
            lo, hi = median_ci(v)
            line = (f"  {c:15s} {med:.3f}  CI [{lo:.3f}-{hi:.3f}]  [{min(v):.3f}-{max(v):.3f}]  "
                    f"cost {100 * (1 - med):+.1f} %  cpu {statistics.median(cpu[c]):.1f} us/op")  # fmt: skip
            if w == "quiet":  # its throughput is set by the sleep; the twins hardly compete
                line += f"  wall ops/s {statistics.median(wall[c]):.3f}"
            if c.startswith("memdiag"):
                line += f"  memdiag threads {100 * statistics.median(own[c]):.2f} % of a core"
            print(line)
        if sps:
            print(f"  (sampler: {statistics.median(sps):.0f} samples/s)")
        _bar(w, ratios, wall)


BARS = {"busy": 0.98, "quiet": 0.99}  # issue 14: a busy service <= 2 % (per CPU), a quiet one <= 1 % (throughput)


def _bar(w: str, ratios: dict[str, list[float]], wall: dict[str, list[float]]) -> None:
    """The bar line run_all.py composes the summary of docs/benchmarks.md from: memdiag at
    defaults (else the sampler alone) against its twin, judged by the 95 % CI of the median."""
    c = next((c for c in ("memdiag", "sampler") if c in ratios), None)
    if c is None or w not in BARS:
        return
    v, bar = (wall[c] if w == "quiet" else ratios[c]), BARS[w]
    lo, hi = median_ci(v)
    result = "met" if lo >= bar else "NOT met" if hi < bar else "not shown"
    result = result if len(v) >= 6 else "not shown"  # fewer rounds: no 95 % interval of the median
    what = "memdiag at defaults" if c == "memdiag" else "the sampler alone"
    unit = "operations per wall second" if w == "quiet" else "operations per CPU second"
    print(
        f"- bar: {w} service, {what}, {unit} >= {bar:g} of its twin's: {result} "
        f"({statistics.median(v):.3f} CI [{lo:.3f}-{hi:.3f}]; A/A {statistics.median(ratios['none (A/A)']):.3f})"
    )


# -- alternating slices (--alternate) ---------------------------------------------------------
# Every contender (and a second no-profiler process, for the A/A row) is its own process, all
# started at once; then only one of them runs its workload at a time, in short slices, every
# process once per cycle in a shuffled order (seeded). The workload threads of the others wait
# on a gate, so each process's slices sit next to the others' in time and meet the same
# machine; the profiler's own threads keep their wall-clock pace. The figure per slice is the
# process CPU time per operation (every thread: the profiler's too).
_GATE_WAIT = 30.0  # seconds a child may take to park its workers


def _workload_op(workload: str) -> Any:
    """The workload's operation as a callable taking the operation's number."""
    if workload == "busy":
        keep: list[Any] = []
        return lambda n: busy_op(n, keep)
    if workload == "logged":
        _setup_log()
        return lambda n: logged_op()
    return lambda n: quiet_op()


class _Gated:
    """The workload's threads behind a gate: run while it is open, park when it closes."""

    def __init__(self, workload: str) -> None:
        self.n = 4 if workload == "busy" else 1
        self.gate = threading.Event()
        self.cond = threading.Condition()
        self.gen = 0  # + 1 at each close; a worker parks by writing it into parked[i]
        self.parked = [-1] * self.n
        self.counter = [0] * self.n
        self.quit = False
        self.threads = [threading.Thread(target=self._run, args=(workload, i), daemon=True) for i in range(self.n)]
        for t in self.threads:
            t.start()
        with self.cond:  # the gate starts closed: every worker parks at generation 0
            if not self.cond.wait_for(lambda: all(g == 0 for g in self.parked), timeout=_GATE_WAIT):
                raise SystemExit("the workers did not park")

    def _run(self, workload: str, i: int) -> None:
        op, n = _workload_op(workload), 0
        while True:
            if not self.gate.is_set():
                with self.cond:
                    self.parked[i] = self.gen
                    self.cond.notify_all()
                self.gate.wait()
                if self.quit:
                    return
            op(n)
            n += 1
            self.counter[i] += 1

    def close(self) -> None:
        """Close the (open) gate and wait until every worker is parked behind it."""
        with self.cond:
            self.gen += 1
            self.gate.clear()
            if not self.cond.wait_for(lambda: all(g == self.gen for g in self.parked), timeout=_GATE_WAIT):
                raise SystemExit("the workers did not park")


def gated_child(workload: str, contender: str, pin: int | None) -> None:
    """A child of --alternate: obey ``go`` / ``stop`` / ``quit`` lines on stdin; after each
    ``stop`` print the slice's operations, process CPU seconds and wall seconds (JSON)."""
    if pin is not None:
        os.sched_setaffinity(0, {pin})  # before any thread starts: they inherit it
    from memdiag.leaks import heapprof  # noqa: F401  (every contender imports it: same start-up)

    tracker = _start_contender(contender)
    g = _Gated(workload)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "go":
            c0, p0, t0 = sum(g.counter), time.process_time(), time.perf_counter()
            g.gate.set()
        elif cmd == "stop":
            g.close()
            c1, p1, t1 = sum(g.counter), time.process_time(), time.perf_counter()
            print(json.dumps({"ops": c1 - c0, "cpu": p1 - p0, "wall": t1 - t0, "samples": _samples(contender)}),
                  flush=True)  # fmt: skip
        elif cmd == "quit":
            break
    g.quit = True
    g.gate.set()
    _close(contender, tracker)


class _Proc:
    """One gated child, driven over its stdin/stdout."""

    def __init__(self, workload: str, contender: str, pin: int | None) -> None:
        args = ["--_gated", workload, contender] + ([] if pin is None else ["--pin", str(pin)])
        self.p = subprocess.Popen([sys.executable, HERE, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, bufsize=1, env=_env(contender))  # fmt: skip
        self.name = contender

    def _line(self) -> str:
        line = self.p.stdout.readline() if self.p.stdout else ""
        if not line:
            err = self.p.stderr.read() if self.p.stderr else ""
            raise SystemExit(f"{self.name} failed: {err[-2000:]}")
        return line

    def wait_ready(self) -> None:
        while self._line().strip() != "ready":
            pass

    def send(self, cmd: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()

    def slice(self, seconds: float) -> dict[str, float]:
        self.send("go")
        time.sleep(seconds)
        self.send("stop")
        return json.loads(self._line())

    def close(self) -> None:
        try:
            self.send("quit")
            self.p.communicate(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.p.kill()
            self.p.wait()


def _pin_cpu(choice: str) -> int | None:
    """The CPU every child runs on: ``auto`` = the last one this process may use, ``none``, or a number."""
    if choice == "none" or not hasattr(os, "sched_getaffinity"):
        return None
    if choice == "auto":
        return max(os.sched_getaffinity(0))
    return int(choice)


def alternate(workload: str, contenders: list[str], cycles: int, slice_s: float,
              pin: int | None, warmup: float, procs: int = 1) -> dict[str, list[list[dict[str, float]]]]:  # fmt: skip
    """Run the contenders' processes (``procs`` of each) in alternating slices; return, per
    contender, each of its processes' slices (indexed by cycle)."""
    import random

    names = ["none", "none (A/A)", *[c for c in contenders if c != "none"]]
    keys = [(n, j) for n in names for j in range(procs)]
    ps = [_Proc(workload, "none" if n == "none (A/A)" else n, pin) for n, _ in keys]
    try:
        for p in ps:
            p.wait_ready()
        for p in ps:  # warm-up: one long slice each, not measured
            p.slice(warmup)
        got: dict[str, list[list[dict[str, float]]]] = {n: [[] for _ in range(procs)] for n in names}
        order = list(range(len(ps)))
        for k in range(cycles):
            random.Random(k).shuffle(order)
            for i in order:
                n, j = keys[i]
                got[n][j].append(ps[i].slice(slice_s))
    finally:
        for p in ps:
            p.close()
    return got


def _us_per_op(cols: dict[str, list[float]]) -> float:
    """Median over cycles of CPU microseconds per operation."""
    return statistics.median(c / max(o, 1) for c, o in zip(cols["cpu"], cols["ops"])) * 1e6


def _boot(base: list[dict[str, list[float]]], cont: list[dict[str, list[float]]], stat: Any,
          resample_procs: bool, n: int = 2000) -> tuple[float, float]:  # fmt: skip
    """95 % percentile-bootstrap interval of ``stat(base, cont)`` (each a dict of columns
    indexed by cycle, summed over a group's processes). ``base``/``cont``: one dict of
    columns per process. Every resample draws the cycles (the same for both groups) and,
    with ``resample_procs``, each group's processes too (hierarchical: the spread between
    processes, their layouts, is then in the interval). Seeded."""
    import random

    rng = random.Random(1)
    m = len(base[0]["cpu"])
    fields = list(base[0])

    def pool(group: list[dict[str, list[float]]], idx: list[int]) -> dict[str, list[float]]:
        sel = [group[rng.randrange(len(group))] for _ in group] if resample_procs else group
        return {f: [sum(p[f][k] for p in sel) for k in idx] for f in fields}

    est = []
    for _ in range(n):
        idx = [rng.randrange(m) for _ in range(m)]
        est.append(stat(pool(base, idx), pool(cont, idx)))
    est.sort()
    return est[int(0.025 * n)], est[int(0.975 * n) - 1]


def _columns(per_proc: list[list[dict[str, float]]]) -> list[dict[str, list[float]]]:
    return [{f: [s[f] for s in slices] for f in ("cpu", "ops", "wall")} for slices in per_proc]


def _whole(group: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    return {f: [sum(v) for v in zip(*(p[f] for p in group))] for f in group[0]}


def _med_ratio(b: dict[str, list[float]], c: dict[str, list[float]]) -> float:
    """Median over cycles of (base CPU per op / contender's)."""
    return statistics.median(
        bc / max(bo, 1) / (cc / max(co, 1)) for bc, bo, cc, co in zip(b["cpu"], b["ops"], c["cpu"], c["ops"])
    )


def _tot_ratio(b: dict[str, list[float]], c: dict[str, list[float]]) -> float:
    """Ratio of the totals: base CPU per op over all cycles / contender's."""
    return (sum(b["cpu"]) / max(sum(b["ops"]), 1)) / (sum(c["cpu"]) / max(sum(c["ops"]), 1))


def _wall_ratio(b: dict[str, list[float]], c: dict[str, list[float]]) -> float:
    """Operations per wall second over all cycles: contender's / base's."""
    return (sum(c["ops"]) / sum(c["wall"])) / (sum(b["ops"]) / sum(b["wall"]))


def _groups(got: dict[str, list[list[dict[str, float]]]], name: str) -> tuple[list[Any], list[Any]]:
    """(base processes, contender processes) for a row: no profiler's processes pooled (the
    A/A row: "none" against "none (A/A)"), as columns."""
    if name == "none (A/A)":
        return _columns(got["none"]), _columns(got[name])
    return _columns(got["none"]) + _columns(got["none (A/A)"]), _columns(got[name])


def _ratio_rows(got: dict[str, list[list[dict[str, float]]]]) -> list[tuple[str, float, tuple[float, float], float,
                                                                        tuple[float, float], float]]:  # fmt: skip
    """Per contender: the median over cycles of (no profiler's CPU per op / its own) with its
    bootstrap CI, the same for the ratio of the totals (every slice's CPU over every slice's
    operations: periodic work that falls in few slices counts in full), and its CPU us/op.
    No profiler's CPU per op is its processes' pooled (each cycle: their CPU over their
    operations), so that no one process's layout sets the baseline; the A/A row is the one
    half against the other. Several processes per contender (``--procs``): a contender's
    are pooled the same way, and the interval resamples processes too."""
    resample = len(got["none"]) > 1
    rows = []
    for name in got:
        if name == "none":
            continue
        base, cont = _groups(got, name)
        b, c = _whole(base), _whole(cont)
        rows.append((name, _med_ratio(b, c), _boot(base, cont, _med_ratio, resample), _tot_ratio(b, c),
                     _boot(base, cont, _tot_ratio, resample), _us_per_op(c)))  # fmt: skip
    return rows


def _throughput_rows(got: dict[str, list[list[dict[str, float]]]]) -> list[tuple[str, float, tuple[float, float]]]:
    """Per contender: its operations per wall second over all its slices, against the
    processes without profiler pooled (the A/A row: the one half against the other), with
    a 95 % bootstrap interval over cycles (and processes, with ``--procs``). The quiet
    service's bar names throughput: its 1 ms sleep sets most of it, and what a profiler adds
    shows as wall time per operation. Totals, not per-cycle ratios: a 10 ms slice holds a
    handful of operations."""
    resample = len(got["none"]) > 1
    rows = []
    for name in got:
        if name == "none":
            continue
        base, cont = _groups(got, name)
        rows.append((name, _wall_ratio(_whole(base), _whole(cont)), _boot(base, cont, _wall_ratio, resample)))
    return rows


def run_alternate(a: argparse.Namespace, contenders: list[str]) -> None:
    workloads = ["busy", "quiet"] if a.workload == "both" else [a.workload]
    pin = _pin_cpu(a.pin)
    head = f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}"
    who = ("every contender's process and two without profiler" if a.procs == 1 else
           f"{a.procs} processes of every contender and {2 * a.procs} without profiler (the intervals resample "
           f"processes and cycles)")  # fmt: skip
    print(f"{head}; alternating slices: {who}, one running at a "
          f"time, {a.cycles} cycles of {a.slice:g} s slices in shuffled order, "
          f"{'pinned to cpu ' + str(pin) if pin is not None else 'not pinned'}")  # fmt: skip
    for w in workloads:
        got = alternate(w, contenders, a.cycles, a.slice, pin, a.warmup, a.procs)
        if a.dump:
            with open(f"{a.dump}.{w}.json", "w") as fh:
                json.dump(got, fh)
        rows = _ratio_rows(got)
        aa = next(r for r in rows if r[0] == "none (A/A)")
        base_us = _us_per_op(_whole(_columns(got["none"])))
        nb = "two" if a.procs == 1 else str(2 * a.procs)
        aa_what = "one against the other" if a.procs == 1 else "one half against the other"
        print(f"\n{w}: operations per CPU second vs the {nb} processes without profiler, pooled (none: "
              f"{base_us:.1f} us/op; A/A: {aa_what}); median of the per-cycle ratios [95 % bootstrap "
              f"CI], ratio of the totals [CI]; A/A of the same run beside each")  # fmt: skip
        for name, m, (lo, hi), t, (tlo, thi), us in rows:
            line = (f"  {name:15s} {m:.3f} [{lo:.3f}-{hi:.3f}]  totals {t:.3f} [{tlo:.3f}-{thi:.3f}]  "
                    f"cost {100 * (1 - m):+.1f} %  {us:.1f} us/op")  # fmt: skip
            if name != "none (A/A)":
                line += f"  | A/A {aa[1]:.3f} [{aa[2][0]:.3f}-{aa[2][1]:.3f}]"
            print(line)
        if w == "quiet":
            print("  (quiet: its 1 ms sleep sets its throughput; CPU per operation is what a profiler adds)")
            trows = _throughput_rows(got)
            taa = next(r for r in trows if r[0] == "none (A/A)")
            print(
                f"quiet: operations per wall second over all slices vs the {nb} processes without profiler, pooled "
                f"(A/A: {aa_what}) [95 % bootstrap CI over cycles{'' if a.procs == 1 else ' and processes'}]"
            )
            for name, t, (tlo, thi) in trows:
                line = f"  {name:15s} {t:.4f} [{tlo:.4f}-{thi:.4f}]  cost {100 * (1 - t):+.2f} %"
                if name != "none (A/A)":
                    line += f"  | A/A {taa[1]:.4f} [{taa[2][0]:.4f}-{taa[2][1]:.4f}]"
                print(line)
            _throughput_bar(trows)
        if not aa[2][0] <= 1.0 <= aa[2][1]:
            print(
                "  (the A/A interval excludes 1: the two processes without profiler differ by more than the "
                "slices resolve (layout), so every interval here understates the spread between processes)"
            )
        _alternate_bar(w, rows)


def _alternate_bar(w: str, rows: list[tuple[Any, ...]]) -> None:
    """The busy service's bar line of --alternate (the quiet bar names throughput:
    _throughput_bar): memdiag at defaults, else the sampler alone, judged by the bootstrap
    interval of the median per-cycle ratio."""
    by = {r[0]: r for r in rows}
    c = next((c for c in ("memdiag", "sampler") if c in by), None)
    if c is None or w != "busy":
        return
    _, m, (lo, hi), *_ = by[c]
    bar = BARS[w]
    aa = by["none (A/A)"]
    result = "met" if lo >= bar else "NOT met" if hi < bar else "not shown"
    if not aa[2][0] <= 1.0 <= aa[2][1]:
        result = "not shown"  # the A/A pair differs: the interval does not hold the spread between processes
    what = "memdiag at defaults" if c == "memdiag" else "the sampler alone"
    print(f"- bar: {w} service, {what}, operations per CPU second >= {bar:g} of no profiler's "
          f"(alternating slices): {result} ({m:.3f} CI [{lo:.3f}-{hi:.3f}]; "
          f"A/A {aa[1]:.3f} CI [{aa[2][0]:.3f}-{aa[2][1]:.3f}])")  # fmt: skip


def _throughput_bar(rows: list[tuple[str, float, tuple[float, float]]]) -> None:
    """The quiet service's bar line of --alternate: operations per wall second, memdiag at
    defaults (else the sampler alone), judged by the bootstrap interval of the totals."""
    by = {r[0]: r for r in rows}
    c = next((c for c in ("memdiag", "sampler") if c in by), None)
    if c is None:
        return
    _, t, (lo, hi) = by[c]
    bar = BARS["quiet"]
    _, aa, (alo, ahi) = by["none (A/A)"]
    result = "met" if lo >= bar else "NOT met" if hi < bar else "not shown"
    if not alo <= 1.0 <= ahi and abs(aa - 1.0) > 1.0 - bar:
        result = "not shown"  # the two processes without profiler differ by more than the bar
    what = "memdiag at defaults" if c == "memdiag" else "the sampler alone"
    print(f"- bar: quiet service, {what}, operations per wall second >= {bar:g} of no profiler's "
          f"(alternating slices): {result} ({t:.4f} CI [{lo:.4f}-{hi:.4f}]; "
          f"A/A {aa:.4f} CI [{alo:.4f}-{ahi:.4f}])")  # fmt: skip


# -- counts ----------------------------------------------------------------------------------
_CG_CACHES = ["--I1=32768,8,64", "--D1=32768,8,64", "--LL=1048576,8,64"]


def _cachegrind(workload: str, contender: str, n: int) -> dict[str, int]:
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=yes", "--cachegrind-out-file=/dev/null", *_CG_CACHES,
           sys.executable, HERE, "--_ops", workload, contender, str(n)]  # fmt: skip
    env = {**(_env(contender) or os.environ), "PYTHONHASHSEED": "0"}  # string hashes (dict layouts) alike in every run
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=env)
    if out.returncode != 0:
        raise SystemExit(f"cachegrind {workload}/{contender} failed: {out.stderr[-2000:]}")
    got = {}
    for key, pat in (("ir", r"I\s+refs:\s+([\d,]+)"), ("d1", r"D1\s+misses:\s+([\d,]+)"),
                     ("lli", r"LLi misses:\s+([\d,]+)"), ("lld", r"LLd misses:\s+([\d,]+)"),
                     ("i1", r"I1\s+misses:\s+([\d,]+)")):  # fmt: skip
        m = re.search(pat, out.stderr)
        if m is None:
            raise SystemExit(f"cachegrind output not understood: {out.stderr[-2000:]}")
        got[key] = int(m.group(1).replace(",", ""))
    return got


def _callgrind_main(workload: str, contender: str, n: int) -> int:
    """Instructions of the main thread (the one running the operations) under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "cg.out")
        cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={base}",
               sys.executable, HERE, "--_ops", workload, contender, str(n)]  # fmt: skip
        env = {**(_env(contender) or os.environ), "PYTHONHASHSEED": "0", "XDG_STATE_HOME": tmp}
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=env)
        if out.returncode != 0:
            raise SystemExit(f"callgrind {workload}/{contender} failed: {out.stderr[-2000:]}")
        with open(base + "-01") as fh:
            m = re.search(r"^(?:summary|totals):\s+(\d+)", fh.read(), re.M)
        if m is None:
            raise SystemExit("callgrind output not understood")
        return int(m.group(1))


def run_snapshot_cost(a: argparse.Namespace) -> None:
    """CPU of the heap thread's snapshot round (native snapshot, conversion, line series) on a
    profile of many stacks: the first round (objects built) and the next ones (reused)."""
    from memdiag.leaks import heapprof, live

    heapprof.start(4096)  # a sample every 4 KiB: every allocation below is sampled
    depth, n = 10, a.stacks
    src = "\n".join(f"def f{i}(d):\n    if d:\n        return f{i}(d - 1)\n    return bytearray(20000)\n"
                    for i in range(n))  # fmt: skip
    ns: dict[str, Any] = {}
    exec(compile(src, "/app/service.py", "exec"), ns)
    keep = [ns[f"f{i}"](depth) for i in range(n) for _ in range(2)]
    series = live.HeapSeries()
    print(f"python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}; {n} stacks of {depth + 1} frames; "
          f"CPU ms (thread time) per round: native snapshot, heapprof.snapshot (with it), series update")  # fmt: skip
    for r in range(6):
        c0 = time.thread_time()
        heapprof._native.snapshot()
        c1 = time.thread_time()
        prof = heapprof.snapshot()
        c2 = time.thread_time()
        series.add(prof, time.time() + 5 * r)
        c3 = time.thread_time()
        print(f"  round {r + 1}: native {1e3 * (c1 - c0):6.1f}  snapshot {1e3 * (c2 - c1):6.1f}  "
              f"series {1e3 * (c3 - c2):6.1f}  total {1e3 * (c3 - c1):6.1f}  ({len(prof.sites)} sites)")  # fmt: skip
    heapprof.stop()
    del keep


def run_thread_counts(a: argparse.Namespace, contenders: list[str]) -> None:
    workloads = ["busy", "quiet"] if a.workload == "both" else [a.workload]
    n = a.ops
    print(f"python {sys.version.split()[0]}; callgrind --separate-threads, the main thread (the operations) only; "
          f"per operation = (run with {2 * n} ops - run with {n}) / {n}")  # fmt: skip
    for w in workloads:
        per = {c: (_callgrind_main(w, c, 2 * n) - _callgrind_main(w, c, n)) / n for c in contenders}
        print(f"\n{w}: instructions per operation on the application's thread (ratio to none)")
        for c in contenders:
            print(f"  {c:15s} instr {per[c]:9.0f} ({per[c] / per['none']:.4f})")


def run_counts(a: argparse.Namespace, contenders: list[str]) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("--count needs valgrind (apt-get install valgrind)")
    workloads = ["busy", "quiet"] if a.workload == "both" else [a.workload]
    n = a.ops
    print(f"python {sys.version.split()[0]}; cachegrind, simulated L1 32 KiB, LL 1 MiB; per operation = "
          f"(run with {2 * n} ops - run with {n}) / {n}, single thread")  # fmt: skip
    for w in workloads:
        per: dict[str, dict[str, float]] = {}
        for c in contenders:
            small, big = _cachegrind(w, c, n), _cachegrind(w, c, 2 * n)
            d = {k: (big[k] - small[k]) / n for k in big}
            d["l1"] = d["d1"] + d["i1"]
            d["ll"] = d["lli"] + d["lld"]
            d["cest"] = d["ir"] + 10 * d["l1"] + 100 * d["ll"]
            per[c] = d
        print(f"\n{w}: per operation (ratio to none)")
        base = per["none"]
        for c in contenders:
            d = per[c]
            print(f"  {c:15s} instr {d['ir']:9.0f} ({d['ir'] / base['ir']:.4f})   L1 misses {d['l1']:7.1f} "
                  f"({d['l1'] / max(base['l1'], 1e-9):.3f})   LL misses {d['ll']:6.2f}   "
                  f"est. cycles {d['cest']:9.0f} ({d['cest'] / base['cest']:.4f})")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--seconds", type=float, default=1.5)
    p.add_argument("--workload", choices=["busy", "quiet", "logged", "both"], default="both")
    p.add_argument(
        "--contenders", default=",".join(CONTENDERS), help="comma-separated subset of " + ",".join(CONTENDERS)
    )
    p.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="LABEL=SRC",
        help="also run the sampler of another build (its src directory), as contender sampler@LABEL",
    )
    p.add_argument("--count", action="store_true", help="instruction and cache-miss counts under cachegrind")
    p.add_argument("--snapshot", action="store_true", help="CPU of the heap thread's snapshot round, many stacks")
    p.add_argument("--stacks", type=int, default=3000, help="--snapshot: distinct stacks")
    p.add_argument("--threads", action="store_true", help="--count: the main thread's instructions only (callgrind)")
    p.add_argument("--ops", type=int, default=3000, help="--count: operations in the shorter run")
    p.add_argument("--alternate", action="store_true", help="alternating slices of every contender's process")
    p.add_argument("--cycles", type=int, default=1000, help="--alternate: cycles (each process once per cycle)")
    p.add_argument("--slice", type=float, default=0.01, help="--alternate: seconds per slice")
    p.add_argument("--warmup", type=float, default=1.0, help="--alternate: seconds of unmeasured first slice")
    p.add_argument(
        "--procs", type=int, default=1, help="--alternate: processes per contender (and per half of the A/A pair)"
    )
    p.add_argument("--pin", default="auto", help="--alternate: cpu for every child (auto: the last; none)")
    p.add_argument("--dump", metavar="PREFIX", help="--alternate: also write every slice to PREFIX.WORKLOAD.json")
    p.add_argument("--_gated", nargs=2, metavar=("WORKLOAD", "CONTENDER"), help=argparse.SUPPRESS)
    p.add_argument("--inprocess", action="store_true", help="switch the sampler on and off in one process (ABBA)")
    p.add_argument("--phase", type=float, default=0.1, help="--inprocess: seconds per phase")
    p.add_argument("--_inprocess", metavar="WORKLOAD", help=argparse.SUPPRESS)
    p.add_argument("--_child", nargs=2, metavar=("WORKLOAD", "CONTENDER"), help=argparse.SUPPRESS)
    p.add_argument("--_ops", nargs=3, metavar=("WORKLOAD", "CONTENDER", "N"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._ops:
        fixed_ops(a._ops[0], a._ops[1], int(a._ops[2]))
        return
    if a._child:
        print(json.dumps(child(a._child[0], a._child[1], a.seconds)))
        return
    if a.procs < 1:
        raise SystemExit("--procs must be at least 1")
    if a._gated:
        gated_child(a._gated[0], a._gated[1], None if a.pin in ("auto", "none") else int(a.pin))
        return
    if a._inprocess:
        print(json.dumps(inprocess(a._inprocess, a.seconds, a.phase)))
        return
    if a.inprocess:
        run_inprocess(a)
        return
    wanted = [c.strip() for c in a.contenders.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in CONTENDERS + ABLATION]
    if unknown:
        raise SystemExit(f"unknown contenders {unknown}; choose from {CONTENDERS + ABLATION}")
    if "none" not in wanted:
        wanted.insert(0, "none")
    contenders = [c for c in wanted if _available(c)]
    for spec in a.also:
        label, _, src = spec.partition("=")
        ALSO[f"sampler@{label}"] = os.path.abspath(src)
        contenders.append(f"sampler@{label}")
    skipped = [c for c in wanted if c not in contenders]
    if skipped:
        print(f"not available here: {', '.join(skipped)}")
    if a.snapshot:
        run_snapshot_cost(a)
    elif a.count and a.threads:
        run_thread_counts(a, contenders)
    elif a.count:
        run_counts(a, contenders)
    elif a.alternate:
        run_alternate(a, contenders)
    else:
        run_times(a, contenders)


if __name__ == "__main__":
    main()
