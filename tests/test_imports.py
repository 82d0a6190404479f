"""Importing memdiag is cheap: no threads, no frameworks, no tracemalloc; the API is curated."""

from __future__ import annotations

import json
import subprocess
import sys

import memdiag

HEAVY = ("fastapi", "flask", "aiohttp", "starlette", "uvicorn", "click", "asyncio", "sqlite3", "http.server")


def test_import_starts_nothing_and_loads_no_framework() -> None:
    code = (
        "import sys, threading, tracemalloc, json\n"
        "before = set(sys.modules)\n"
        "import memdiag\n"
        "print(json.dumps({'threads': threading.active_count(), 'tracing': tracemalloc.is_tracing(),"
        " 'mods': sorted(set(sys.modules) - before)}))\n"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert out["threads"] == 1 and out["tracing"] is False
    loaded = [m for m in out["mods"] if m.split(".")[0] in {h.split(".")[0] for h in HEAVY} and m in HEAVY]
    assert loaded == [], loaded


def test_a_running_monitor_imports_no_dataclasses_nor_inspect() -> None:
    """``dataclasses`` brings ``inspect``, ``ast`` and ``dis``: ~1 MiB of the monitor's own
    memory in every process (issue 17's <= 8 MiB); memdiag's records are built without it."""
    code = (
        "import sys, json, time, memdiag\n"
        "memdiag.start(leak_detection=True)\n"
        "time.sleep(1.5)\n"
        "memdiag.get_diagnostics(); memdiag.leaks_report()\n"
        "print(json.dumps(sorted(m for m in ('dataclasses', 'inspect', 'ast', 'dis') if m in sys.modules)))\n"
        "memdiag.stop()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [], out.stderr[-2000:]


def test_all_is_sorted_and_every_name_resolves() -> None:
    names = [n for n in memdiag.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in memdiag.__all__:
        assert getattr(memdiag, name) is not None, name


def test_bad_http_address_is_refused_before_anything_starts() -> None:
    import pytest

    from memdiag.service import MemoryDiagnostics

    for bad in ("localhost:http", "127.0.0.1:70000", "nonsense"):
        with pytest.raises(memdiag.ConfigError) as info:
            memdiag.start(http=bad)
        assert "http" in info.value.errors
    inst = MemoryDiagnostics._instance
    assert inst is None or not inst.running
