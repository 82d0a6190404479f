"""Leak detection scenarios and overhead, at default settings (``--quick``: shortened).

Scenarios, each in a fresh child process:

* ``detect``: a service with steady churn (short-lived request objects and a Zipf-keyed
  LRU cache that warms up over a couple of minutes, then turns over) plus one site
  leaking 1 MB/min. Measures when that site (file and line) becomes the top suspect.
  Bar: within 5 minutes.
* ``plateau``: the same service without the leak, for 10 minutes. Bar: no memory suspect.
* ``overhead``: an allocation-heavy loop (plus the 1 MB/min leak, so automatic tracing
  windows really run) for 10 minutes, three ways, in interleaved rounds: no memdiag
  (baseline), ``memdiag.start()`` with defaults, and tracemalloc left on by hand
  (``nframes=1``, what a user would do instead). Throughput ratios vs the baseline,
  peak RSS of each, and the tracing window's own RSS-based peak. Bar: <= 3 % slowdown.

Usage::

    python benchmarks/bench_leaks.py                 # everything, full length (~45 min)
    python benchmarks/bench_leaks.py --quick         # shortened (~20 min)
    python benchmarks/bench_leaks.py detect --quick  # one scenario

``--quick`` keeps the default settings (the service's warm-up cannot be sped up
without changing it) and shortens what can be: the plateau run to 5 minutes and the
overhead runs to 2 rounds of 2 minutes (where at most one tracing window fits).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.abspath(__file__)
LEAK_BYTES_PER_MIN = 1024 * 1024
with open(HERE, encoding="utf-8") as _fh:
    SOURCE = _fh.read().splitlines()


# -- the service -------------------------------------------------------------------------


class Zipf:
    """Zipf(1.0) keys over ``n`` items (inverse CDF by bisection)."""

    def __init__(self, n: int, seed: int = 7) -> None:
        weights = [1.0 / (k + 1) for k in range(n)]
        total = sum(weights)
        acc = 0.0
        self.cdf = []
        for w in weights:
            acc += w / total
            self.cdf.append(acc)
        self.rng = random.Random(seed)

    def __call__(self) -> int:
        return bisect.bisect_left(self.cdf, self.rng.random())


_LEAKED: list[bytes] = []


def leak_forever(stop: threading.Event, bytes_per_min: float) -> None:
    """The leak: 1 KiB records kept forever in a module-level list."""
    period = 1024 * 60.0 / bytes_per_min
    nxt = time.monotonic()
    while not stop.is_set():
        _LEAKED.append(bytes(1024))  # LEAK-SITE
        nxt += period
        stop.wait(max(0.0, nxt - time.monotonic()))


def serve(stop: threading.Event, rate: float, counter: list[int], key_space: int = 100_000) -> None:
    """Request handling at ``rate`` req/s: temporary objects, an LRU cache that warms up."""
    keys = Zipf(key_space)
    cache: collections.OrderedDict[int, bytes] = collections.OrderedDict()
    capacity = key_space // 10
    nxt = time.monotonic()
    while not stop.is_set():
        k = keys()
        body = cache.get(k)
        if body is None:
            body = os.urandom(64) * 20  # ~1.3 KB value
            cache[k] = body
            if len(cache) > capacity:
                cache.popitem(last=False)
        else:
            cache.move_to_end(k)
        request = {
            "id": counter[0],
            "headers": {f"h{i}": "x" * 20 for i in range(20)},
            "rows": [[j] * 8 for j in range(50)],
        }
        _ = json.dumps(request)
        counter[0] += 1
        nxt += 1.0 / rate
        delay = nxt - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        elif delay < -1.0:
            nxt = time.monotonic()


def hot_loop(stop: threading.Event, counter: list[int]) -> None:
    """Allocation-heavy work as fast as it goes: many small dicts, lists and strings."""
    while not stop.is_set():
        for _ in range(200):
            d = {"a": [1, 2, 3], "b": str(counter[0]), "c": (counter[0], "x")}
            _ = [d, dict(d), list(d)]
        counter[0] += 1


def child(args: argparse.Namespace) -> None:
    """One run in this (child) process; prints a JSON line."""
    import memdiag
    from memdiag import leaks
    from memdiag.probes.process import read_statm_rss

    overrides = json.loads(args.config or "{}")
    diag = None
    if args.mode == "tracemalloc":
        import tracemalloc

        tracemalloc.start(1)
    elif args.mode == "memdiag":
        diag = memdiag.start(**overrides)
    stop = threading.Event()
    counter = [0]
    threads = []
    if args.leak:
        threads.append(threading.Thread(target=leak_forever, args=(stop, LEAK_BYTES_PER_MIN), daemon=True))
    if args.workload == "service":
        threads.append(threading.Thread(target=serve, args=(stop, args.rate, counter), daemon=True))
    else:
        threads.append(threading.Thread(target=hot_loop, args=(stop, counter), daemon=True))
    leak_line = next(n for n, text in enumerate(SOURCE, 1) if "# LEAK-SITE" in text and "next(" not in text)
    t0 = time.monotonic()
    for t in threads:
        t.start()
    detected_at = None
    first_memory_suspect = None
    memory_suspects: list[dict[str, Any]] = []
    rss_peak = 0
    ops_at_start = 0
    ops_t0 = time.monotonic()
    cpu0 = time.process_time()
    warm = min(30.0, args.seconds / 10)  # throughput counted after a short warm-up
    while True:
        now = time.monotonic() - t0
        if now >= args.seconds:
            break
        time.sleep(min(1.0, args.seconds - now))
        rss_peak = max(rss_peak, read_statm_rss() or 0)
        if ops_at_start == 0 and now >= warm:
            ops_at_start = counter[0]
            ops_t0 = time.monotonic()
            cpu0 = time.process_time()  # all threads: memdiag's monitor and windows count against it
        if diag is not None:
            report = leaks.leaks_report(diag)
            mem = [s for s in report["suspects"] if s["kind"] in ("python_objects", "native")]
            if mem and first_memory_suspect is None:
                first_memory_suspect = round(time.monotonic() - t0, 1)
            for s in mem:
                if not any(m["id"] == s["id"] and m["file"] == s["file"] for m in memory_suspects):
                    memory_suspects.append(
                        {
                            "t": round(time.monotonic() - t0, 1),
                            "id": s["id"],
                            "kind": s["kind"],
                            "file": s["file"],
                            "line": s["line"],
                            "confidence": s["confidence"],
                        }
                    )
            top = report["suspects"][0] if report["suspects"] else None
            if detected_at is None and top and top["file"] == HERE and top["line"] == leak_line:
                detected_at = round(time.monotonic() - t0, 1)
    ops = counter[0] - ops_at_start
    elapsed = time.monotonic() - ops_t0
    cpu = time.process_time() - cpu0
    stop.set()
    out: dict[str, Any] = {
        "mode": args.mode,
        "seconds": args.seconds,
        "ops_per_second": ops / elapsed if elapsed > 0 else None,
        # Work per CPU second of the whole process: robust to other load on a shared host.
        "ops_per_cpu_second": ops / cpu if cpu > 0 else None,
        "rss_peak_bytes": rss_peak,
        "detected_at": detected_at,
        "first_memory_suspect_at": first_memory_suspect,
        "memory_suspects": memory_suspects[:10],
    }
    if diag is not None:
        report = leaks.leaks_report(diag)
        tr = report["tracing"]
        out["windows_run"] = tr["windows_run"]
        out["budget_used_seconds"] = tr["budget"]["used_seconds"]
        out["last_window"] = tr["last"]
        out["top_suspect"] = report["suspects"][0] if report["suspects"] else None
        out["check_seconds_median"] = report["overhead"]["check_seconds_median"]
        out["monitor_cpu_percent"] = diag.overhead()["monitor_cpu_percent"]
        memdiag.stop()
    print(json.dumps(out, default=str))


def start_child(
    mode: str, seconds: float, *, leak: bool, workload: str, config: dict[str, Any], rate: float = 200.0
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMDIAG_")}
    env["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="bench-leaks-")  # no user config file
    cmd = [
        sys.executable,
        HERE,
        "_child",
        "--mode",
        mode,
        "--seconds",
        str(seconds),
        "--workload",
        workload,
        "--rate",
        str(rate),
        "--config",
        json.dumps(config),
    ]
    if leak:
        cmd.append("--leak")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish_child(proc: subprocess.Popen[str], seconds: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=seconds * 3 + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def run_child(
    mode: str, seconds: float, *, leak: bool, workload: str, config: dict[str, Any], rate: float = 200.0
) -> dict[str, Any]:
    proc = start_child(mode, seconds, leak=leak, workload=workload, config=config, rate=rate)
    return finish_child(proc, seconds)


# -- scenarios ---------------------------------------------------------------------------


def scenario_detect(quick: bool) -> dict[str, Any]:
    seconds = 300.0
    r = run_child("memdiag", seconds, leak=True, workload="service", config={})
    ok = r["detected_at"] is not None
    print(
        f"detect: leak site top suspect after {r['detected_at']} s (bar: <= {seconds:.0f} s) -> "
        f"{'PASS' if ok else 'FAIL'}"
    )
    print(
        f"        first memory suspect at {r['first_memory_suspect_at']} s; windows run: {r.get('windows_run')}; "
        f"top: {(r.get('top_suspect') or {}).get('kind')} {(r.get('top_suspect') or {}).get('line')}"
    )
    print(f"- bar: a 1 MiB/min leak the top suspect within {seconds:.0f} s: {'met' if ok else 'NOT met'} "
          f"({r['detected_at']} s)")
    return {"scenario": "detect", "quick": quick, "bar_seconds": seconds, "pass": ok, **r}


def scenario_plateau(quick: bool) -> dict[str, Any]:
    seconds = 300.0 if quick else 600.0
    r = run_child("memdiag", seconds, leak=False, workload="service", config={})
    ok = not r["memory_suspects"]
    print(
        f"plateau: memory suspects in {seconds:.0f} s: {len(r['memory_suspects'])} -> {'PASS' if ok else 'FAIL'} "
        f"(RSS peak {r['rss_peak_bytes'] / 2**20:.1f} MiB; windows run: {r.get('windows_run')})"
    )
    for s in r["memory_suspects"]:
        print(f"         {s}")
    print(f"- bar: no memory suspect in {seconds:.0f} s with a plateauing cache: {'met' if ok else 'NOT met'} "
          f"({len(r['memory_suspects'])} suspects)")
    return {"scenario": "plateau", "quick": quick, "pass": ok, **r}


def scenario_overhead(quick: bool, rounds: int | None, concurrent: bool = False) -> dict[str, Any]:
    seconds = 120.0 if quick else 600.0
    rounds = rounds or (2 if quick else 1)
    cfg: dict[str, Any] = {}
    modes = ["baseline", "memdiag", "tracemalloc"]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}

    def show(i: int, m: str) -> None:
        r = runs[m][-1]
        print(
            f"  round {i + 1} {m:<11} {r['ops_per_second']:.1f} ops/s, "
            f"{r.get('ops_per_cpu_second') or 0:.1f} ops/CPU-s, RSS peak {r['rss_peak_bytes'] / 2**20:.1f} MiB"
            + (f", windows {r['windows_run']}" if m == "memdiag" else "")
        )

    # --concurrent: a profiler and a baseline at the same time, one pair after the other, so
    # that they share whatever else loads the host. Pairs, not all three at once: three
    # CPU-bound processes on two CPUs made ops/s the scheduler's share of each (the memdiag
    # process once got 2.9 % less CPU than the baseline while its threads used 0.3 %).
    base_of = {"memdiag": "baseline", "tracemalloc": "baseline (tracemalloc's)" if concurrent else "baseline"}
    runs.setdefault(base_of["tracemalloc"], [])
    for i in range(rounds):
        order = modes if i % 2 == 0 else modes[::-1]  # interleaved, alternating order
        if concurrent:
            for peer in ("memdiag", "tracemalloc"):
                base_name = base_of[peer]
                pair = [("baseline", base_name), (peer, peer)]
                procs = {name: start_child(m, seconds, leak=True, workload="hot", config=cfg) for m, name in pair}
                for _m, name in pair:
                    runs[name].append(finish_child(procs[name], seconds))
                    show(i, name)
            continue
        for m in order:
            runs[m].append(run_child(m, seconds, leak=True, workload="hot", config=cfg))
            show(i, m)
    med = {m: statistics.median(r["ops_per_second"] for r in rs) for m, rs in runs.items()}
    slow = {m: 1.0 - med[m] / med[base_of.get(m, m)] for m in modes}
    cpu_med = {m: statistics.median(r.get("ops_per_cpu_second") or 0.0 for r in rs) for m, rs in runs.items()}
    cpu_slow = {m: 1.0 - cpu_med[m] / cpu_med[base_of.get(m, m)] if cpu_med[base_of.get(m, m)] else None
                for m in modes}  # fmt: skip
    rss = {m: statistics.median(r["rss_peak_bytes"] for r in runs[m]) for m in modes}
    win = [r["last_window"] for r in runs["memdiag"] if r.get("last_window")]
    print(
        f"overhead ({seconds:.0f} s runs, {rounds} round(s), medians): memdiag slowdown {100 * slow['memdiag']:.2f} % "
        f"(bar <= 3 %: {'PASS' if slow['memdiag'] <= 0.03 else 'FAIL'}), "
        f"tracemalloc on {100 * slow['tracemalloc']:.1f} %"
    )
    print(f"- bar: slowdown with automatic tracing windows <= 3 %: {'met' if slow['memdiag'] <= 0.03 else 'NOT met'} "
          f"({100 * slow['memdiag']:.2f} % fewer ops/s over {rounds} round(s) of {seconds:.0f} s; "
          f"tracemalloc left on {100 * slow['tracemalloc']:.1f} %)")
    if cpu_slow["memdiag"] is not None:
        print(
            f"  per CPU second (robust to other load): memdiag {100 * cpu_slow['memdiag']:.2f} % less work, "
            f"tracemalloc on {100 * (cpu_slow['tracemalloc'] or 0):.1f} % less"
        )
    print(
        f"  windows run per memdiag run: {[r.get('windows_run') for r in runs['memdiag']]}, "
        f"budget used: {[r.get('budget_used_seconds') for r in runs['memdiag']]} s"
    )
    print(
        f"  peak RSS: baseline {rss['baseline'] / 2**20:.1f} MiB, memdiag {rss['memdiag'] / 2**20:.1f} MiB, "
        f"tracemalloc {rss['tracemalloc'] / 2**20:.1f} MiB"
    )
    for w in win:
        m = w["memory"]
        print(
            f"  window {w['id']} ({w['seconds']} s): extra RSS peak {m['extra_rss_peak_bytes'] / 2**20:.2f} MiB "
            f"(tracemalloc's own figure {m['tracemalloc_peak_bytes'] / 2**20:.2f} MiB), "
            f"snapshots {w['snapshot_seconds']} s, "
            f"analysis {w['analysis_seconds']} s"
        )
    return {
        "scenario": "overhead",
        "quick": quick,
        "seconds": seconds,
        "rounds": rounds,
        "median_ops_per_second": med,
        "slowdown": slow,
        "median_ops_per_cpu_second": cpu_med,
        "cpu_slowdown": cpu_slow,
        "concurrent": concurrent,
        "rss_peak_median_bytes": rss,
        "pass": slow["memdiag"] <= 0.03,
        "runs": runs,
    }


# -- scenarios by leak kind (each a realistic service plus one leak, or a steady twin) -----

MEMDIAG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__import__("memdiag").__file__))) + os.sep + "memdiag"
MEMORY_KINDS = {"py_objects": "python_objects", "dict_fresh_keys": "python_objects", "native_malloc": "native"}
COUNT_KINDS = {"fds": "fds", "sockets": "fds", "threads": "threads", "tasks": "asyncio_tasks", "children": "child_processes"}
TWINS = ("twin_transients", "twin_warmup", "twin_steps")
_KEEP: list[Any] = []
_SESSIONS: dict[str, bytes] = {}


def _every(stop: threading.Event, period: float, fn: Any) -> None:
    nxt = time.monotonic()
    while not stop.is_set():
        fn()
        nxt += period
        stop.wait(max(0.0, nxt - time.monotonic()))


def leak_py() -> None:
    _KEEP.append(bytes(1024))  # KIND-py_objects


def leak_dict() -> None:
    key = f"session:{random.getrandbits(64):016x}:{time.time():.6f}"
    _SESSIONS[key] = bytes(960)  # KIND-dict_fresh_keys


def leak_native() -> None:
    import ctypes

    _KEEP.append(ctypes.CDLL(None).malloc(1024))  # KIND-native_malloc


def leak_fd() -> None:
    _KEEP.append(open(os.devnull, "rb"))  # KIND-fds


def leak_socket() -> None:
    import socket

    _KEEP.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))  # KIND-sockets


def leak_thread(stop: threading.Event) -> None:
    threading.Thread(target=stop.wait, daemon=True).start()  # KIND-threads


def leak_child() -> None:
    _KEEP.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # KIND-children


def transients(stop: threading.Event) -> None:
    """100 MB of objects every 20-30 s, freed after a few seconds."""
    rng = random.Random(3)
    while not stop.wait(rng.uniform(20.0, 30.0)):
        batch = [bytes(1024 * 1024) for _ in range(100)]
        stop.wait(3.0)
        del batch


def warmup_cache(stop: threading.Event) -> None:
    """A memo over 30k keys drawn at random, 400 lookups a second: it fills ever more
    slowly (63 % after 75 s, 95 % after 4 min; ~12 MB) and levels off."""
    cache: dict[int, bytes] = {}
    rng = random.Random(5)
    while not stop.wait(0.05):
        for _ in range(20):
            k = rng.randrange(30_000)
            if k not in cache:
                cache[k] = bytes(300)


def steps(stop: threading.Event) -> None:
    """The heap grows in three 30 MB steps (loading data), then stays flat."""
    held = []
    for _ in range(3):
        if stop.wait(20.0):
            return
        held.append([bytes(1024) for _ in range(30 * 1024)])
    stop.wait()


def _names_the_leak(kind: str, suspect: dict[str, Any], line: int) -> bool:
    """The suspect is this scenario's leak: its line, or for ``native_malloc`` without the
    preload shim (no line can be named inside ``memdiag.start()``) a line-less ``native``
    verdict that says the shim would name it."""
    if suspect["file"] == HERE and suspect["line"] == line:
        return True
    return (kind == "native_malloc" and suspect["kind"] == "native" and suspect["file"] is None
            and "memdiag run" in str(suspect.get("suggestion")))


def kind_child(args: argparse.Namespace) -> None:
    """One kind scenario in this process; prints a JSON line."""
    import memdiag
    from memdiag import leaks

    kind = args.kind
    overrides = json.loads(args.config or "{}")
    diag = memdiag.start(**overrides)
    stop = threading.Event()
    counter = [0]
    threads = [threading.Thread(target=serve, args=(stop, args.rate, counter, args.keys), daemon=True)]
    truth = None
    every = 60.0 / 1024  # memory kinds: 1024 blocks of ~1 KiB a minute
    if kind == "py_objects":
        fn: Any = leak_py
        truth = 1024 * (sys.getsizeof(bytes(1024)) + 8)
    elif kind == "dict_fresh_keys":
        fn = leak_dict
        truth = 1024 * (sys.getsizeof("session:%016x:%.6f" % (1, 1.0e9)) + sys.getsizeof(bytes(960)))
    elif kind == "native_malloc":
        fn = leak_native
        truth = 1024 * 1040  # 1024 bytes and malloc's 16-byte header
    else:
        every = 20.0  # count kinds: 3 a minute
        truth = 3.0
        fn = {"fds": leak_fd, "sockets": leak_socket, "children": leak_child}.get(kind)
        if kind == "threads":
            fn = lambda: leak_thread(stop)  # noqa: E731
    if kind == "tasks":
        import asyncio

        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()

        async def forever() -> None:
            await asyncio.sleep(3600)

        def leak_task() -> None:
            async def make() -> None:
                asyncio.get_running_loop().create_task(forever())  # KIND-tasks

            asyncio.run_coroutine_threadsafe(make(), loop)

        fn = leak_task
    if kind == "twin_transients":
        threads.append(threading.Thread(target=transients, args=(stop,), daemon=True))
    elif kind == "twin_warmup":
        threads.append(threading.Thread(target=warmup_cache, args=(stop,), daemon=True))
    elif kind == "twin_steps":
        threads.append(threading.Thread(target=steps, args=(stop,), daemon=True))
    elif fn is not None:
        threads.append(threading.Thread(target=_every, args=(stop, every, fn), daemon=True))
    line = next((n for n, text in enumerate(SOURCE, 1) if f"# KIND-{kind}" in text and "f\"" not in text), None)
    t0 = time.monotonic()
    for t in threads:
        t.start()
    top_at = None
    top: dict[str, Any] | None = None
    seen: list[dict[str, Any]] = []
    own_listed: list[str] = []
    while time.monotonic() - t0 < args.seconds:
        time.sleep(2.0)
        r = leaks.leaks_report(diag)
        for s in r["suspects"]:
            if not any(x["id"] == s["id"] for x in seen):
                seen.append({k: s.get(k) for k in ("id", "kind", "file", "line", "growth_bytes_per_min", "growth_per_min", "confidence", "classified_by")}
                            | {"rate_from": (s.get("evidence") or {}).get("rate_from"), "t": round(time.monotonic() - t0, 1)})
            if str(s.get("file") or "").startswith(MEMDIAG_DIR) or any(
                str(f).startswith(MEMDIAG_DIR) for f in (s.get("traceback") or [])
            ):
                own_listed.append(s["id"])
        for site in r.get("top_live_sites") or []:
            if str(site["file"]).startswith(MEMDIAG_DIR):
                own_listed.append(f"live:{site['file']}:{site['line']}")
        first = r["suspects"][0] if r["suspects"] else None
        if first and line is not None and _names_the_leak(kind, first, line):
            if top_at is None:
                top_at = round(time.monotonic() - t0, 1)
            top = first
    stop.set()
    r = leaks.leaks_report(diag)
    print(
        json.dumps(
            {
                "kind": kind,
                "line": line,
                "truth": truth,
                "top_at": top_at,
                "top": top,
                "suspects": seen[:10],
                "own_listed": sorted(set(own_listed))[:10],
                "heap": r.get("live_heap"),
                "resources": r.get("resources"),
                # tracing windows run in the service: none opens on its own with the heap profile
                "windows_run": (r.get("tracing") or {}).get("windows_run"),
            },
            default=str,
        )
    )
    memdiag.stop()
    for p in _KEEP:
        if isinstance(p, subprocess.Popen):
            p.kill()
            p.wait()
    sys.stdout.flush()
    os._exit(0)  # the leaked threads and tasks go with the process


def scenario_kinds(quick: bool, heap_profile: str, only: str | None, rate: float = 200.0) -> list[dict[str, Any]]:
    """Every kind and twin, a few at a time in parallel; prints the table."""
    kinds = [*MEMORY_KINDS, *COUNT_KINDS, *TWINS]
    if only:
        kinds = [k for k in kinds if k in only.split(",")]
    results = []
    pending = list(kinds)
    running: list[tuple[str, subprocess.Popen[str], float]] = []
    while pending or running:
        while pending and len(running) < 3:
            k = pending.pop(0)
            secs = (180.0 if quick else 600.0) if k in TWINS else 150.0
            env = {kk: v for kk, v in os.environ.items() if not kk.startswith("MEMDIAG_")}
            env["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="bench-leaks-")
            cfg = json.dumps({"heap_profile": heap_profile})
            cmd = [sys.executable, HERE, "_kind", "--kind", k, "--seconds", str(secs), "--config", cfg, "--rate", str(rate)]
            running.append((k, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), secs))
        k, proc, secs = running.pop(0)
        out, err = proc.communicate(timeout=secs * 3 + 120)
        try:
            results.append(json.loads(out.strip().splitlines()[-1]))
        except (IndexError, ValueError):
            results.append({"kind": k, "error": err[-1500:]})
        print(f"  done {k}: {json.dumps(results[-1], default=str)[:1500]}", file=sys.stderr, flush=True)  # progress
    print(f"{'scenario':<17} {'top at':>7} {'bar':>5} {'kind':<16} {'rate':>12} {'truth':>12} {'err':>6} own  win verdict")
    for r in results:
        k = r["kind"]
        if "error" in r:
            print(f"{k:<17} ERROR {r['error'][-300:]}")
            continue
        own = "yes" if r["own_listed"] else "no"
        own = f"{own:<4} {r.get('windows_run', '-')!s:>3}"  # tracing windows the service ran
        if k in TWINS:
            ok = not r["suspects"] and not r["own_listed"]
            print(f"{k:<17} {'-':>7} {'-':>5} {'-':<16} {'-':>12} {'-':>12} {'-':>6} {own} "
                  f"{'PASS' if ok else 'FAIL'} ({len(r['suspects'])} suspect(s): {[s['id'] for s in r['suspects']][:3]})")
            r["pass"] = ok
            continue
        bar = 90.0 if k in MEMORY_KINDS else 120.0
        want = MEMORY_KINDS.get(k) or COUNT_KINDS.get(k)
        top = r.get("top") or {}
        rate = top.get("growth_bytes_per_min") if k in MEMORY_KINDS else top.get("growth_per_min")
        err = (rate - r["truth"]) / r["truth"] if rate and r["truth"] else None
        ok = (r["top_at"] is not None and r["top_at"] <= bar and top.get("kind") == want
              and err is not None and abs(err) <= 0.25 and not r["own_listed"])
        r["pass"] = ok
        print(f"{k:<17} {str(r['top_at']):>7} {bar:>5.0f} {str(top.get('kind')):<16} {str(rate):>12} "
              f"{r['truth']:>12.1f} {('%+.0f%%' % (100 * err)) if err is not None else '-':>6} {own} "
              f"{'PASS' if ok else 'FAIL'}" + ("" if r["top_at"] else f" (suspects: {[s['id'] for s in r['suspects']][:3]})"))
    _kind_bars(results)
    return results


def _kind_bars(results: list[dict[str, Any]]) -> None:
    """The bar lines run_all.py composes the summary of docs/benchmarks.md from (issue 14)."""
    print()
    leaks, twins = [r for r in results if r["kind"] not in TWINS], [r for r in results if r["kind"] in TWINS]
    for label, rs in (
        ("every leak kind named with its kind and rate within its time bar", leaks),
        ("no suspect in a leak-free twin", twins),
    ):
        if rs:
            failed = [r["kind"] for r in rs if not r.get("pass")]
            print(f"- bar: {label}: {'met' if not failed else 'NOT met'} ({len(rs) - len(failed)} of {len(rs)} passed"
                  + (f"; failed: {', '.join(failed)})" if failed else ")"))



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", nargs="?", default="all", choices=["all", "detect", "plateau", "overhead", "kinds", "_child", "_kind"])
    p.add_argument("--quick", action="store_true", help="shorter plateau and overhead runs (default settings)")
    p.add_argument("--rounds", type=int, default=None, help="overhead rounds (default: 1 full, 2 quick)")
    p.add_argument("--concurrent", action="store_true", help="overhead: each profiler beside its own baseline")
    p.add_argument("--json", metavar="FILE", help="also write the results here")
    # child options
    p.add_argument("--mode", default="memdiag", choices=["baseline", "memdiag", "tracemalloc"])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--workload", default="service", choices=["service", "hot"])
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--keys", type=int, default=100_000, help="kinds: the service's cache key space (capacity a tenth)")
    p.add_argument("--leak", action="store_true")
    p.add_argument("--config", default="{}")
    p.add_argument("--kind", default="py_objects")
    p.add_argument("--only", default=None, help="kinds: comma-separated scenario names")
    p.add_argument("--heap-profile", default="auto", choices=["auto", "on", "off"])
    args = p.parse_args()
    if args.scenario == "_child":
        child(args)
        return
    if args.scenario == "_kind":
        kind_child(args)
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, quick={args.quick}")
    results = []
    if args.scenario in ("all", "detect"):
        results.append(scenario_detect(args.quick))
    if args.scenario in ("all", "plateau"):
        results.append(scenario_plateau(args.quick))
    if args.scenario in ("all", "kinds"):
        results.extend(scenario_kinds(args.quick, args.heap_profile, args.only, args.rate))
    if args.scenario in ("all", "overhead"):
        results.append(scenario_overhead(args.quick, args.rounds, args.concurrent))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
