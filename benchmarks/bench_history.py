"""What history by default costs: per tick, in the monitor's memory, and on disk.

Run:  python benchmarks/bench_history.py [--rounds N]

Side by side, in interleaved rounds, medians (the machines here are shared and noisy):

1. Time per sample: the in-memory ring's ``History.append`` alone vs the ring plus
   ``HistoryStore.add`` (running sums; one SQLite row written per 10 samples here, i.e.
   the file's cost at ``history_db_interval`` = 10 x ``sample_interval``).
2. The RSS a started monitor adds, in fresh processes: ``history_persist`` on vs off
   (sqlite3 and the connection included), 3 s at ``sample_interval=0.05``.
3. Disk: bytes per stored row, and the file for 7 days at the default 10 s interval,
   before and after downsampling (rows older than a day become 5-minute rows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from memdiag.history import DOWNSAMPLE_SECONDS, History, HistoryStore  # noqa: E402
from memdiag.sample import Sampler  # noqa: E402

N = 2000


def per_sample(store_path: str) -> tuple[float, float]:
    """Seconds per sample: ring only, ring + store (one row per 10 samples)."""
    sample = Sampler().take()
    ring = History(3600)
    t0 = time.perf_counter()
    for _ in range(N):
        ring.append(sample)
    ring_only = (time.perf_counter() - t0) / N
    store = HistoryStore(store_path, interval=10.0)
    base = time.time()
    samples = [sample.__class__(**{**{f: getattr(sample, f) for f in sample.__slots__}, "time": base + i}) for i in range(N)]
    t0 = time.perf_counter()
    for s in samples:
        ring.append(s)
        store.add(s)
    both = (time.perf_counter() - t0) / N
    store.close()
    return ring_only, both


CHILD = """
import json, os, time, sys
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
before = rss()
import memdiag
diag = memdiag.start(sample_interval=0.05, history_db_interval=1.0, history_persist=sys.argv[1] == 'on',
                     leak_detection=False)
time.sleep(3.0)
print(json.dumps({"rss_added": rss() - before, "store": diag.store.path if diag.store else None}))
memdiag.stop()
"""


def monitor_rss(persist: str, state: str) -> int:
    env = {**os.environ, "XDG_STATE_HOME": state, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "src")}
    out = subprocess.run([sys.executable, "-c", CHILD, persist], capture_output=True, text=True, env=env, check=True)
    return int(json.loads(out.stdout)["rss_added"])


def disk(path: str) -> dict[str, float]:
    """A week of rows at 10 s, written in bulk as a running service would have; then maintenance."""
    sample = Sampler().take()
    store = HistoryStore(path, interval=10.0, retention_days=7.0, max_bytes=1 << 30)
    now = time.time()
    rows = 7 * 86400 // 10
    for i in range(rows):
        t = now - 7 * 86400 + i * 10
        s = sample.__class__(**{**{f: getattr(sample, f) for f in sample.__slots__}, "time": t})
        store.add(s)
        store._first = t - 10  # one row per sample here (each sample stands for 10 s)
    store.flush()
    full = store.size_bytes()
    store.maintain()
    after = store.size_bytes()
    store.close()
    return {"rows": rows, "bytes_per_row": full / rows, "week_before_downsampling": full, "week_after": after}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ring, both, on, off = [], [], [], []
        for r in range(args.rounds):  # interleaved: every round measures every contender
            a, b = per_sample(os.path.join(tmp, f"tick{r}.sqlite"))
            ring.append(a)
            both.append(b)
            order = ("on", "off") if r % 2 == 0 else ("off", "on")
            for persist in order:
                (on if persist == "on" else off).append(monitor_rss(persist, os.path.join(tmp, f"state{r}")))
        d = disk(os.path.join(tmp, "week.sqlite"))
    med = statistics.median
    print(f"rounds: {args.rounds} (interleaved; medians; min-max in brackets)")
    print(
        f"per sample: ring {med(ring) * 1e6:.1f} us [{min(ring) * 1e6:.1f}-{max(ring) * 1e6:.1f}], "
        f"ring + file {med(both) * 1e6:.1f} us [{min(both) * 1e6:.1f}-{max(both) * 1e6:.1f}]: "
        f"the file adds {(med(both) - med(ring)) * 1e6:.1f} us per sample"
    )
    print(
        f"monitor RSS added after 3 s: history file on {med(on) / 2**20:.2f} MiB "
        f"[{min(on) / 2**20:.2f}-{max(on) / 2**20:.2f}], off {med(off) / 2**20:.2f} MiB "
        f"[{min(off) / 2**20:.2f}-{max(off) / 2**20:.2f}]: the file costs {(med(on) - med(off)) / 2**20:.2f} MiB"
    )
    print(
        f"disk: {d['bytes_per_row']:.0f} bytes per row; 7 days at 10 s ({d['rows']} rows) "
        f"{d['week_before_downsampling'] / 2**20:.1f} MiB, after downsampling rows past a day to "
        f"{DOWNSAMPLE_SECONDS:.0f} s: {d['week_after'] / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    main()
