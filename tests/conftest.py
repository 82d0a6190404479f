"""Shared fixtures: fresh monitors with fast intervals, isolated runtime/config dirs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import memdiag
from memdiag import registry
from memdiag.config import MemoryConfig
from memdiag.service import MemoryDiagnostics


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test gets its own runtime and config directories, and no MEMDIAG_* leaks in."""
    base = tmp_path_factory.mktemp("memdiag-env")
    for key in list(os.environ):
        if key.startswith("MEMDIAG_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MEMDIAG_RUNTIME_DIR", str(base / "run"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(base / "state"))  # history files (on by default)
    yield
    MemoryDiagnostics.reset_instance()
    cache_mod = sys.modules.get("memdiag.cache")
    if cache_mod is not None:  # the process-wide cache must not leak into the next test
        cache_mod.SharedPromptCache.reset_instance()


@pytest.fixture
def fast_config() -> MemoryConfig:
    """A config that reacts within a test's patience (no sustain, quick samples)."""
    return MemoryConfig(
        sample_interval=0.05,
        profile_interval=1.0,
        sustain_seconds=0.0,
        recovery_seconds=0.0,
        cleanup_cooldown=0.0,
        enable_auto_cleanup=False,
    )


@pytest.fixture
def diag(fast_config: MemoryConfig) -> Iterator[MemoryDiagnostics]:
    """A stopped, non-shared MemoryDiagnostics with ``fast_config``."""
    d = MemoryDiagnostics(fast_config)
    try:
        yield d
    finally:
        d.close()


@pytest.fixture
def shared(fast_config: MemoryConfig) -> Iterator[MemoryDiagnostics]:
    """The shared instance, started with ``fast_config``; stopped afterwards."""
    d = memdiag.start(fast_config)
    try:
        yield d
    finally:
        memdiag.stop()
        MemoryDiagnostics.reset_instance()


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """A list to put real child processes in; every one is killed and reaped afterwards."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream is not None:
                stream.close()


def spawn_sleeper(seconds: float = 60.0) -> subprocess.Popen[bytes]:
    """A real Python child that sleeps (killed by the ``children`` fixture)."""
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """Hide caches other tests left alive; remove rungs, signals, collectors, sections,
    observers and walk roots a test added."""
    with registry._lock:
        hidden_caches = dict(registry._caches)
        registry._caches.clear()
    before_actions = {a.name for a in registry.cleanup_actions()}
    before_signals = set(registry.signal_sources())
    before_collectors = set(registry.collectors())
    before_sections = set(registry.sections())
    before_observers = set(registry.observers())
    before_roots = registry.walk_roots()
    yield
    for a in registry.cleanup_actions():
        if a.name not in before_actions:
            registry.unregister_cleanup(a.name)
    for n in set(registry.signal_sources()) - before_signals:
        registry.unregister_signal(n)
    for n in set(registry.collectors()) - before_collectors:
        registry.unregister_collector(n)
    for n in set(registry.sections()) - before_sections:
        registry.unregister_section(n)
    for n in set(registry.observers()) - before_observers:
        registry.unregister_observer(n)
    for pid in registry.walk_roots() - before_roots:
        registry.discard_walk_root(pid)
    with registry._lock:
        registry._caches.update(hidden_caches)


def wait_for(cond: Callable[[], object], timeout: float = 30.0, what: str = "condition", step: float = 0.01) -> Any:
    """Poll ``cond()`` every ``step`` seconds; return its first truthy value, or fail after
    ``timeout`` seconds naming ``what``. The timeout detects a failure; it is not an expected
    speed: on a loaded machine (the whole suite twice at once on 2 cores) a child Python
    process can take over 10 s to start."""
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)
