"""What the local control channel costs, and how fast the CLI's path through it is.

1. **Idle cost.** Pairs of fresh processes, interleaved: one runs ``memdiag.start()`` (the
   monitor and the control channel), the other the same ``memdiag.start()`` with the
   channel's hook left out. After ``--settle`` seconds each reports
   its RSS, threads and open descriptors; the table gives the median difference per pair.
2. **Request latency.** One service with both surfaces (``memdiag.start(http=True)``);
   ``GET /api/memory/status`` over the Unix socket (what the CLI uses; no token, the peer
   is checked) and over loopback HTTP with the token, a new connection per request (as the
   CLI makes one), alternating in slices of ``--chunk`` requests over ``--rounds`` rounds.
   Medians per request and the median of the per-round ratios.

Run:  python benchmarks/bench_control.py
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

PROBE = r"""
import json, os, sys, time, threading
import memdiag
import memdiag.control.channel as channel
if sys.argv[1] != "control":
    channel.install = lambda *args, **kwargs: None  # the same start(), without the control channel
memdiag.start(history_persist=False, leak_detection=False)
time.sleep(float(sys.argv[2]))
rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
print(json.dumps({"rss": rss, "threads": threading.active_count(), "fds": len(os.listdir("/proc/self/fd")) - 1}))
"""

SERVICE = r"""
import sys, memdiag
d = memdiag.start(http=True, history_persist=False, leak_detection=False)
print(d.http_server.url, d.http_server.token, flush=True)
sys.stdin.read()
"""


def idle_cost(pairs: int, settle: float) -> None:
    deltas: dict[str, list[float]] = {"rss": [], "threads": [], "fds": []}
    for i in range(pairs):
        out = {}
        for kind in ("control", "plain") if i % 2 == 0 else ("plain", "control"):
            r = subprocess.run([sys.executable, "-c", PROBE, kind, str(settle)], capture_output=True, text=True)
            out[kind] = json.loads(r.stdout)
        for k in deltas:
            deltas[k].append(out["control"][k] - out["plain"][k])
    print(f"idle cost of the control channel (median of {pairs} interleaved pairs of processes):")
    print(
        f"  RSS     {statistics.median(deltas['rss']) / 1024:+.0f} KiB  (range {min(deltas['rss']) / 1024:+.0f}..{max(deltas['rss']) / 1024:+.0f})"
    )
    print(f"  threads +{statistics.median(deltas['threads']):.0f}")
    print(f"  fds     +{statistics.median(deltas['fds']):.0f}")


def latency(rounds: int, chunk: int) -> None:
    import http.client

    from memdiag.control.client import UnixHTTPConnection
    from memdiag.runtime import list_services

    proc = subprocess.Popen([sys.executable, "-c", SERVICE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url, token = proc.stdout.readline().split()
        deadline = time.monotonic() + 10
        entry = None
        while entry is None and time.monotonic() < deadline:
            entry = next((e for e in list_services() if e.pid == proc.pid and e.socket), None)
            time.sleep(0.02)
        assert entry is not None and entry.socket
        host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)

        def over_unix() -> None:
            c = UnixHTTPConnection(entry.socket)
            c.request("GET", "/api/memory/status")
            assert c.getresponse().read()
            c.close()

        def over_tcp() -> None:
            c = http.client.HTTPConnection(host, int(port))
            c.request("GET", "/api/memory/status", headers={"Authorization": f"Bearer {token}"})
            assert c.getresponse().read()
            c.close()

        per: dict[str, list[float]] = {"unix": [], "tcp": []}
        ratios = []
        for r in range(rounds):
            spent = {"unix": 0.0, "tcp": 0.0}
            order = [("unix", over_unix), ("tcp", over_tcp)]
            for s in range(4):
                for name, fn in order if (r + s) % 2 == 0 else order[::-1]:
                    t0 = time.perf_counter()
                    for _ in range(chunk):
                        fn()
                    spent[name] += time.perf_counter() - t0
            for name in spent:
                per[name].append(spent[name] / (4 * chunk))
            ratios.append(spent["tcp"] / spent["unix"])
        print(f"GET /api/memory/status, a new connection per request ({rounds} rounds x {4 * chunk} each):")
        print(f"  unix socket (CLI's path) {statistics.median(per['unix']) * 1e6:7.0f} us median")
        print(f"  loopback HTTP + token    {statistics.median(per['tcp']) * 1e6:7.0f} us median")
        print(f"  HTTP / unix: {statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})")
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--settle", type=float, default=1.5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        os.environ["MEMDIAG_RUNTIME_DIR"] = os.path.join(d, "run")
        os.environ["XDG_STATE_HOME"] = os.path.join(d, "state")
        idle_cost(args.pairs, args.settle)
        latency(args.rounds, args.chunk)


if __name__ == "__main__":
    main()
