"""Node.js children with the memdiag agent, against the real `node` on this machine."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import memdiag
from memdiag.processes.node import NodeProcess, spawn_node
from memdiag.service import MemoryDiagnostics

from .conftest import wait_for

MIB = 1024 * 1024

# A program with its own IPC protocol: it grows or drops a heap on request and answers.
GROW_JS = """
let hoard = [];
process.on('message', (m) => {
  if (m.fill) { for (let i = 0; i < m.fill; i++) hoard.push(new Array(128 * 1024).fill(i)); }
  if (m.drop) hoard = [];
  if (m.exit) { process.disconnect(); return; }
  process.send({ok: true, got: m, items: hoard.length});
});
"""


@pytest.fixture
def grow_script(tmp_path: Path) -> str:
    path = tmp_path / "grow.js"
    path.write_text(GROW_JS)
    return str(path)


@pytest.fixture
def nodes() -> Iterator[list[NodeProcess]]:
    procs: list[NodeProcess] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(5)


def test_node_heap_is_sampled_counts_as_pressure_and_gc_frees_it(
    diag: MemoryDiagnostics, grow_script: str, nodes: list[NodeProcess]
) -> None:
    replies: list[dict] = []
    p = spawn_node([grow_script], report_interval=0.1, heap_limit_mb=100, on_message=replies.append)
    nodes.append(p)
    wait_for(lambda: p.agent is not None, what="agent hello")
    assert p.agent["gc"] is True and p.agent["node"].startswith("v")
    p.send({"fill": 130})  # ~130 MiB of JS arrays
    wait_for(lambda: replies, what="program reply")
    assert replies[0]["items"] == 130 and "cmd" not in replies[0]
    wait_for(lambda: p.usage and p.usage["heapUsed"] > 100 * MIB, what="heap report over 100 MiB")
    _, state = diag.tick()
    sig = next(s for s in state.signals if s["signal"] == "node_heap" and s["detail"] == f"pid {p.pid}")
    assert sig["value"] > 100 * MIB and sig["level"] == "critical"
    item = next(it for it in diag.subprocesses() if it["pid"] == p.pid)
    assert item["owned"] and item["kind"] == "node" and item["node"]["heap_used_bytes"] > 100 * MIB
    for key in ("heap_total_bytes", "external_bytes", "array_buffers_bytes", "rss_bytes"):
        assert item["node"][key] is not None
    assert any(n["pid"] == p.pid for n in diag.diagnostics()["processes"]["node"])
    p.send({"drop": 1})
    wait_for(lambda: len(replies) == 2, what="drop reply")
    result = diag.cleanup(force=True)
    rung = next(a for a in result["actions"] if a["name"] == "node_gc")
    assert rung["error"] is None and rung["count"] >= 1
    assert rung["freed_bytes"] >= 100 * MIB
    assert p.usage["heapUsed"] < 30 * MIB
    _, state = diag.tick()
    assert all(s["level"] == "ok" for s in state.signals if s["signal"] == "node_heap")


def test_program_ipc_works_and_never_sees_agent_messages(grow_script: str, nodes: list[NodeProcess]) -> None:
    replies: list[dict] = []
    p = spawn_node([grow_script], report_interval=0.05, on_message=replies.append)
    nodes.append(p)
    wait_for(lambda: p.agent is not None, what="agent hello")
    usage = p.request_usage()
    assert usage is not None and usage["heapUsed"] > 0
    assert p.gc()["ok"]
    p.send({"ping": 1})
    wait_for(lambda: replies, what="reply")
    seen: set[float] = set()  # several agent reports go by (each one stamps p.usage)
    wait_for(lambda: seen.add((p.usage or {}).get("time", 0.0)) or len(seen) > 3, timeout=30, what="agent reports")
    assert replies == [{"ok": True, "got": {"ping": 1}, "items": 0}]
    p.send({"exit": 1})  # the program disconnects; nothing keeps it alive
    assert p.wait(10) == 0
    wait_for(lambda: not p.connected, what="channel closed")
    assert p.gc()["ok"] is False


def test_short_program_exits_and_grandchildren_do_not_inherit_the_agent(nodes: list[NodeProcess]) -> None:
    code = (
        "const r = require('child_process').spawnSync(process.execPath, ['-e', "
        "'console.log(JSON.stringify("
        "{opts: process.env.NODE_OPTIONS || null, gc: typeof gc, send: typeof process.send}))'],"
        " {encoding: 'utf8'}); process.stdout.write(r.stdout);"
    )
    p = spawn_node(["-e", code], stdout=subprocess.PIPE, env={**os.environ, "NODE_OPTIONS": "--max-old-space-size=128"})
    nodes.append(p)
    out, _ = p.communicate(timeout=60)  # an agent that kept the program alive would never let it exit
    assert p.returncode == 0
    child = json.loads(out)
    assert child == {"opts": "--max-old-space-size=128", "gc": "undefined", "send": "undefined"}


def test_spawn_node_is_exported() -> None:
    assert memdiag.spawn_node is spawn_node and memdiag.NodeProcess is NodeProcess
