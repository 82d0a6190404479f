"""GET /api/memory/profile latency under 50 concurrent keep-alive clients.

Three servers, each in its own process, measured in interleaved rounds:

  baseline    a bare stdlib ThreadingHTTPServer answering a fixed JSON of similar size
  memdiag     memdiag's standalone server (memdiag.start(http=...)), monitor running
  fastapi     memdiag.http.fastapi.memory_router() under uvicorn (what a FastAPI user mounts)

The load generator is one asyncio process: 50 clients, each on its own connection,
sending the next request as soon as the last answer arrived (closed loop). It reports
p50/p99 per round, then the median over rounds and the ratio to the baseline.

    python benchmarks/bench_http.py [--rounds 5] [--seconds 3] [--clients 50] [--pace 0.05]

``--pace 0`` (the default) is saturation: latency is then concurrency / throughput.
``--pace 0.05`` has each client ask every 50 ms (1000 req/s in all): service latency.
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

PATH = "/api/memory/profile"
TOKEN = "bench-token-0123456789abcdef"


# -- servers (run with --serve KIND in a child process) ---------------------------------------


def _serve_baseline() -> None:
    import socket
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import memdiag
    from memdiag.config import MemoryConfig

    # A fixed body the size of a real profile answer.
    diag = memdiag.MemoryDiagnostics(MemoryConfig(enable_profiling=False))
    body = json.dumps(diag.profile(), separators=(",", ":")).encode()
    diag.close()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body are two writes here: without this, Nagle + delayed ACK add
            # ~40 ms to every keep-alive answer and the baseline would measure that.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    server = Server(("127.0.0.1", 0), Handler)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


def _serve_memdiag() -> None:
    import memdiag

    diag = memdiag.start(http="127.0.0.1:0", api_token=TOKEN)
    print(diag.http_server.url, flush=True)
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


SERVERS = {"baseline": _serve_baseline, "memdiag": _serve_memdiag, "fastapi": _serve_fastapi}


# -- load ------------------------------------------------------------------------------------


async def _client(host: str, port: int, deadline: float, lat: list[float], errors: list[str], pace: float) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    await asyncio.sleep(random.random() * pace)  # spread paced clients over the period
    request = (f"GET {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").encode()
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


async def _load(url: str, clients: int, seconds: float, pace: float = 0.0) -> tuple[list[float], list[str]]:
    host, port = url.removeprefix("http://").split(":")
    lat: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*(_client(host, int(port), deadline, lat, errors, pace) for _ in range(clients)))
    return lat, errors


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--pace",
        type=float,
        default=0.0,
        help="seconds between one client's requests (0: closed loop, next request at once)",
    )
    parser.add_argument("--serve", choices=sorted(SERVERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        SERVERS[args.serve]()
        return

    procs: dict[str, subprocess.Popen[str]] = {}
    urls: dict[str, str] = {}
    env = {**os.environ, "MEMDIAG_RUNTIME_DIR": os.environ.get("MEMDIAG_RUNTIME_DIR", "/tmp/memdiag-bench-run")}
    try:
        for kind in SERVERS:
            p = subprocess.Popen(
                [sys.executable, __file__, "--serve", kind],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            procs[kind] = p
            urls[kind] = p.stdout.readline().strip()  # type: ignore[union-attr]
        time.sleep(1.5)  # let the monitors take their first samples
        for url in urls.values():  # warm up: connections, first profile
            asyncio.run(_load(url, 4, 0.5))
        rows: dict[str, list[tuple[float, float, float]]] = {k: [] for k in SERVERS}
        for rnd in range(args.rounds):
            order = list(SERVERS)
            random.shuffle(order)
            for kind in order:
                lat, errors = asyncio.run(_load(urls[kind], args.clients, args.seconds, args.pace))
                p50, p99 = _quantile(lat, 0.50) * 1e3, _quantile(lat, 0.99) * 1e3
                rps = len(lat) / args.seconds
                rows[kind].append((p50, p99, rps))
                err = f"  errors={len(errors)} {sorted(set(errors))}" if errors else ""
                print(
                    f"round {rnd + 1} {kind:9s} p50={p50:7.2f} ms  p99={p99:7.2f} ms  {rps:7.0f} req/s{err}", flush=True
                )
    finally:
        for p in procs.values():
            if p.stdin:
                p.stdin.close()
            p.terminate()
            p.wait(10)

    mode = f"each pacing {args.pace * 1e3:g} ms" if args.pace else "closed loop"
    print(
        f"\nGET {PATH}, {args.clients} concurrent keep-alive clients ({mode}), "
        f"{args.rounds} rounds x {args.seconds:g} s, {os.cpu_count()} CPUs (client and servers share them)"
    )
    print(f"{'server':10s} {'p50 ms':>8s} {'p99 ms':>8s} {'req/s':>8s} {'p50 x':>7s} {'p99 x':>7s}")
    base = rows["baseline"]
    b50 = statistics.median(r[0] for r in base)
    b99 = statistics.median(r[1] for r in base)
    for kind, vals in rows.items():
        m50 = statistics.median(r[0] for r in vals)
        m99 = statistics.median(r[1] for r in vals)
        rps = statistics.median(r[2] for r in vals)
        print(f"{kind:10s} {m50:8.2f} {m99:8.2f} {rps:8.0f} {m50 / b50:7.2f} {m99 / b99:7.2f}")


if __name__ == "__main__":
    main()
