"""Issue 16 item 9, the parts: rate-aware pressure, escalation inside the cooldown, and
healthy caches emptied last while the growth is elsewhere. The whole, in a real cgroup:
tests/test_oom_scenario.py."""

from __future__ import annotations

from typing import Any

import pytest

from memdiag import registry
from memdiag.cleanup import CleanupLadder, install_builtin_actions
from memdiag.config import MemoryConfig
from memdiag.probes.system import CgroupMemory

from .test_pressure import Clock, make_sample

MIB = 1024 * 1024
LIMIT = 150 * MIB


def _cgroup(ws_mib: float) -> CgroupMemory:
    b = int(ws_mib * MIB)
    return CgroupMemory(
        version=1,
        path="/test",
        limit=LIMIT,
        high=None,
        usage=b,
        working_set=b,
        inactive_file=0,
        anon=b,
        file=0,
        swap=None,
        events={},
        psi=None,
    )


def _climb(act_ahead: float, rate_mib: float = 5.0) -> tuple[float, float]:
    """Working set from 60 MiB up at ``rate_mib`` MiB/s; (seconds, MiB) when critical."""
    from memdiag.pressure import PressureDetector

    clock = Clock()
    d = PressureDetector(MemoryConfig(sustain_seconds=5, act_ahead_seconds=act_ahead), clock=clock)
    ws = 60.0
    while ws < 200:
        state, _ = d.update(make_sample(50, t=clock.now, cgroup=_cgroup(ws)))
        if state.level == "critical":
            return clock.now, ws
        clock.now += 0.5
        ws += rate_mib * 0.5
    raise AssertionError("never critical")


def test_a_level_and_sustain_alone_act_after_the_oom() -> None:
    # The finding: 90 % + a 5 s sustain at 5 MiB/s is past the limit.
    _, ws = _climb(act_ahead=0)
    assert ws > 150


def test_the_projection_acts_ahead_of_the_limit_without_waiting_for_sustain() -> None:
    _, ws = _climb(act_ahead=20)
    assert 75 <= ws <= 100, ws  # at or above the 50 % floor, with 10-15 s of headroom left
    assert (150 - ws) / 5.0 >= 10


def test_flat_high_usage_is_not_urgent() -> None:
    from memdiag.pressure import PressureDetector

    clock = Clock()
    d = PressureDetector(MemoryConfig(sustain_seconds=5, act_ahead_seconds=30), clock=clock)
    for _ in range(40):  # 85 % used, not growing: the level rules apply (warning), no projection
        state, _ = d.update(make_sample(50, t=clock.now, cgroup=_cgroup(127.5)))
        clock.now += 0.5
    projected = next(s for s in state.signals if s["signal"] == "memory_projected")
    assert projected["level"] == "ok" and state.level == "warning"


class Cache:
    def __init__(self, name: str, hit_rate: float, size: int = 10 * MIB) -> None:
        self.name, self.hit_rate, self.size, self.cleared = name, hit_rate, size, 0

    def metrics(self) -> dict[str, Any]:
        return {
            "entries": 1,
            "bytes": self.size,
            "max_bytes": 100 * MIB,
            "fill_ratio": 0.1,
            "hit_rate": self.hit_rate,
            "lookups": 1000,
        }

    def shrink(self, fraction: float) -> int:
        freed = int(self.size * fraction)
        self.size -= freed
        return freed

    def clear(self, cause: str = "") -> int:
        freed, self.size = self.size, 0
        self.cleared += 1
        return freed


def _ladder(rank: Any, hints: dict[str, Any]) -> CleanupLadder:
    """A real ladder whose pressure re-checks answer ``rank()`` (a fresh sample, in life)."""

    def check() -> tuple[int, str]:
        r = rank()
        return r, ("ok", "warning", "critical")[r]

    ladder = CleanupLadder(lambda: MemoryConfig(cleanup_cooldown=300, malloc_trim=False), check)
    ladder.hints = lambda: hints
    return ladder


def test_escalation_inside_the_cooldown_runs_what_may_help(clean_registry: None, monkeypatch) -> None:
    import memdiag.cleanup as cleanup

    install_builtin_actions()
    cold = Cache("blobs", hit_rate=0.1)
    registry.register_cache(cold)
    ran: list[str] = []
    registry.register_cleanup("app_rung", lambda ctx: ran.append(ctx.reason) or {"freed_bytes": 0}, order=100)
    ladder = _ladder(lambda: 2, {})
    first = ladder.run(reason="auto", level="critical")
    assert first.performed and cold.cleared == 1
    assert not ladder.run(reason="auto", level="warning").performed  # the cooldown holds below critical
    monkeypatch.setattr(cleanup, "ESCALATE_INTERVAL", 0.0)
    cold.size = 20 * MIB  # the cache refilled; gc found nothing last time
    again = ladder.run(reason="auto", level="critical")  # critical recurs inside the cooldown
    assert again.performed and again.reason == "escalated"
    by_name = {a["name"]: a for a in again.to_dict()["actions"]}
    assert by_name["caches"]["skipped"] is None and cold.cleared == 2  # it freed: repeated
    assert "not repeated" in (by_name["app_rung"]["skipped"] or "")  # freed nothing: not repeated
    assert ladder.escalations == 1
    assert not ladder.run(reason="manual").performed  # a manual run still honours the cooldown


def test_healthy_cache_is_emptied_last_while_growth_is_elsewhere(clean_registry: None) -> None:
    install_builtin_actions()
    hot, cold = Cache("answers", hit_rate=0.95), Cache("blobs", hit_rate=0.1)
    registry.register_cache(hot)
    registry.register_cache(cold)
    expired: list[int] = []
    registry.register_cleanup("expire_sessions", lambda ctx: expired.append(1) or {"freed_bytes": 30 * MIB}, order=100)
    # Every re-check critical until the application's rung ran, then warning.
    ladder = _ladder(lambda: 1 if expired else 2, {"growth_elsewhere": True})
    res = ladder.run(reason="auto", level="critical").to_dict()
    names = [a["name"] for a in res["actions"] if a["skipped"] is None]
    assert cold.cleared == 1 and expired and hot.cleared == 0
    assert names.index("caches") < names.index("expire_sessions")
    assert "kept healthy" in next(a["detail"] for a in res["actions"] if a["name"] == "caches")
    # Still critical after everything: the healthy cache goes too, as the last resort.
    ladder2 = _ladder(lambda: 2, {"growth_elsewhere": True})
    ladder2.run(reason="auto", level="critical")
    assert hot.cleared == 1


def test_without_growth_elsewhere_caches_are_emptied_as_before(clean_registry: None) -> None:
    install_builtin_actions()
    hot = Cache("answers", hit_rate=0.95)
    registry.register_cache(hot)
    ladder = _ladder(lambda: 2, {"growth_elsewhere": False})
    ladder.run(reason="auto", level="critical")
    assert hot.cleared == 1


def test_a_release_inside_the_window_does_not_hide_the_growth_underneath() -> None:
    """The scenario's finding (a healthy cache emptied twice): the application's rung freed
    the leak's sessions (40 MiB) inside the hints' 30-s window while the leak went on at
    1 MiB/s; end to end, "everything else" fell, the hints said nothing grew elsewhere,
    and the next escalation emptied the healthy cache."""
    from types import SimpleNamespace

    from memdiag.history import History, growth_split
    from memdiag.wiring import growth_hints

    from .test_pressure import make_sample

    hist = History(600)
    other = 60.0
    for i in range(31):
        other += 1.0  # the leak, 1 MiB/s
        if i == 15:
            other -= 40.0  # the application's rung expired the sessions
        cache = 20.0 if i < 15 else 2.0  # the caches rung emptied the cold cache too
        hist.append(make_sample(other + cache, t=float(i), caches=({"name": "c", "bytes": int(cache * MIB)},)))
    split = growth_split(hist, 30.0)
    assert split["other_bytes_per_second"] < 0  # end to end: hidden
    assert split["other_growth_bytes_per_second"] == pytest.approx(MIB, rel=0.05)  # less the release step's own second
    hints = growth_hints(SimpleNamespace(history=hist))
    assert hints["growth_elsewhere"] is True
    # and where nothing grows underneath, a release alone is no growth
    flat = History(600)
    for i in range(31):
        flat.append(make_sample(100.0 - (40.0 if i >= 15 else 0.0), t=float(i)))
    assert growth_hints(SimpleNamespace(history=flat))["growth_elsewhere"] is False
