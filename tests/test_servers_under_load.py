"""Issue 16, real servers under load: gunicorn (4 workers) + Flask, uvicorn + FastAPI and
aiohttp, each with memdiag mounted, driven by the load generator of
benchmarks/bench_servers.py (its short form) with cleanup, configure, status and health
requests mixed in. Behaviour only, not timing (the timing is the benchmark's): no failed
application request, every memdiag answer well-formed (cleanup 200 or 429), the server
healthy afterwards."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_servers.py"
_spec = importlib.util.spec_from_file_location("bench_servers", BENCH)
assert _spec and _spec.loader
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("framework", ["flask", "fastapi", "aiohttp"])
def test_server_under_load_with_memdiag(framework: str) -> None:
    pytest.importorskip({"flask": "gunicorn", "fastapi": "uvicorn", "aiohttp": "aiohttp"}[framework])
    with bench.running(framework, mounted=True) as (port, proc):
        out = bench.load(port, 4.0, mounted=True, rate=100.0, clients=4, mixer_period=0.1)
        assert proc.poll() is None, "the server died under load"
        assert bench._ready(port, True), "the server is not healthy after the load"
        status, body = bench._get(port, "/api/memory/health")
        health = json.loads(body)
    assert out["requests"] >= 100, out["requests"]
    assert not out["failures"], out["failures"]
    assert not out["memdiag_problems"], out["memdiag_problems"][:5]
    answers = out["memdiag"]
    for name in ("cleanup", "configure", "status", "health"):
        assert any(k.startswith(name + " ") for k in answers), (name, answers)
    assert {k for k in answers if k.startswith("cleanup ")} <= {"cleanup 200", "cleanup 429"}, answers
    assert status in (200, 503) and health["status"] in ("pass", "warn", "fail"), health
