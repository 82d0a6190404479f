"""CLI latency: ``memdiag profile --json`` end to end against a live service.

Run:  python benchmarks/bench_cli.py [--rounds 20]

Starts a real service (``memdiag.start(http=True)`` in a child Python process), then
times, in interleaved rounds, each command as a user would type it (a fresh process
every time, output discarded):

1. ``memdiag profile --json`` (the installed entry point, not a pyenv shim);
2. what a user would type instead for "how much memory does it use":
   ``ps -o rss= -p PID`` and ``python -c "import psutil; print(psutil.Process(PID).memory_info().rss)"``;
3. ``curl`` of ``/api/memory/profile`` with the token (the same JSON, no Python start-up);
4. ``python -c pass`` (the interpreter's own start-up: the floor for any Python CLI).

Prints the medians, p90s and ratios, and whether the bar (median < 300 ms) is met.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

SERVICE = """
import sys, memdiag
d = memdiag.start(http=True)
print(d.http_server.url, flush=True)
sys.stdin.read()
"""


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    runtime = tempfile.mkdtemp(prefix="memdiag-bench-cli-")
    env = {**os.environ, "MEMDIAG_RUNTIME_DIR": runtime}
    svc = subprocess.Popen(
        [sys.executable, "-c", SERVICE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert svc.stdout is not None
        url = svc.stdout.readline().strip()
        token = Path(runtime, f"{svc.pid}.token").read_text().strip()
        memdiag_exe = str(Path(sysconfig.get_path("scripts")) / "memdiag")
        pid = str(svc.pid)
        commands: dict[str, list[str]] = {
            "memdiag profile --json": [memdiag_exe, "profile", "--json"],
            "ps -o rss= -p PID": ["ps", "-o", "rss=", "-p", pid],
            "python -c psutil one-liner": [
                sys.executable,
                "-c",
                f"import psutil; print(psutil.Process({pid}).memory_info().rss)",
            ],
            "python -c pass": [sys.executable, "-c", "pass"],
        }
        if shutil.which("curl"):
            commands["curl /api/memory/profile"] = [
                "curl", "-s", "-H", f"Authorization: Bearer {token}", f"{url}/api/memory/profile",
            ]  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in commands}
        for argv in commands.values():  # warm the page cache once
            subprocess.run(argv, stdout=subprocess.DEVNULL, env=env, check=True)
        for _ in range(args.rounds):
            for name, argv in commands.items():
                t0 = time.perf_counter()
                subprocess.run(argv, stdout=subprocess.DEVNULL, env=env, check=True)
                times[name].append(time.perf_counter() - t0)
    finally:
        if svc.stdin:
            svc.stdin.close()
        svc.wait(timeout=10)
        shutil.rmtree(runtime, ignore_errors=True)

    base = statistics.median(times["memdiag profile --json"])
    print(f"{args.rounds} interleaved rounds, {os.cpu_count()} CPUs, service PID {pid}")
    print("| command | median | p90 | vs memdiag profile --json |\n| --- | --- | --- | --- |")
    for name, xs in times.items():
        med = statistics.median(xs)
        print(f"| `{name}` | {med * 1000:.0f} ms | {pct(xs, 0.9) * 1000:.0f} ms | {med / base:.2f}x |")
    floor = statistics.median(times["python -c pass"])
    print(f"memdiag's own share above the interpreter's start-up: {(base - floor) * 1000:.0f} ms")
    met = base < 0.300
    print(f"bar: median < 300 ms end to end: {'met' if met else 'NOT met'} ({base * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
