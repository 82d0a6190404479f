"""GET /api/memory/status and /profile latency under 50 concurrent keep-alive clients.

Four servers, each in its own process, measured in interleaved rounds (the order of
servers shuffled in every round, both paths in every round):

  raw         a bare asyncio Protocol answering fixed bytes (a real status/profile answer
              of this machine, encoded once): the floor for any Python server here
  memdiag     memdiag's standalone server (memdiag.start(http=...)), monitor running
  memdiag-h11 the same with its fast path off: h11 reads every request (the ablation)
  fastapi     memdiag.http.fastapi.memory_router() under uvicorn (what a FastAPI user mounts)

The load generator is one asyncio process: 50 clients, each on its own connection. With
``--pace 0.05`` (the default) each client asks every 50 ms (1000 req/s in all): service
latency, the figure the p99 <= 3 ms bar is about. ``--pace 0`` is a closed loop
(saturation: latency is then concurrency / throughput). It prints p50/p99 per round, then
per server and path the median over rounds, the range of the round p99s (how noisy the
machine was), the server's CPU time per request (user + system, all its threads, from
/proc; 10 ms clock ticks, so read it over whole rounds), the load generator's own CPU
time per request (``client``: it runs in this process, beside the servers on the same
CPUs), the ratio of the medians to the raw server, and the median of the per-round p99
ratios to the raw server (``p99 x paired``).

``--rt`` runs the load generator and the servers at real-time priority (``SCHED_FIFO``;
root only; refused for a closed loop): on a machine shared with other work, the other
processes then wait instead of the benchmark, which is how a quiet machine would serve
it (the kernel's network work and the caches are still shared).

``--cpu`` measures no latency: the CPU time of the server's connection code per request
(``Connection.data_received`` to the bytes handed to the transport, a null transport, no
sockets, one process), fast path against h11, in interleaved rounds. It is the figure
that a loaded machine disturbs least.

    python benchmarks/bench_http.py [--rounds 5] [--seconds 3] [--clients 50] [--pace 0.05]
                                    [--servers raw,memdiag,memdiag-h11,fastapi] [--rt]
    python benchmarks/bench_http.py --cpu [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time

PATHS = ("/api/memory/status", "/api/memory/profile")
BAR_P99_MS = 3.0  # issue 17: p99 with 50 clients
TOKEN = "bench-token-0123456789abcdef"


# -- servers (run with --serve KIND in a child process) ---------------------------------------


def _serve_raw() -> None:
    import memdiag
    from memdiag.config import MemoryConfig

    # The answers a real service gives on this machine, encoded once.
    diag = memdiag.MemoryDiagnostics(MemoryConfig(enable_profiling=False))
    bodies = {p: json.dumps(getattr(diag, p.rsplit("/", 1)[1])(), separators=(",", ":")).encode() for p in PATHS}
    diag.close()
    answers = {
        p.encode(): b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
        for p, b in bodies.items()
    }

    class Raw(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while (end := self.buf.find(b"\r\n\r\n")) >= 0:
                head, self.buf = self.buf[:end], self.buf[end + 4 :]
                self.transport.write(answers[head.split(b" ", 2)[1]])  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Raw, "127.0.0.1", 0, backlog=128)
        print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()

    asyncio.run(main())


def _serve_memdiag(fast_path: bool = True) -> None:
    import memdiag
    from memdiag.http.wire import Connection

    Connection.fast_path = fast_path
    diag = memdiag.start(http="127.0.0.1:0", api_token=TOKEN)
    print(diag.http_server.url, flush=True)
    import threading

    # Which OS thread is which, so that the parent can tell each thread's CPU time.
    print(json.dumps({str(t.native_id): t.name for t in threading.enumerate()}), flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin
    memdiag.stop()


def _serve_fastapi() -> None:
    import socket

    import uvicorn
    from fastapi import FastAPI

    import memdiag
    from memdiag.http.fastapi import memory_router

    memdiag.start(api_token=TOKEN)
    app = FastAPI()
    app.include_router(memory_router())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", backlog=128)).run(sockets=[sock])


def _serve_memdiag_h11() -> None:
    _serve_memdiag(fast_path=False)


SERVERS = {"raw": _serve_raw, "memdiag": _serve_memdiag, "memdiag-h11": _serve_memdiag_h11, "fastapi": _serve_fastapi}


# -- load ------------------------------------------------------------------------------------


async def _client(
    host: str, port: int, path: str, deadline: float, lat: list[float], errors: list[str], pace: float
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    await asyncio.sleep(random.random() * pace)  # spread paced clients over the period
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").encode()
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            done = time.perf_counter()
            lat.append(done - t0)
            if status != b"200":
                errors.append(status.decode())
            if pace:
                await asyncio.sleep(max(0.0, t0 + pace - done))
    finally:
        writer.close()


async def _load(url: str, path: str, clients: int, seconds: float, pace: float = 0.0) -> tuple[list[float], list[str]]:
    host, port = url.removeprefix("http://").split(":")
    lat: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*(_client(host, int(port), path, deadline, lat, errors, pace) for _ in range(clients)))
    return lat, errors


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


Rows = dict[tuple[str, str], list[tuple[float, float, float, float, float]]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--pace",
        type=float,
        default=0.05,
        help="seconds between one client's requests (0: closed loop, next request at once)",
    )
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated, of: " + ", ".join(SERVERS))
    parser.add_argument("--cpu", action="store_true", help="CPU per request of the connection code (no sockets)")
    parser.add_argument(
        "--rt",
        action="store_true",
        help="run the load generator and the servers at real-time priority (SCHED_FIFO 10; root; paced runs only)",
    )
    parser.add_argument("--serve", choices=sorted(SERVERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        SERVERS[args.serve]()
        return
    if args.cpu:
        _cpu_main(args.rounds)
        return
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    if "raw" not in kinds or any(k not in SERVERS for k in kinds):
        parser.error(f"--servers: names of {', '.join(SERVERS)}, raw among them (the ratios' base)")
    if args.rt:
        if not args.pace:
            parser.error("--rt with a closed loop (--pace 0) would take both CPUs from everyone else")
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))  # the servers inherit it
        except (OSError, AttributeError) as exc:
            parser.error(f"--rt: cannot switch to real-time priority here ({exc}); run without --rt")
    load_before = os.getloadavg()[0]
    urls, procs = _start_servers(kinds)
    rows: Rows = {(k, p): [] for k in kinds for p in PATHS}
    by_thread: dict[str, dict[str, float]] = {}
    try:
        for rnd in range(args.rounds):
            cells = [(k, p) for k in kinds for p in PATHS]
            random.shuffle(cells)
            for kind, path in cells:
                cpu0, client0 = _cpu_seconds(procs[kind].pid), time.process_time()
                threads0 = _thread_cpu(kind, procs[kind].pid) if kind in THREADS else {}
                lat, errors = asyncio.run(_load(urls[kind], path, args.clients, args.seconds, args.pace))
                if kind in THREADS:
                    spent = by_thread.setdefault(kind, {"requests": 0.0, "seconds": 0.0})
                    spent["requests"] += len(lat)
                    spent["seconds"] += args.seconds
                    for name, t in _thread_cpu(kind, procs[kind].pid).items():
                        spent[name] = spent.get(name, 0.0) + t - threads0.get(name, 0.0)
                cpu = (_cpu_seconds(procs[kind].pid) - cpu0) / max(1, len(lat)) * 1e6
                client = (time.process_time() - client0) / max(1, len(lat)) * 1e6
                p50, p99 = _quantile(lat, 0.50) * 1e3, _quantile(lat, 0.99) * 1e3
                rps = len(lat) / args.seconds
                rows[(kind, path)].append((p50, p99, rps, cpu, client))
                err = f"  errors={len(errors)} {sorted(set(errors))}" if errors else ""
                print(
                    f"round {rnd + 1} {kind:11s} {path:20s} p50={p50:6.2f} ms  p99={p99:6.2f} ms  {rps:6.0f} req/s"
                    f"  server CPU {cpu:4.0f} us/req  client {client:4.0f}{err}",
                    flush=True,
                )
    finally:
        for p in procs.values():
            if p.stdin:
                p.stdin.close()
            p.terminate()
            p.wait(10)
    _report(args, rows, load_before)
    for kind, spent in by_thread.items():
        n, secs = spent.pop("requests"), spent.pop("seconds")
        parts = [f"{name} {t / n * 1e6:.1f} us/req ({t / secs * 1e3:.1f} ms/s)" for name, t in sorted(spent.items())]
        print(f"{kind} CPU by thread, all rounds: " + ", ".join(parts))
    _bars(args, rows)


def _bars(args: argparse.Namespace, rows: Rows) -> None:
    """The bar lines run_all.py composes the summary of docs/benchmarks.md from (issue 17:
    p99 <= 3 ms with 50 clients; paced runs only: a closed loop measures saturation)."""
    if not args.pace or ("memdiag", PATHS[0]) not in rows:
        return
    print()
    for path in PATHS:
        p99 = statistics.median(r[1] for r in rows[("memdiag", path)])
        raw = statistics.median(r[1] for r in rows[("raw", path)])
        print(
            f"- bar: `{path}` p99 <= {BAR_P99_MS:g} ms with {args.clients} clients: "
            f"{'met' if p99 <= BAR_P99_MS else 'NOT met'} ({p99:.2f} ms, median of {args.rounds} rounds; "
            f"raw asyncio server {raw:.2f} ms)"
        )


# -- --cpu: the connection code alone ---------------------------------------------------------


class _NullTransport(asyncio.Transport):
    """Counts what the connection writes; a client on loopback, never closing."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def _cpu_round(api: object, path: str, fast: bool, requests: int = 4000) -> float:
    """Microseconds of this thread's CPU per request answered by one connection."""
    from memdiag.http.wire import Connection, ConnectionTable, Limits, Workers

    cls = type("BenchConnection", (Connection,), {"fast_path": fast})
    workers = Workers(2)
    conn = cls(api, workers, ConnectionTable(Limits()))  # type: ignore[arg-type]
    transport = _NullTransport()
    conn.connection_made(transport)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    spent, answered = 0.0, 0
    while answered < requests:
        while conn.busy:  # an answer being built on a worker (after a tick): not timed
            await asyncio.sleep(0.005)
        before = transport.writes
        t0 = time.thread_time()
        for _ in range(100):
            conn.data_received(request)
        spent += time.thread_time() - t0
        answered += transport.writes - before
        await asyncio.sleep(0)
    conn.connection_lost(None)
    workers.close()
    return spent / answered * 1e6


def _cpu_main(rounds: int) -> None:
    import memdiag

    diag = memdiag.start(api_token=TOKEN)  # the monitor runs, as under the server
    from memdiag.http.core import MemoryAPI

    api = MemoryAPI(diag, TOKEN)
    cells = [(path, fast) for path in PATHS for fast in (True, False)]
    results: dict[tuple[str, bool], list[float]] = {c: [] for c in cells}
    asyncio.run(_cpu_round(api, PATHS[0], True, 400))  # warm up: first answers built
    for rnd in range(rounds):
        random.shuffle(cells)
        for path, fast in cells:
            us = asyncio.run(_cpu_round(api, path, fast))
            results[(path, fast)].append(us)
            print(f"round {rnd + 1} {'fast path' if fast else 'h11':9s} {path:20s} {us:6.1f} us/request", flush=True)
    memdiag.stop()
    print(f"\nCPU per request in Connection (one thread, null transport), median of {rounds} interleaved rounds")
    print(f"{'path':20s} {'fast path':>10s} {'h11':>8s} {'h11/fast':>9s}")
    for path in PATHS:
        fast = statistics.median(results[(path, True)])
        slow = statistics.median(results[(path, False)])
        print(f"{path:20s} {fast:10.1f} {slow:8.1f} {slow / fast:9.2f}")


def _start_servers(kinds: list[str]) -> tuple[dict[str, str], dict[str, subprocess.Popen[str]]]:
    procs: dict[str, subprocess.Popen[str]] = {}
    urls: dict[str, str] = {}
    env = {**os.environ, "MEMDIAG_RUNTIME_DIR": os.environ.get("MEMDIAG_RUNTIME_DIR", "/tmp/memdiag-bench-run")}
    for kind in kinds:
        cmd = [sys.executable, __file__, "--serve", kind]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        procs[kind] = p
        urls[kind] = p.stdout.readline().strip()  # type: ignore[union-attr]
        if kind.startswith("memdiag"):
            THREADS[kind] = json.loads(p.stdout.readline())  # type: ignore[union-attr]
    time.sleep(1.5)  # let the monitors take their first samples
    for url in urls.values():  # warm up: connections, first reports
        for path in PATHS:
            asyncio.run(_load(url, path, 4, 0.5))
    return urls, procs


THREADS: dict[str, dict[str, str]] = {}  # memdiag server -> {native thread id: thread name}


def _thread_cpu(kind: str, pid: int) -> dict[str, float]:
    """CPU seconds of each named thread of server ``kind`` (the rest as ``other``)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = THREADS.get(kind, {}).get(tid, "other")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _report(args: argparse.Namespace, rows: Rows, load: float) -> None:
    """Medians over rounds; ``x`` = ratio of the medians to the raw server's, ``x paired``
    = median over rounds of the p99 ratio within the round (both measured minutes apart at
    most, so a load that drifts between rounds cancels)."""
    mode = f"each pacing {args.pace * 1e3:g} ms" if args.pace else "closed loop"
    print(
        f"\n{args.clients} concurrent keep-alive clients ({mode}), {args.rounds} rounds x {args.seconds:g} s, "
        f"{os.cpu_count()} CPUs shared by client and servers; load average {load:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after"
        + ("; at real-time priority (SCHED_FIFO 10): other processes wait" if args.rt else "")
    )
    heads = ("p50 ms", "p99 ms", "p99 range", "req/s", "CPU us/req", "client", "p50 x", "p99 x", "p99 x paired")
    widths = (7, 7, 13, 6, 10, 6, 6, 6, 12)
    print(f"{'server':11s} {'path':20s} " + " ".join(f"{h:>{w}s}" for h, w in zip(heads, widths)))
    for (kind, path), vals in rows.items():
        m50 = statistics.median(r[0] for r in vals)
        m99 = statistics.median(r[1] for r in vals)
        rps = statistics.median(r[2] for r in vals)
        cpu = statistics.median(r[3] for r in vals)
        client = statistics.median(r[4] for r in vals)
        base = rows[("raw", path)]
        b50 = statistics.median(r[0] for r in base)
        b99 = statistics.median(r[1] for r in base)
        paired = statistics.median(r[1] / b[1] for r, b in zip(vals, base))
        spread = f"{min(r[1] for r in vals):.2f}-{max(r[1] for r in vals):.2f}"
        print(
            f"{kind:11s} {path:20s} {m50:7.2f} {m99:7.2f} {spread:>13s} {rps:6.0f} {cpu:10.0f} {client:6.0f} "
            f"{m50 / b50:6.2f} {m99 / b99:6.2f} {paired:12.2f}"
        )


if __name__ == "__main__":
    main()
