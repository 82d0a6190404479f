"""Real servers under load, with and without memdiag mounted (issue 16).

Three servers, each a real process on 127.0.0.1 serving a small JSON endpoint ``GET /``:

  flask     gunicorn, 4 sync workers, Flask, ``memory_blueprint()`` registered
  fastapi   uvicorn (one process), FastAPI, ``memory_router()`` included
  aiohttp   ``aiohttp.web.run_app``, ``add_memory_routes(app)``

"with" runs call ``memdiag.start()`` at import (default settings) and mount the API as
docs/http.md says; "without" runs are the same app without either. Both servers of a
framework run side by side and the rounds alternate (with, without, with, ...; the first
of each pair alternates too), so the noise of this shared machine falls on both.

The load generator is this process: ``--clients`` threads, each on its own keep-alive
connection (``http.client``; gunicorn's sync workers close after each answer, the client
reconnects), each pacing ``GET /`` at ``--rate / --clients`` per second, bounded by
``--seconds`` and by ``--max-requests``. Beside them one mixer thread sends, about once a
second, ``POST /api/memory/cleanup`` ``{}``, ``POST /api/memory/configure``
``{"cache_shrink_fraction": ...}``, ``GET /api/memory/status`` and the health check (the
same requests go to the server without memdiag and get 404 there: the same load). A
failure is an application request that did not answer 2xx or raised, counted by cause.
Every memdiag answer is checked: JSON of the documented shape, cleanup 200 or 429.

Per framework it prints requests, failures by cause, p50/p99 (medians over rounds),
the p99 ratio with/without (median and the range of the per-round ratios) and the memdiag
answers by endpoint and status.

    python benchmarks/bench_servers.py [--rounds 6] [--seconds 30] [--rate 120] [--clients 6]
    python benchmarks/bench_servers.py --short          # 2 rounds of 4 s: about 20 s a framework
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
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
            stderr: Any = None) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Start ``framework`` (with memdiag mounted or not) on a free loopback port; yield
    ``(port, process)``; stop it with SIGTERM (graceful) afterwards. ``stderr``: where the
    server's log goes (a file object to read it afterwards; default a temporary file)."""
    port = _free_port()
    log = stderr if stderr is not None else tempfile.TemporaryFile()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)]), MOUNT_ENV: "1" if mounted else "0",
           "MEMDIAG_API_TOKEN": TOKEN}
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


def load(port: int, seconds: float, *, mounted: bool, rate: float = 120.0, clients: int = 6,
         max_requests: int | None = None, mixer_period: float = 0.25) -> dict[str, Any]:
    """Drive one server for ``seconds``; returns requests, latencies (s), failures by cause,
    memdiag answers by "endpoint status" and any memdiag answer that was not well-formed."""
    out: dict[str, Any] = {"latencies": [], "failures": Counter(), "memdiag": Counter(), "memdiag_problems": []}
    budget = [max_requests if max_requests is not None else int(rate * seconds * 1.1) + clients]
    stop_at = time.monotonic() + seconds
    threads = [threading.Thread(target=_app_client, args=(port, stop_at, clients / rate, budget, out))
               for _ in range(clients)]
    if mixer_period > 0:  # 0: application requests only
        threads.append(threading.Thread(target=_mixer, args=(port, stop_at, mixer_period, mounted, out)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    out["requests"] = len(out["latencies"]) + sum(out["failures"].values())
    return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# -- the benchmark -----------------------------------------------------------------------------


def bench(framework: str, rounds: int, seconds: float, rate: float, clients: int,
          mixer_period: float = 0.25) -> dict[str, Any]:
    res: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    with ExitStack() as stack:
        ports = {m: stack.enter_context(running(framework, m))[0] for m in (True, False)}
        for r in range(rounds):
            order = (True, False) if r % 2 == 0 else (False, True)
            for m in order:
                res[m].append(load(ports[m], seconds, mounted=m, rate=rate, clients=clients,
                                   mixer_period=mixer_period))
            w, wo = res[True][-1], res[False][-1]
            print(f"  {framework} round {r + 1}: p99 with {_pct(w['latencies'], .99) * 1e3:.2f} ms, "
                  f"without {_pct(wo['latencies'], .99) * 1e3:.2f} ms", flush=True)
        healthy = {m: _ready(ports[m], m) for m in (True, False)}
    return {"rounds": res, "healthy_after": healthy}


def summarize(framework: str, result: dict[str, Any]) -> None:
    rows = []
    for m in (True, False):
        rs = result["rounds"][m]
        fails: Counter[str] = sum((x["failures"] for x in rs), Counter())
        p50 = statistics.median(_pct(x["latencies"], .50) for x in rs) * 1e3
        p99 = statistics.median(_pct(x["latencies"], .99) for x in rs) * 1e3
        rows.append((m, sum(x["requests"] for x in rs), fails, p50, p99))
    for m, n, fails, p50, p99 in rows:
        label = "with memdiag   " if m else "without memdiag"
        causes = ", ".join(f"{k}: {v}" for k, v in sorted(fails.items())) or "none"
        print(f"{framework:8s} {label}  requests {n:6d}  failures {sum(fails.values())} ({causes})  "
              f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
    ratios = [_pct(w["latencies"], .99) / _pct(o["latencies"], .99)
              for w, o in zip(result["rounds"][True], result["rounds"][False])]
    print(f"{framework:8s} p99 with/without: median of medians {rows[0][4] / rows[1][4]:.2f}, "
          f"per-round ratios {min(ratios):.2f}-{max(ratios):.2f} (median {statistics.median(ratios):.2f})")
    answers: Counter[str] = sum((x["memdiag"] for x in result["rounds"][True]), Counter())
    problems = [p for x in result["rounds"][True] + result["rounds"][False] for p in x["memdiag_problems"]]
    print(f"{framework:8s} memdiag answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(answers.items())))
    print(f"{framework:8s} malformed memdiag answers: {len(problems)} {problems[:3]}; "
          f"healthy after: {result['healthy_after'][True] and result['healthy_after'][False]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=30.0, help="load per server per round")
    ap.add_argument("--rate", type=float, default=120.0, help="application requests per second, all clients")
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--mixer-period", type=float, default=0.25,
                    help="seconds between memdiag requests (cleanup, configure, status, health); 0: none")
    ap.add_argument("--short", action="store_true", help="2 rounds of 4 s")
    ap.add_argument("--serve", choices=["aiohttp"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        aiohttp_main(a.port)
        return 0
    if a.short:
        a.rounds, a.seconds = 2, 4.0
    with open("/proc/loadavg") as f:
        print(f"load average {f.read().split()[0]} on {os.cpu_count()} cores; {a.rounds} rounds x {a.seconds:g} s "
              f"per server, {a.rate:g} req/s over {a.clients} clients", flush=True)
    for fw in a.frameworks.split(","):
        summarize(fw, bench(fw, a.rounds, a.seconds, a.rate, a.clients, a.mixer_period))
    return 0


if __name__ == "__main__":
    sys.exit(main())
