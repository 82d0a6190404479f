"""Real servers under load, with and without memdiag mounted (issue 16).

Three servers, each a real process on 127.0.0.1 serving a small JSON endpoint ``GET /``:

  flask     gunicorn, 4 sync workers, Flask, ``memory_blueprint()`` registered
  fastapi   uvicorn (one process), FastAPI, ``memory_router()`` included
  aiohttp   ``aiohttp.web.run_app``, ``add_memory_routes(app)``

"with" runs call ``memdiag.start()`` at import (default settings) and mount the API as
docs/http.md says; "without" runs are the same app without either, and a second
"without" server is the A/A control (``--no-control``: none): the ratio control/without
is what the noise alone does to the figure. Each round starts its own servers (fresh
processes, the same PYTHONHASHSEED for all three: a server process's own speed varies by
up to ~20 % at p50, which the rounds then average out); they run side by side and the
rounds rotate their order, so the noise of this shared machine falls on all. ``--rt``
runs everything at real-time priority (SCHED_FIFO; root): the other processes of a shared
machine wait instead of the benchmark.

The load generator: ``--clients`` threads of this process, each on its own keep-alive
connection (``http.client``, which sets TCP_NODELAY and sends each request in one write;
the servers' sockets have TCP_NODELAY too; gunicorn's sync workers close after each
answer, the client reconnects), each pacing ``GET /`` at ``--rate / --clients`` per
second, bounded by ``--seconds`` and by ``--max-requests``; latency is from the send to
the last byte of the body. Each server first gets ``--warmup`` s of the same load, not
measured (imports, first requests, memdiag's first sample and profile). Beside them a
mixer *process* (so that reading memdiag's answers never holds this process's GIL while
a client times its request) sends every ``--mixer-period`` s, in turn, ``POST /api/memory/cleanup`` ``{}``, ``POST
/api/memory/configure`` ``{"cache_shrink_fraction": ...}``, ``GET /api/memory/status`` and
the health check (the same requests go to the servers without memdiag and get 404 there:
the same load). A failure is an application request that did not answer 2xx or raised,
counted by cause. Every memdiag answer is checked: JSON of the documented shape, cleanup
200 or 429.

Per framework it prints requests, failures by cause, p50/p99 (medians over rounds),
the p99 ratio with/without (median of medians, range and median of the per-round
ratios), the same for the A/A control, and the memdiag answers by endpoint and status.
The bar line judges the p99 of all requests of all rounds pooled per server role, as a
ratio, with a bootstrap interval over rounds (a server process keeps its own speed for its
life: rounds, not requests, are the independent draws), the A/A control's beside it.

    python benchmarks/bench_servers.py [--rounds 6] [--seconds 30] [--rate 120] [--clients 6]
    python benchmarks/bench_servers.py --short          # 2 rounds of 4 s: about 20 s a framework
    python benchmarks/bench_servers.py --rt --rounds 8 --seconds 8 --warmup 3   # on a shared machine
    python benchmarks/bench_servers.py --count --frameworks fastapi,aiohttp   # instructions per request
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
TOKEN = "bench-servers-token-0123456789abcdef"
FRAMEWORKS = ("flask", "fastapi", "aiohttp")
MOUNT_ENV = "MEMDIAG_BENCH_MOUNT"


# -- the applications (imported by gunicorn / uvicorn, or run with --serve aiohttp) -------------


def _mounted() -> bool:
    return os.environ.get(MOUNT_ENV) == "1"


def _payload() -> dict[str, Any]:
    return {"pid": os.getpid(), "items": [{"id": i, "name": f"item-{i}"} for i in range(20)]}


def flask_app() -> Any:
    from flask import Flask

    app = Flask("bench_servers")
    if _mounted():
        import memdiag
        from memdiag.http.flask import memory_blueprint

        memdiag.start()
        app.register_blueprint(memory_blueprint())
    app.get("/")(_payload)
    return app


def fastapi_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()
    if _mounted():
        import memdiag
        from memdiag.http.fastapi import memory_router

        memdiag.start()
        app.include_router(memory_router())
    app.get("/")(_payload)
    return app


def aiohttp_main(port: int) -> None:
    from aiohttp import web

    async def index(request: web.Request) -> web.Response:
        return web.json_response(_payload())

    app = web.Application()
    app.router.add_get("/", index)
    if _mounted():
        import memdiag
        from memdiag.http.aiohttp import add_memory_routes

        memdiag.start()
        add_memory_routes(app)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- running a server --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _argv(framework: str, port: int) -> list[str]:
    if framework == "flask":
        return [sys.executable, "-m", "gunicorn", "-w", "4", "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                "bench_servers:flask_app()"]
    if framework == "fastapi":
        return [sys.executable, "-m", "uvicorn", "--factory", "bench_servers:fastapi_app", "--host", "127.0.0.1",
                "--port", str(port), "--log-level", "warning", "--no-access-log"]
    if framework == "aiohttp":
        return [sys.executable, str(HERE / "bench_servers.py"), "--serve", "aiohttp", "--port", str(port)]
    raise ValueError(f"unknown framework {framework!r}: one of {', '.join(FRAMEWORKS)}")


def _get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _ready(port: int, mounted: bool) -> bool:
    try:
        if _get(port, "/")[0] != 200:
            return False
        return not mounted or _get(port, "/api/memory/health")[0] in (200, 503)
    except OSError:
        return False


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextmanager
def running(framework: str, mounted: bool, timeout: float = 90.0,
            stderr: Any = None, hash_seed: int | None = None) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Start ``framework`` (with memdiag mounted or not) on a free loopback port; yield
    ``(port, process)``; stop it with SIGTERM (graceful) afterwards. ``stderr``: where the
    server's log goes (a file object to read it afterwards; default a temporary file);
    ``hash_seed``: the server's PYTHONHASHSEED (default: the environment's)."""
    port = _free_port()
    log = stderr if stderr is not None else tempfile.TemporaryFile()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)]), MOUNT_ENV: "1" if mounted else "0",
           "MEMDIAG_API_TOKEN": TOKEN}
    if hash_seed is not None:
        env["PYTHONHASHSEED"] = str(hash_seed)
    proc = subprocess.Popen(_argv(framework, port), cwd=HERE, env=env, stdout=subprocess.DEVNULL,
                            stderr=log, start_new_session=True)
    try:
        _wait(lambda: proc.poll() is not None or _ready(port, mounted), timeout, f"{framework} on port {port}")
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{framework} exited {proc.returncode}: {log.read()[-2000:].decode(errors='replace')}")
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # our own child
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        if stderr is None:
            log.close()


# -- the load generator ------------------------------------------------------------------------

EXPECTED = {  # memdiag endpoint -> (statuses it may answer, a key its JSON must have)
    "cleanup": ({200, 429}, "performed"),  # a 429 carries the skipped run as "result"
    "configure": ({200}, "config"),
    "status": ({200}, "pid"),
    "health": ({200, 503}, "status"),
}


def _app_client(port: int, stop_at: float, interval: float, budget: list[int], out: dict[str, Any]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    lat, fails = out["latencies"], out["failures"]
    next_at = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= stop_at or budget[0] <= 0:
            break
        budget[0] -= 1
        if next_at > now:
            time.sleep(next_at - now)
        next_at += interval
        t0 = time.perf_counter()
        try:
            conn.request("GET", "/")
            r = conn.getresponse()
            body = r.read()
            if r.will_close:
                conn.close()
            dt = time.perf_counter() - t0
            if 200 <= r.status < 300 and body.startswith(b"{"):
                lat.append(dt)
            else:
                fails[f"status {r.status}"] += 1
        except (OSError, http.client.HTTPException) as exc:
            fails[type(exc).__name__] += 1
            conn.close()
    conn.close()


def _check_memdiag(name: str, status: int, body: bytes, mounted: bool) -> str | None:
    """None when the answer is what docs/http.md says, else what is wrong."""
    if not mounted:
        return None if status == 404 else f"{name}: {status} from a server without memdiag"
    statuses, key = EXPECTED[name]
    if name == "cleanup" and status == 429:
        key = "result"
    if status not in statuses:
        return f"{name}: status {status}: {body[:200]!r}"
    try:
        doc = json.loads(body)
    except ValueError:
        return f"{name}: not JSON: {body[:200]!r}"
    if not isinstance(doc, dict) or key not in doc:
        return f"{name}: no {key!r} in {body[:200]!r}"
    return None


def _mixer(port: int, stop_at: float, period: float, mounted: bool, out: dict[str, Any]) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    calls = [
        ("cleanup", "POST", "/api/memory/cleanup", b"{}"),
        ("configure", "POST", "/api/memory/configure", None),
        ("status", "GET", "/api/memory/status", None),
        ("health", "GET", "/api/memory/health", None),
    ]
    i = 0
    while time.monotonic() < stop_at:
        name, method, path, body = calls[i % len(calls)]
        if name == "configure":
            body = json.dumps({"cache_shrink_fraction": 0.4 + 0.1 * (i % 3)}).encode()
        i += 1
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=auth)
            r = conn.getresponse()
            status, data = r.status, r.read()
            out["memdiag"][f"{name} {status}"] += 1
            problem = _check_memdiag(name, status, data, mounted)
        except (OSError, http.client.HTTPException) as exc:
            problem = f"{name}: {exc!r}"
        finally:
            conn.close()
        if problem:
            out["memdiag_problems"].append(problem)
        time.sleep(max(0.0, min(period, stop_at - time.monotonic())))


def _mixer_main(port: int, seconds: float, period: float, mounted: bool) -> None:
    """The mixer process: waits for the start line on stdin, mixes, prints its results as JSON."""
    out: dict[str, Any] = {"memdiag": Counter(), "memdiag_problems": []}
    print("ready", flush=True)
    sys.stdin.readline()
    _mixer(port, time.monotonic() + seconds, period, mounted, out)
    print(json.dumps(out), flush=True)


def _start_mixer(port: int, seconds: float, period: float, mounted: bool) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(HERE / "bench_servers.py"), "--mixer", str(port), str(seconds),
                             str(period), "1" if mounted else "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"the mixer did not start: {proc.communicate()}")
    return proc


def load(port: int, seconds: float, *, mounted: bool, rate: float = 120.0, clients: int = 6,
         max_requests: int | None = None, mixer_period: float = 0.25) -> dict[str, Any]:
    """Drive one server for ``seconds``; returns requests, latencies (s), failures by cause,
    memdiag answers by "endpoint status" and any memdiag answer that was not well-formed."""
    out: dict[str, Any] = {"latencies": [], "failures": Counter(), "memdiag": Counter(), "memdiag_problems": []}
    budget = [max_requests if max_requests is not None else int(rate * seconds * 1.1) + clients]
    mixer = _start_mixer(port, seconds, mixer_period, mounted) if mixer_period > 0 else None  # 0: app requests only
    stop_at = time.monotonic() + seconds
    threads = [threading.Thread(target=_app_client, args=(port, stop_at, clients / rate, budget, out))
               for _ in range(clients)]
    if mixer is not None:
        mixer.stdin.write("go\n")  # type: ignore[union-attr]
        mixer.stdin.flush()  # type: ignore[union-attr]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    if mixer is not None:
        got = json.loads(mixer.communicate(timeout=seconds + 90)[0].strip().splitlines()[-1])
        out["memdiag"].update(got["memdiag"])
        out["memdiag_problems"] += got["memdiag_problems"]
    out["requests"] = len(out["latencies"]) + sum(out["failures"].values())
    return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# -- instructions per request (--count) ---------------------------------------------------------
# What memdiag adds to each request of the application, free of this machine's noise: the
# app in one process, under cachegrind, with N and 2N requests (the difference over N).
# The memdiag parts are switched on one at a time, without the monitor's threads (their
# work depends on wall time, which cachegrind stretches): "mount" the routes only,
# "origins" the creation-site hooks of leak detection (audit hook, Thread.start, the asyncio
# Task subclass), "heap" the sampled heap profiler at its default interval, "all" the three.

PARTS = ("none", "mount", "origins", "heap", "all")
_ASGI_SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
               "path": "/", "raw_path": b"/", "root_path": "", "query_string": b"", "headers": [(b"host", b"x")],
               "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}  # fmt: skip


def _parts_on(part: str) -> None:
    if part in ("origins", "all"):
        from memdiag.leaks import origins

        origins.install()
    elif part in ("audit", "tasks"):  # ablations of "origins" (--count-run only)
        from memdiag.leaks import origins

        origins._add_audit_hook() if part == "audit" else origins._wrap_tasks()
    if part in ("heap", "all"):
        from memdiag.leaks import heapprof

        heapprof.start(interval_bytes=512 * 1024)


async def _count_fastapi(mount: bool, n: int) -> None:
    from fastapi import FastAPI

    app = FastAPI()
    if mount:
        from memdiag.http.fastapi import memory_router

        app.include_router(memory_router())  # ahead of the app's route, as in the servers above
    app.get("/")(_payload)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    for _ in range(n):
        await app(dict(_ASGI_SCOPE), receive, send)


async def _count_aiohttp(mount: bool, n: int) -> None:
    import asyncio

    from aiohttp import web

    async def index(request: web.Request) -> web.Response:
        return web.json_response(_payload())

    app = web.Application()
    if mount:
        from memdiag.http.aiohttp import add_memory_routes

        add_memory_routes(app)
    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(n):  # a keep-alive client on the same loop: its cost is the same in every run
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        await reader.readexactly(length)
    writer.close()
    await runner.cleanup()


def _count_run(framework: str, part: str, n: int) -> None:
    """The process cachegrind runs: 50 requests of warm-up, then ``n``."""
    import asyncio

    run = {"fastapi": _count_fastapi, "aiohttp": _count_aiohttp}[framework]
    mount = part in ("mount", "all")
    _parts_on(part)
    asyncio.run(run(mount, 50 + n))


def _instructions(framework: str, part: str, n: int) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)]), "PYTHONHASHSEED": "0"}
    out = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                          sys.executable, str(HERE / "bench_servers.py"), "--count-run", framework, part, str(n)],
                         capture_output=True, text=True, timeout=3600, env=env)  # fmt: skip
    m = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if out.returncode != 0 or not m:
        raise SystemExit(f"cachegrind {framework}/{part} failed: {out.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def count(frameworks: list[str], n: int) -> None:
    print(f"instructions per request under cachegrind: (run with {2 * n} requests - run with {n}) / {n}, "
          f"one process, PYTHONHASHSEED=0")
    for fw in frameworks:
        if fw not in ("fastapi", "aiohttp"):
            print(f"{fw:8s} (not counted: gunicorn's workers are separate processes)")
            continue
        per = {p: (_instructions(fw, p, 2 * n) - _instructions(fw, p, n)) / n for p in PARTS}
        print(f"{fw:8s} " + "  ".join(f"{p} {v / 1e3:.0f}k ({v / per['none'] - 1:+.1%})" for p, v in per.items()),
              flush=True)


# -- the benchmark -----------------------------------------------------------------------------


ROLES = ("with", "without", "control")  # control: a second server without memdiag (A/A)


def _round(framework: str, roles: tuple[str, ...], r: int, seconds: float, warmup: float,
           kw: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], bool]:
    """One round on fresh servers (one per role, the same PYTHONHASHSEED): warm-up, then
    each server measured in turn, in an order that rotates over the rounds."""
    mounted = {k: k == "with" for k in roles}
    out: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        ports = {k: stack.enter_context(running(framework, mounted[k], hash_seed=r + 1))[0] for k in roles}
        for k in roles:  # not measured: imports, first requests, memdiag's first sample and profile
            load(ports[k], warmup, mounted=mounted[k], **kw)
        order = roles[r % len(roles):] + roles[: r % len(roles)]
        for k in order if r % 2 == 0 else order[::-1]:
            out[k] = load(ports[k], seconds, mounted=mounted[k], **kw)
        healthy = all(_ready(ports[k], mounted[k]) for k in roles)
    return out, healthy


def bench(framework: str, rounds: int, seconds: float, rate: float, clients: int,
          mixer_period: float = 0.25, control: bool = True, warmup: float = 10.0) -> dict[str, Any]:
    """``rounds`` rounds, each on new server processes: a server process's own speed varies
    by up to ~20 % at p50 (the A/A ratio of two plain FastAPI servers ran 0.98-1.23 over
    runs that kept their servers), which fresh processes each round average out."""
    roles = ROLES if control else ROLES[:2]
    res: dict[str, list[dict[str, Any]]] = {k: [] for k in roles}
    kw = {"rate": rate, "clients": clients, "mixer_period": mixer_period}
    healthy = True
    for r in range(rounds):
        got, ok = _round(framework, roles, r, seconds, warmup, kw)
        healthy = healthy and ok
        for k in roles:
            res[k].append(got[k])
        print(f"  {framework} round {r + 1}: p99 " + ", ".join(
            f"{k} {_pct(res[k][-1]['latencies'], .99) * 1e3:.2f} ms" for k in roles), flush=True)
    return {"rounds": res, "healthy_after": healthy}


def _ratio_line(framework: str, label: str, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    ratios = [_pct(x["latencies"], .99) / _pct(y["latencies"], .99) for x, y in zip(a, b)]
    med = [statistics.median(_pct(x["latencies"], q) for x in rs) for rs in (a, b) for q in (.50, .99)]
    print(f"{framework:8s} {label}: p99 median of medians {med[1] / med[3]:.2f}, per-round ratios "
          f"{min(ratios):.2f}-{max(ratios):.2f} (median {statistics.median(ratios):.2f}); p50 {med[0] / med[2]:.2f}")


def summarize(framework: str, result: dict[str, Any]) -> None:
    labels = {"with": "with memdiag   ", "without": "without memdiag", "control": "control (A/A)  "}
    for k, rs in result["rounds"].items():
        fails: Counter[str] = sum((x["failures"] for x in rs), Counter())
        p50 = statistics.median(_pct(x["latencies"], .50) for x in rs) * 1e3
        p99 = statistics.median(_pct(x["latencies"], .99) for x in rs) * 1e3
        causes = ", ".join(f"{c}: {v}" for c, v in sorted(fails.items())) or "none"
        print(f"{framework:8s} {labels[k]}  requests {sum(x['requests'] for x in rs):6d}  failures "
              f"{sum(fails.values())} ({causes})  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
    rounds = result["rounds"]
    _ratio_line(framework, "with/without   ", rounds["with"], rounds["without"])
    if "control" in rounds:
        _ratio_line(framework, "control/without", rounds["control"], rounds["without"])
    answers: Counter[str] = sum((x["memdiag"] for x in rounds["with"]), Counter())
    problems = [p for rs in rounds.values() for x in rs for p in x["memdiag_problems"]]
    print(f"{framework:8s} memdiag answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(answers.items())))
    print(f"{framework:8s} malformed memdiag answers: {len(problems)} {problems[:3]}; "
          f"healthy after: {result['healthy_after']}")
    _bars(framework, rounds)


def _pooled_p99_ratios(rounds: dict[str, list[dict[str, Any]]], resamples: int = 1000
                       ) -> dict[str, tuple[float, float, float]]:  # fmt: skip
    """p99 of every request of every round, pooled per server role, as a ratio to the server
    without memdiag ("with", and "control": the A/A), with a 95 % percentile-bootstrap
    interval that resamples whole rounds (the same rounds for every role: a round's servers
    ran side by side). A server process keeps its own speed for its life, so the rounds,
    not the requests, are the independent draws; pooling puts every request in the tail
    estimate instead of a handful per round. Seeded."""
    import random

    roles = [k for k in ("with", "control") if k in rounds]
    srt = {k: [sorted(x["latencies"]) for x in rs] for k, rs in rounds.items()}
    n = len(rounds["without"])

    def p99(role: str, idx: list[int]) -> float:
        return _pct([v for i in idx for v in srt[role][i]], .99)

    every = list(range(n))
    point = {k: p99(k, every) / p99("without", every) for k in roles}
    rng = random.Random(1)
    draws: dict[str, list[float]] = {k: [] for k in roles}
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        base = p99("without", idx)
        for k in roles:
            draws[k].append(p99(k, idx) / base)
    out = {}
    for k in roles:
        d = sorted(draws[k])
        out[k] = (point[k], d[int(0.025 * resamples)], d[int(0.975 * resamples) - 1])
    return out


def _bars(framework: str, rounds: dict[str, list[dict[str, Any]]]) -> None:
    """The bar lines run_all.py composes the summary of docs/benchmarks.md from (issue 16).
    p99 within 5 %: the pooled p99 ratio's bootstrap interval (_pooled_p99_ratios) within
    1.05 is "met", above it "NOT met", across it "not shown"; "not shown" too when the A/A
    control's interval excludes 1 by more than the bar (the rounds do not hold the spread
    between server processes then). The median over rounds of each round's p99 is printed
    beside it, as before."""
    def p99(rs: list[dict[str, Any]]) -> float:
        return statistics.median(_pct(x["latencies"], .99) for x in rs)

    med = p99(rounds["with"]) / p99(rounds["without"])
    med_aa = p99(rounds["control"]) / p99(rounds["without"]) if "control" in rounds else None
    pooled = _pooled_p99_ratios(rounds)
    r, lo, hi = pooled["with"]
    result = "met" if hi <= 1.05 else "NOT met" if lo > 1.05 else "not shown"
    if "control" in pooled:
        aa, alo, ahi = pooled["control"]
        if not alo <= 1.0 <= ahi and abs(aa - 1) > 0.05:
            result = "not shown"
        control = f"A/A {aa:.2f} CI [{alo:.2f}-{ahi:.2f}]"
    else:
        result = "not shown"  # no control: nothing says what the noise alone does
        control = "no A/A control"
    medians = f"median of rounds {med:.2f}" + (f", A/A {med_aa:.2f}" if med_aa is not None else "")
    print(f"- bar: {framework} p99 with memdiag within 5 % of without: {result} (pooled p99 ratio {r:.2f} "
          f"CI [{lo:.2f}-{hi:.2f}]; {control}; {medians})")
    failed = sum(sum(x["failures"].values()) for x in rounds["with"])
    total = sum(x["requests"] for x in rounds["with"])
    print(f"- bar: {framework} no failed request with memdiag: {'met' if not failed else 'NOT met'} "
          f"({failed} of {total})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=30.0, help="load per server per round")
    ap.add_argument("--rate", type=float, default=120.0, help="application requests per second, all clients")
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--mixer-period", type=float, default=0.25,
                    help="seconds between memdiag requests (cleanup, configure, status, health); 0: none")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds of unmeasured load on each server first")
    ap.add_argument("--no-control", action="store_true", help="no A/A control server (a third of the time saved)")
    ap.add_argument("--short", action="store_true", help="2 rounds of 4 s")
    ap.add_argument("--rt", action="store_true",
                    help="run the load generator, the mixer and the servers at real-time priority (SCHED_FIFO 10; root)")
    ap.add_argument("--serve", choices=["aiohttp"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--count", action="store_true", help="instructions per request under cachegrind, by memdiag part")
    ap.add_argument("--count-requests", type=int, default=300, help="--count: requests in the shorter run")
    ap.add_argument("--count-run", nargs=3, help=argparse.SUPPRESS)  # framework part n: the counted process
    ap.add_argument("--mixer", nargs=4, help=argparse.SUPPRESS)  # port seconds period mounted: the mixer process
    a = ap.parse_args(argv)
    if a.serve:
        aiohttp_main(a.port)
        return 0
    if a.count_run:
        _count_run(a.count_run[0], a.count_run[1], int(a.count_run[2]))
        return 0
    if a.count:
        count(a.frameworks.split(","), a.count_requests)
        return 0
    if a.mixer:
        _mixer_main(int(a.mixer[0]), float(a.mixer[1]), float(a.mixer[2]), a.mixer[3] == "1")
        return 0
    if a.short:
        a.rounds, a.seconds = 2, 4.0
    if a.rt:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))  # the servers and the mixer inherit it
    with open("/proc/loadavg") as f:
        print(f"load average {f.read().split()[0]} on {os.cpu_count()} cores; {a.rounds} rounds x {a.seconds:g} s "
              f"per server after {a.warmup:g} s of warm-up, {a.rate:g} req/s over {a.clients} clients, memdiag "
              f"requests every {a.mixer_period:g} s"
              + ("; at real-time priority (SCHED_FIFO 10): other processes wait" if a.rt else ""), flush=True)
    for fw in a.frameworks.split(","):
        summarize(fw, bench(fw, a.rounds, a.seconds, a.rate, a.clients, a.mixer_period, not a.no_control, a.warmup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
