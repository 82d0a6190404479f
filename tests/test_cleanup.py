"""The cleanup ladder: order, measurement, single-flight, cooldown, dry run, re-checks."""

from __future__ import annotations

import threading

import pytest

from memdiag import registry
from memdiag.cleanup import CleanupLadder
from memdiag.config import MemoryConfig

from .conftest import wait_for


class FakeCache:
    """A minimal ManagedCache holding real bytes (the SharedPromptCache has its own tests)."""

    def __init__(self, name: str, n: int, size: int) -> None:
        self.name = name
        # Touched pages (not calloc zeros), so RSS really holds them.
        self.items = [bytes([i % 251 + 1]) * size for i in range(n)]
        self.size = size
        self.calls: list[str] = []

    def metrics(self) -> dict:
        b = len(self.items) * self.size
        return {"name": self.name, "entries": len(self.items), "bytes": b, "max_bytes": 10 * b or 1, "fill_ratio": 0.1}

    def shrink(self, fraction: float) -> int:
        self.calls.append(f"shrink:{fraction}")
        k = int(len(self.items) * fraction)
        del self.items[:k]
        return k * self.size

    def clear(self, cause: str = "manual") -> int:
        self.calls.append(f"clear:{cause}")
        freed = len(self.items) * self.size
        self.items.clear()
        return freed


def ladder(cfg: MemoryConfig, checker=None) -> CleanupLadder:
    from memdiag.cleanup import install_builtin_actions

    install_builtin_actions(lambda: cfg)
    return CleanupLadder(lambda: cfg, checker)


def test_rungs_run_cheapest_first_and_are_measured(clean_registry) -> None:
    cache = FakeCache("c1", 100, 100_000)
    registry.register_cache(cache)
    order: list[str] = []
    registry.register_cleanup("user", lambda ctx: order.append("user") or {"count": 3, "detail": "done"})
    result = ladder(MemoryConfig(cleanup_cooldown=0)).run(force=True).to_dict()
    names = [a["name"] for a in result["actions"]]
    assert names.index("caches") < names.index("gc") < names.index("malloc_trim") < names.index("user")
    caches = result["actions"][names.index("caches")]
    assert caches["released_logical_bytes"] == 100 * 100_000 and cache.calls == ["clear:pressure"]
    assert caches["freed_bytes"] == max(0, caches["rss_freed_bytes"])  # measured, not claimed
    assert all(a["seconds"] >= 0 for a in result["actions"])
    assert result["performed"] and result["freed_bytes"] == max(0, result["rss_freed_bytes"])
    assert result["actions"][names.index("user")]["count"] == 3
    registry.unregister_cache(cache)


def test_non_emergency_shrinks_by_the_configured_fraction(clean_registry) -> None:
    cache = FakeCache("c2", 10, 1000)
    registry.register_cache(cache)
    cfg = MemoryConfig(cleanup_cooldown=0, cache_shrink_fraction=0.5)
    result = ladder(cfg).run(reason="auto", level="warning")
    assert cache.calls == ["shrink:0.5"] and len(cache.items) == 5
    assert result.actions[0].released_logical_bytes == 5000
    registry.unregister_cache(cache)


def test_cooldown_skips_with_retry_after_and_force_bypasses(clean_registry) -> None:
    lad = ladder(MemoryConfig(cleanup_cooldown=60))
    first = lad.run()
    assert first.performed
    second = lad.run()
    assert not second.performed and second.skipped_reason == "cooldown"
    assert 59 <= second.retry_after_seconds <= 60
    assert lad.run(force=True).performed


def test_dry_run_changes_nothing_and_does_not_start_the_cooldown(clean_registry) -> None:
    cache = FakeCache("c3", 10, 1000)
    registry.register_cache(cache)
    lad = ladder(MemoryConfig(cleanup_cooldown=60))
    result = lad.run(dry_run=True).to_dict()
    assert result["performed"] and result["dry_run"]
    assert result["actions"][0]["freed_bytes"] == 10_000  # would free
    assert len(cache.items) == 10 and cache.calls == []
    assert lad.run().performed  # no cooldown from a dry run
    registry.unregister_cache(cache)


def test_single_flight_under_concurrency(clean_registry) -> None:
    gate = threading.Event()
    registry.register_cleanup("slow", lambda ctx: gate.wait(5) and None)
    lad = ladder(MemoryConfig(cleanup_cooldown=0))
    results = []
    t = threading.Thread(target=lambda: results.append(lad.run(force=True)))
    t.start()
    wait_for(lambda: lad.running, timeout=30, what="the first run to start", step=0.001)
    others = [lad.run(force=True) for _ in range(20)]
    gate.set()
    t.join()
    assert results[0].performed
    assert all(not r.performed and r.skipped_reason == "in_progress" for r in others)


def test_auto_run_stops_once_pressure_is_resolved(clean_registry) -> None:
    ran: list[str] = []
    registry.register_cleanup("later", lambda ctx: ran.append("later"), order=500)
    checks = iter([(2, "critical"), (0, "ok")])
    lad = ladder(MemoryConfig(cleanup_cooldown=0), checker=lambda: next(checks, (0, "ok")))
    result = lad.run(reason="auto", level="critical")
    assert result.resolved and result.level_after == "ok"
    assert [a.name for a in result.actions] == ["caches", "gc"]
    assert ran == []


def test_a_failing_rung_is_reported_and_the_ladder_goes_on(clean_registry) -> None:
    registry.register_cleanup("boom", lambda ctx: 1 / 0, order=15)
    result = ladder(MemoryConfig(cleanup_cooldown=0)).run(force=True).to_dict()
    boom = next(a for a in result["actions"] if a["name"] == "boom")
    assert "ZeroDivisionError" in boom["error"]
    assert "gc" in result["actions_taken"]


def test_emergency_only_rungs_wait_for_an_emergency(clean_registry) -> None:
    registry.register_cleanup("kill", lambda ctx: {"count": 1}, order=60, emergency_only=True)
    lad = ladder(MemoryConfig(cleanup_cooldown=0))
    auto = lad.run(reason="auto", level="warning").to_dict()
    kill = next(a for a in auto["actions"] if a["name"] == "kill")
    assert kill["skipped"] == "not an emergency"
    forced = lad.run(force=True).to_dict()
    assert next(a for a in forced["actions"] if a["name"] == "kill")["count"] == 1


def test_bad_registration_is_rejected() -> None:
    with pytest.raises(ValueError):
        registry.register_cleanup("", lambda ctx: None)
    with pytest.raises(TypeError):
        registry.register_cleanup("x", "not callable")  # type: ignore[arg-type]


@pytest.mark.slow
def test_clearing_500_mb_of_cached_data_takes_under_a_second(clean_registry) -> None:
    cache = FakeCache("big", 500, 1024 * 1024)
    registry.register_cache(cache)
    result = ladder(MemoryConfig(cleanup_cooldown=0)).run(force=True).to_dict()
    assert result["released_logical_bytes"] >= 500 * 1024 * 1024
    assert result["freed_bytes"] == result["rss_freed_bytes"] > 400 * 1024 * 1024  # really returned
    assert result["seconds"] < 1.0
    registry.unregister_cache(cache)


def test_process_rungs_read_the_config_of_their_own_ladder(clean_registry) -> None:
    """Each monitor's ladder runs the process rungs with its own configuration; before,
    the rungs read the getter of the last monitor created (here: b's "owned")."""
    from memdiag.service import MemoryDiagnostics

    a = MemoryDiagnostics(MemoryConfig(terminate_policy="none", enable_auto_cleanup=False))
    b = MemoryDiagnostics(MemoryConfig(terminate_policy="owned", enable_auto_cleanup=False))
    try:
        ra = {x["name"]: x for x in a.cleanup(force=True, dry_run=True)["actions"]}
        rb = {x["name"]: x for x in b.cleanup(force=True, dry_run=True)["actions"]}
        assert "terminate_policy is 'none'" in ra["owned_children"]["detail"]
        assert rb["owned_children"]["detail"].startswith("would terminate")
    finally:
        a.close()
        b.close()
