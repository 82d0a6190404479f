"""What reading a Node.js heap costs: the spawn_node IPC agent vs inspector sessions.

Compares, in interleaved rounds, one fresh ``process.memoryUsage()`` reading through:

* ``agent``: ``NodeProcess.request_usage()`` (``spawn_node``'s preload agent, IPC channel);
* ``spawned``: ``InspectedNode.read_usage()`` on a ``spawn_inspected_node`` child (its
  inspector is always open): ownership check of the listening socket, WebSocket
  handshake, ``Runtime.evaluate``, close;
* ``signal``: ``InspectedNode.read_usage()`` on an owned ``node --inspect-port=127.0.0.1:0``
  attached with ``inspect_node``: SIGUSR1, wait for the listener, ``/json/list``,
  handshake, one loop turn, ``Runtime.evaluate``, close the inspector, wait until it is gone;
* ``bare CDP``: the same WebSocket session as ``spawned`` without memdiag's checks (the
  floor of any CDP client on this machine);
* ``refresh()``: what the monitor tick pays per inspected process when no session is due.

Wall time per reading (medians, p90) and CPU per reading on both sides (this process's
``process_time``, the node process's utime+stime from /proc), ratios against the agent.

Run: python benchmarks/bench_node_inspector.py [--rounds 15] [--reps 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from collections.abc import Callable

import memdiag
from memdiag.config import MemoryConfig
from memdiag.processes.cdp import CDPSession
from memdiag.processes.inspector import inspect_node, spawn_inspected_node
from memdiag.processes.node import spawn_node

IDLE = "setInterval(() => {}, 1000)"
TICKS = os.sysconf("SC_CLK_TCK")


def node_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()

    agent = spawn_node(["-e", IDLE], report_interval=60.0)
    spawned = spawn_inspected_node(["-e", IDLE], stderr=subprocess.DEVNULL)
    attached = memdiag.Popen(["node", "--inspect-port=127.0.0.1:0", "-e", IDLE], stderr=subprocess.DEVNULL)
    procs: list[subprocess.Popen] = [agent, spawned, attached]
    try:
        deadline = time.monotonic() + 10
        while agent.agent is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # node's SIGUSR1 handler is installed during start-up
        handle = inspect_node(attached)
        assert spawned.inspector.read_usage() is not None, spawned.inspector.error
        url = spawned.inspector.url or ""

        def bare() -> object:
            with CDPSession.connect(url) as cdp:
                return cdp.call("Runtime.evaluate", {"expression": "process.memoryUsage()", "returnByValue": True})

        cfg = MemoryConfig(node_inspect_interval=3600.0)
        spawned.inspector.refresh(cfg)  # due once; then never within the run
        methods: dict[str, tuple[Callable[[], object], int | None]] = {
            "agent request_usage()": (agent.request_usage, agent.pid),
            "spawned read_usage()": (spawned.inspector.read_usage, spawned.pid),
            "signal read_usage()": (handle.read_usage, attached.pid),
            "bare CDP session": (bare, spawned.pid),
            "refresh() not due": (lambda: spawned.inspector.refresh(cfg), None),
        }
        wall: dict[str, list[float]] = {m: [] for m in methods}
        cpu_here: dict[str, float] = dict.fromkeys(methods, 0.0)
        cpu_node: dict[str, float] = dict.fromkeys(methods, 0.0)
        for _ in range(args.rounds):
            for name, (fn, pid) in methods.items():
                c0, n0 = time.process_time(), node_cpu(pid) if pid else 0.0
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    if fn() is None and name != "refresh() not due":
                        raise SystemExit(f"{name} failed: {handle.error or spawned.inspector.error}")
                    wall[name].append(time.perf_counter() - t0)
                cpu_here[name] += time.process_time() - c0
                cpu_node[name] += (node_cpu(pid) - n0) if pid else 0.0
        n = args.rounds * args.reps
        base = statistics.median(wall["agent request_usage()"])
        print(f"{args.rounds} interleaved rounds x {args.reps} readings; node {agent.agent and agent.agent['node']}")
        print(f"{'method':24} {'median':>10} {'p90':>10} {'vs agent':>9} {'CPU here':>10} {'CPU node':>10}")
        for name in methods:
            xs = sorted(wall[name])
            med, p90 = statistics.median(xs), xs[int(len(xs) * 0.9)]
            print(
                f"{name:24} {med * 1e3:8.3f}ms {p90 * 1e3:8.3f}ms {med / base:8.2f}x"
                f" {cpu_here[name] / n * 1e3:8.3f}ms {cpu_node[name] / n * 1e3:8.3f}ms"
            )
        print(f"signal mode: {handle.sessions} sessions, {handle.failures} failed")
    finally:
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
