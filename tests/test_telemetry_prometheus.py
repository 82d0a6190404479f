"""Prometheus: the collector in prometheus_client's default registry (no duplicate
families), multiprocess mode across real forked workers, and the standalone exposition
checked by prometheus_client's parser and by the real ``promtool check metrics``."""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import memdiag
from memdiag.config import MemoryConfig
from memdiag.http.server import start_api_server
from memdiag.service import MemoryDiagnostics
from memdiag.telemetry import prometheus
from memdiag.telemetry.families import MAX_CACHES, memdiag_families

# Families a fleet needs, present whatever the machine (no cgroup or PSI needed).
NEEDED = {
    "memdiag_pressure_level",
    "memdiag_pressure_state",
    "memdiag_pressure_signal_ratio",
    "memdiag_process_rss_bytes",
    "memdiag_children",
    "memdiag_zombie_processes",
    "memdiag_cache_hits",
    "memdiag_cache_misses",
    "memdiag_cache_evictions",
    "memdiag_cache_bytes",
    "memdiag_cleanup_runs",
    "memdiag_cleanup_freed_bytes",
    "memdiag_growth_rate_per_second",
}

STANDALONE = """
import sys
sys.modules["prometheus_client"] = None  # as if it were not installed
import memdiag
from memdiag import SharedPromptCache
cache = SharedPromptCache(max_bytes=1 << 20, name='prompts "quoted"\\nand a newline')
cache.set("a", "b" * 1000); cache.get("a"); cache.get("missing")
diag = memdiag.start(sample_interval=0.05, leak_detection=False)
for _ in range(5):
    diag.tick(profile=True)
diag.cleanup(force=True)
from memdiag.http.metrics import render
sys.stdout.write(render(diag))
"""


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (.ci/run does)"
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def family_names(text: str) -> list[str]:
    return [f.name for f in text_string_to_metric_families(text)]


def no_duplicates(text: str) -> None:
    dup = [n for n, c in collections.Counter(family_names(text)).items() if c > 1]
    assert not dup, f"duplicate families: {dup}"
    types = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE ")]
    assert len(types) == len(set(types)), "a family is announced twice"


@pytest.fixture
def collector() -> Iterator[None]:
    yield
    prometheus.uninstall()


def test_standalone_exposition_is_valid_without_prometheus_client() -> None:
    r = subprocess.run([sys.executable, "-c", STANDALONE], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    names = set(family_names(text))  # prometheus_client's own parser accepts it
    assert NEEDED <= names, NEEDED - names
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "process_start_time_seconds"} <= names
    assert 'cache="prompts \\"quoted\\"\\nand a newline"' in text  # escaped, still one series
    no_duplicates(text)
    promtool_check(text)


def test_collector_joins_the_default_registry_without_duplicate_families(collector: None, shared) -> None:
    from memdiag import SharedPromptCache

    cache = SharedPromptCache(max_bytes=1 << 20, name="registry-test")
    cache.set("k", "v")
    for _ in range(5):
        shared.tick(profile=True)
    text = generate_latest(REGISTRY).decode()  # what an app's own /metrics would serve
    names = family_names(text)
    assert NEEDED <= set(names)
    assert names.count("process_resident_memory_bytes") == 1  # prometheus_client's, not a second one
    no_duplicates(text)
    promtool_check(text)
    server = start_api_server(shared, port=0, token="prometheus-test-token-0123", announce=False)
    try:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
            served = resp.read().decode()
    finally:
        server.close()
    assert NEEDED <= set(family_names(served))
    no_duplicates(served)
    promtool_check(served)


def test_cache_labels_are_bounded(clean_registry: None, fast_config: MemoryConfig) -> None:
    from memdiag import SharedPromptCache

    caches = [SharedPromptCache(max_bytes=1 << 16, name=f"c{i:02d}") for i in range(MAX_CACHES + 5)]
    for i, c in enumerate(caches):
        c.set("k", "v" * (10 * i + 1))
    d = MemoryDiagnostics(fast_config)
    try:
        d.tick()
        (fam,) = [f for f in memdiag_families(d) if f.name == "memdiag_cache_bytes"]
    finally:
        d.close()
    names = [v[0] for v, _ in fam.samples]
    assert len(names) == MAX_CACHES and names[-1] == "other"
    assert sum(v for _, v in fam.samples) == sum(c.metrics()["bytes"] for c in caches)  # nothing lost


WORKERS = """
import json, os, sys, time
import memdiag
from memdiag.telemetry import prometheus
prometheus.MIRROR_EVERY = 0.1
diag = memdiag.start(sample_interval=0.05, leak_detection=False)  # the master (pre-fork)
pids = []
done_r, done_w = os.pipe()
for _ in range(2):
    pid = os.fork()
    if pid == 0:  # a worker: its monitor restarts after fork and mirrors its own values
        os.close(done_w)
        os.read(done_r, 1)  # until the master has seen every worker (or gave up)
        os._exit(0)
    pids.append(pid)
os.close(done_r)


def workers_seen(text):
    return all(f'pid="{p}"' in text for p in pids)


deadline = time.monotonic() + 30  # a loaded machine: a worker's first mirror can take seconds
text = prometheus.exposition(diag)
while not workers_seen(text) and time.monotonic() < deadline:
    time.sleep(0.05)
    text = prometheus.exposition(diag)
os.close(done_w)
for pid in pids:
    os.waitpid(pid, 0)
print(json.dumps({"workers": pids, "text": text}))
"""


@pytest.mark.slow
def test_multiprocess_mode_serves_every_worker(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WORKERS)], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    rss = {}
    for fam in text_string_to_metric_families(data["text"]):
        if fam.name == "memdiag_process_rss_bytes":
            rss = {s.labels["pid"]: s.value for s in fam.samples}
    assert {str(p) for p in data["workers"]} <= set(rss), rss  # each worker, whichever answered
    assert all(v > 0 for v in rss.values())
    no_duplicates(data["text"])
    promtool_check(data["text"])
