"""What a Prometheus scrape of memdiag costs, beside prometheus_client's own collectors.

Run:  python benchmarks/bench_metrics.py [--rounds 7] [--scrapes 200] [--pairs 5]

Side by side, in interleaved rounds, medians (the machines here are shared and noisy):

1. CPU per scrape in this process (``time.thread_time``: the scraping thread only, so the
   monitor's own thread is not counted), each method's ``--scrapes`` scrapes per round, the
   order rotating every round:

   * ``prometheus_client defaults``: a registry with prometheus_client's ``ProcessCollector``,
     ``PlatformCollector`` and ``GCCollector``, through ``generate_latest()`` (what an
     application that uses prometheus_client serves without memdiag);
   * ``memdiag collector``: a registry with memdiag's collector alone (the ``memdiag_*``
     families of a started monitor at default settings);
   * ``both``: the two in one registry (an application with prometheus_client and memdiag);
   * ``memdiag standalone``: memdiag's own text of the ``process_*``, ``python_*`` and
     ``memdiag_*`` families, without prometheus_client (``/metrics`` where it is not
     installed).

   With the bytes and the series (sample lines) of one scrape.
2. What importing prometheus_client costs a process: fresh processes, interleaved pairs,
   USS and RSS with and without ``import prometheus_client`` (memdiag never imports it
   itself: docs/telemetry.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

PROBE = r"""
import sys
if sys.argv[1] == "import":
    import prometheus_client  # noqa: F401
rss = int(open("/proc/self/statm").read().split()[1]) * 4096
uss = 0
with open("/proc/self/smaps_rollup") as fh:
    for line in fh:
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            uss += int(line.split()[1]) * 1024
print(uss, rss)
"""


def scrapers() -> tuple[dict[str, Callable[[], bytes]], object]:
    """The scrape methods, over one started monitor (returned to keep it alive)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.gc_collector import GCCollector
    from prometheus_client.platform_collector import PlatformCollector
    from prometheus_client.process_collector import ProcessCollector

    import memdiag
    from memdiag.telemetry.families import memdiag_families, process_families, render_text
    from memdiag.telemetry.prometheus import _collector_class

    diag = memdiag.start()
    deadline = time.monotonic() + 30
    while not memdiag_families(diag) and time.monotonic() < deadline:  # the first sample
        time.sleep(0.05)

    def registry(*, defaults: bool, ours: bool) -> CollectorRegistry:
        reg = CollectorRegistry()
        if defaults:
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
            GCCollector(registry=reg)
        if ours:
            reg.register(_collector_class()(diag))
        return reg

    regs = {
        "prometheus_client defaults": registry(defaults=True, ours=False),
        "memdiag collector": registry(defaults=False, ours=True),
        "both": registry(defaults=True, ours=True),
    }
    methods: dict[str, Callable[[], bytes]] = {n: (lambda r=r: generate_latest(r)) for n, r in regs.items()}
    methods["memdiag standalone"] = lambda: render_text(process_families(diag) + memdiag_families(diag)).encode()
    return methods, diag


def scrape_cost(rounds: int, scrapes: int) -> None:
    methods, _diag = scrapers()
    names = list(methods)
    per: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            fn = methods[n]
            t0 = time.thread_time()
            for _ in range(scrapes):
                fn()
            per[n].append((time.thread_time() - t0) / scrapes)
    base = statistics.median(per["prometheus_client defaults"])
    print(f"CPU per scrape, {rounds} interleaved rounds x {scrapes} scrapes, medians [min-max]\n")
    print("| scrape | CPU per scrape | vs prometheus_client defaults | bytes | series |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for n in names:
        text = methods[n]().decode()
        series = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
        med = statistics.median(per[n])
        print(
            f"| {n} | {med * 1e6:.0f} us [{min(per[n]) * 1e6:.0f}-{max(per[n]) * 1e6:.0f}] "
            f"| {med / base:.2f}x | {len(text):,} | {series} |"
        )


def import_cost(pairs: int) -> None:
    deltas: dict[str, list[float]] = {"USS": [], "RSS": []}
    for i in range(pairs):
        got = {}
        for kind in ("import", "plain") if i % 2 == 0 else ("plain", "import"):
            out = subprocess.run([sys.executable, "-c", PROBE, kind], capture_output=True, text=True, check=True)
            got[kind] = [int(x) for x in out.stdout.split()]
        for k, j in (("USS", 0), ("RSS", 1)):
            deltas[k].append((got["import"][j] - got["plain"][j]) / 2**20)
    print(f"\n`import prometheus_client` in a fresh process, {pairs} interleaved pairs, medians [min-max]\n")
    print("| measure | added |")
    print("| --- | ---: |")
    for k, xs in deltas.items():
        print(f"| {k} | {statistics.median(xs):+.2f} MiB [{min(xs):+.2f}, {max(xs):+.2f}] |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--scrapes", type=int, default=200, help="scrapes per method per round")
    ap.add_argument("--pairs", type=int, default=5, help="pairs of fresh processes for the import cost")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")
    scrape_cost(args.rounds, args.scrapes)
    import_cost(args.pairs)


if __name__ == "__main__":
    main()
