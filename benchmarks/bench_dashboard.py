"""What an open dashboard costs the service it watches, and how fast the page shows data.

A service process runs memdiag's standalone API (``memdiag.start(http=...)``) with
``--children`` sleeping children, a full history ring, and a monitor sampling every
0.2 s. This process plays the browser's poll loop over real HTTP on loopback and measures
the *service's* CPU time (``/proc/<pid>/stat`` utime+stime, 10 ms ticks, so summed over
a round) per cycle, in interleaved rounds. A cycle is the request(s) then a 0.25 s
pause, so every cycle sees a new sample, as a refresh every 2 s does (nothing cached
from the previous one helps). Methods:

* ``idle``: the pause alone: what the monitor itself costs meanwhile (subtracted);
* ``dashboard``: one refresh of the page (``GET diagnostics`` + incremental
  ``GET history?last=N&columns=...``; every 5th cycle also ``GET leaks``, as the page
  asks for leaks every 10 s);
* ``status``: ``GET /api/memory/status``, the cheapest poll;
* ``metrics``: ``GET /metrics``, what a Prometheus scrape costs (the usual alternative:
  Prometheus + Grafana scraping the service).

It also reports the page's weight, the bytes one refresh moves, the cost of loading a
full ring of history (range "all"), and, if Chromium and Playwright are installed, the
median time from navigation to the first drawn chart in headless Chromium.

Run:  python benchmarks/bench_dashboard.py [--rounds 10 --cycles 16 --children 20]
      python benchmarks/bench_dashboard.py --trends   (the cost of trends() alone)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

from memdiag.dashboard import dashboard_url, page_html

TOKEN = "bench-dashboard-token-0123456789"
PAUSE = 0.25  # seconds after each cycle: longer than the service's sample interval
# The columns the page asks for.
COLUMNS = (
    "rss,cgroup_working_set,cgroup_limit,system_used_ratio,psi_some_avg10,psi_full_avg10,"
    "heap_blocks,children,children_rss,zombies,cache_bytes,level"
)

SERVICE = """
import subprocess, sys, time, memdiag
n = int(sys.argv[2])
kids = [subprocess.Popen(["sleep", "600"]) for _ in range(n)]
diag = memdiag.start(api_token=sys.argv[1], sample_interval=0.2, http="127.0.0.1:0")
for _ in range(diag.history.capacity):   # a full ring, as after an hour of running
    diag.tick(profile=False)
print(diag.http_server.url, flush=True)
try:
    time.sleep(3600)
finally:
    for k in kids:
        k.kill()
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Client:
    def __init__(self, url: str) -> None:
        self.url = url
        self.bytes = 0

    def get(self, path: str) -> dict:
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
        self.bytes += len(body)
        return json.loads(body) if body[:1] in (b"{", b"[") else {}


def trends_cost(repeats: int = 30) -> None:
    """CPU time of ``MemoryDiagnostics.trends()`` over a full ring (3600 samples 0.2 s apart,
    RSS growing with noise), its per-sample memo cleared before each call."""
    import dataclasses

    from memdiag.service import MemoryDiagnostics

    diag = MemoryDiagnostics()
    s, _ = diag.tick()
    rng = random.Random(1)
    for i in range(3600):
        proc = dataclasses.replace(s.process, rss=s.process.rss + i * 1000 + rng.randrange(100_000))
        diag.history.append(dataclasses.replace(s, time=s.time - (3600 - i) * 0.2, process=proc))
    times = []
    for _ in range(repeats):
        diag._trends_memo = None
        t = time.process_time()
        diag.trends()
        times.append(time.process_time() - t)
    print(
        f"trends(): median {statistics.median(times) * 1e3:.2f} ms CPU, min {min(times) * 1e3:.2f} ms "
        f"({repeats} calls, full ring, {diag.config.leak_window_seconds:.0f} s window)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--cycles", type=int, default=16, help="cycles per method per round")
    ap.add_argument("--children", type=int, default=20)
    ap.add_argument("--loads", type=int, default=5, help="browser page loads (0: skip)")
    ap.add_argument("--trends", action="store_true", help="only time MemoryDiagnostics.trends() in this process")
    args = ap.parse_args()
    if args.trends:
        trends_cost()
        return

    proc = subprocess.Popen(
        [sys.executable, "-c", SERVICE, TOKEN, str(args.children)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        client = Client(url)
        since = [client.get("/api/memory/status")["timestamp"]]
        cycle_no = [0]

        def dashboard() -> None:
            client.get("/api/memory/diagnostics")
            # As the page does: twice the rows expected since the last fetch, + 5.
            rows = client.get(f"/api/memory/history?columns={COLUMNS}&last=9")["rows"]
            rows = [r for r in rows if r[0] > since[0]]
            if rows:
                since[0] = rows[-1][0]
            cycle_no[0] += 1
            if cycle_no[0] % 5 == 0:
                client.get("/api/memory/leaks")

        methods: dict[str, Callable[[], None]] = {
            "idle": lambda: None,
            "dashboard": dashboard,
            "status": lambda: client.get("/api/memory/status"),
            "metrics": lambda: client.get("/metrics"),
        }
        for fn in methods.values():  # warm up
            fn()
        cpu: dict[str, list[float]] = {m: [] for m in methods}
        wall: dict[str, list[float]] = {m: [] for m in methods}
        size: dict[str, list[int]] = {m: [] for m in methods}
        rng = random.Random(0)
        for _ in range(args.rounds):
            order = list(methods)
            rng.shuffle(order)
            for name in order:
                fn = methods[name]
                c0, b0, t0 = cpu_seconds(proc.pid), client.bytes, time.perf_counter()
                busy = 0.0
                for _ in range(args.cycles):
                    t1 = time.perf_counter()
                    fn()
                    busy += time.perf_counter() - t1
                    time.sleep(PAUSE)
                wall[name].append(busy / args.cycles)
                cpu[name].append((cpu_seconds(proc.pid) - c0) / args.cycles)
                size[name].append((client.bytes - b0) // args.cycles)

        full = []
        for _ in range(5):
            t0 = time.perf_counter()
            body = client.get(f"/api/memory/history?columns={COLUMNS}")
            full.append(time.perf_counter() - t0)
        rows_full = len(body["rows"])
        full_bytes = len(json.dumps(body))

        print(
            f"service: {args.children} children, history ring full ({rows_full} rows), sampling every 0.2 s; "
            f"{args.rounds} rounds x {args.cycles} cycles, interleaved"
        )
        idle = statistics.median(cpu["idle"])
        print(f"idle (monitor alone): {idle * 1000:.2f} ms CPU per {PAUSE} s cycle, subtracted below")
        # CPU is read in 10 ms ticks over a round: below ~0.5 ms per cycle is noise.
        head = ("method", "service CPU/cycle", "request wall", "bytes/cycle", "vs metrics", "CPU % at 2 s")
        print(f"{head[0]:<10} {head[1]:>18} {head[2]:>13} {head[3]:>12} {head[4]:>10} {head[5]:>13}")
        costs = {m: max(0.0, statistics.median(cpu[m]) - idle) for m in methods if m != "idle"}
        for name, c in costs.items():
            print(
                f"{name:<10} {c * 1000:>15.2f} ms {statistics.median(wall[name]) * 1000:>10.2f} ms "
                f"{int(statistics.median(size[name])):>12,d} {c / (costs['metrics'] or 1e-9):>9.1f}x "
                f"{100 * c / 2.0:>12.3f}%"
            )
        page = page_html()
        print(f"page: {len(page):,d} bytes ({len(gzip.compress(page)):,d} gzipped), once per load")
        ms = statistics.median(full) * 1000
        print(f"history 'all' load: {rows_full} rows, {full_bytes:,d} bytes, median {ms:.1f} ms")

        exe = shutil.which("chromium")
        if args.loads and exe:
            try:
                from playwright.sync_api import sync_playwright
            except ImportError:
                print("browser: playwright not installed; skipped")
                return
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=exe, args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
                )
                times = []
                for _ in range(args.loads):
                    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
                    page_ = ctx.new_page()
                    t0 = time.perf_counter()
                    page_.goto(dashboard_url(url, TOKEN))
                    page_.wait_for_function(
                        "() => +(document.querySelector('#chart-rss svg')?.dataset.points || 0) >= 3", timeout=30000
                    )
                    times.append(time.perf_counter() - t0)
                    ctx.close()
                browser.close()
            ms = statistics.median(times) * 1000
            print(f"browser: navigation to the first drawn RSS chart: median {ms:.0f} ms over {args.loads} loads")
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
