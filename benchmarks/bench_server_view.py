"""What the server view costs a pre-fork server: ``GET /api/memory/server`` on gunicorn.

A gunicorn server (``--workers`` sync workers, a Flask app with memdiag mounted, each
worker sampling every 0.2 s) is asked for ``/api/memory/server`` as the dashboard's
Server panel does (every 5 s) and ``memdiag watch --server`` does (every ``--interval``,
2 s by default). Every process of the server builds its profile and leak report for each
request, one forwarded over each worker's control channel. The cost is the CPU time of
the whole server (master and workers: ``/proc/<pid>/stat`` utime+stime, 10 ms ticks, so
summed over a round) per request, against the same pause without a request (the monitors'
own cost, subtracted), in interleaved rounds.

Run:  python benchmarks/bench_server_view.py [--workers 2 --rounds 8 --cycles 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TOKEN = "bench-server-token-0123456789abc"
PAUSE = 0.25
APP = """
import memdiag
from flask import Flask
from memdiag.http.flask import memory_blueprint

memdiag.start(sample_interval=0.2, profile_interval=1.0)
app = Flask(__name__)
app.register_blueprint(memory_blueprint())
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cpu(pids: list[int]) -> float:
    """Seconds of CPU (user + system) the processes used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def _get(url: str) -> None:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--cycles", type=int, default=10, help="requests (or pauses) per round")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "bench_app.py").write_text(APP)
        port = _port()
        env = {**os.environ, "MEMDIAG_API_TOKEN": TOKEN, "PYTHONPATH": os.pathsep.join([tmp, *sys.path])}
        argv = [sys.executable, "-m", "gunicorn", "-w", str(args.workers), "-b", f"127.0.0.1:{port}", "bench_app:app"]
        server = subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/api/memory/server"
            deadline = time.monotonic() + 120
            while True:  # every worker up, and each one's agent answering
                try:
                    _get(url)
                    if len(_children(server.pid)) >= args.workers:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
            time.sleep(2.0)  # let the workers finish starting up
            pids = [server.pid, *_children(server.pid)]
            costs: dict[str, list[float]] = {"idle": [], "server": []}
            for r in range(args.rounds):
                for method in ("idle", "server") if r % 2 == 0 else ("server", "idle"):
                    before = _cpu(pids)
                    for _ in range(args.cycles):
                        if method == "server":
                            _get(url)
                        time.sleep(PAUSE)
                    costs[method].append((_cpu(pids) - before) / args.cycles)
            per = [s - i for s, i in zip(costs["server"], costs["idle"])]
            print(f"gunicorn, {args.workers} sync workers, {args.rounds} interleaved rounds x {args.cycles} requests")
            print(f"idle (monitors only):      {statistics.median(costs['idle']) * 1000:6.1f} ms CPU per {PAUSE} s")
            print(
                f"GET /api/memory/server:    {statistics.median(per) * 1000:6.1f} ms CPU per request, whole server "
                f"(median of per-round differences; range {min(per) * 1000:.1f} to {max(per) * 1000:.1f})"
            )
            for every in (5.0, 2.0):
                share = statistics.median(per) / every * 100
                print(f"  asked every {every:g} s: {share:.2f} % of one core")
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


if __name__ == "__main__":
    main()
