"""The pressure state machine: levels, reasons, hysteresis, sustain and recovery."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from memdiag import registry
from memdiag.config import MemoryConfig
from memdiag.pressure import PressureDetector
from memdiag.probes.python import PythonHeap
from memdiag.probes.system import CgroupMemory, Psi, SystemMemory
from memdiag.probes.tree import ChildInfo
from memdiag.registry import SignalReading
from memdiag.sample import ProcessMemory, Sample

MIB = 1024 * 1024


def make_sample(rss_mb: float, *, t: float = 0.0, **kw) -> Sample:
    return Sample(
        time=t,
        monotonic=t,
        profile=False,
        process=ProcessMemory(pid=1, rss=int(rss_mb * MIB)),
        system=kw.get(
            "system", SystemMemory(total=16 << 30, available=12 << 30, free=10 << 30, swap_total=0, swap_free=0)
        ),
        cgroup=kw.get("cgroup"),
        psi=kw.get("psi"),
        python=PythonHeap(1, (0, 0, 0), (), (), (), 0, 1),
        children=kw.get("children", ()),
        caches=kw.get("caches", ()),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def detector(**cfg) -> tuple[PressureDetector, Clock]:
    clock = Clock()
    base = dict(memory_threshold_mb=500, sustain_seconds=5, recovery_seconds=30, hysteresis=0.1, warning_ratio=0.8)
    base.update(cfg)
    return PressureDetector(MemoryConfig(**base), clock=clock), clock


def feed(d: PressureDetector, clock: Clock, rss_mb: float, seconds: float, step: float = 1.0, **kw) -> list[str]:
    levels = []
    end = clock.now + seconds
    while clock.now < end:
        state, _ = d.update(make_sample(rss_mb, t=clock.now, **kw))
        levels.append(state.level)
        clock.now += step
    return levels


def test_levels_carry_reasons_with_signal_value_threshold() -> None:
    d, _clock = detector(sustain_seconds=0)
    state, prev = d.update(make_sample(600))
    assert state.level == "critical" and prev is not None and prev.level == "ok"
    (reason,) = [r for r in state.reasons if r["signal"] == "process_rss"]
    assert reason["value"] == 600 * MIB
    assert reason["threshold"] == 500 * MIB
    assert reason["level"] == "critical"
    # 440 MB: below the critical exit level (450 = 0.9 x 500), above warning (400): raw is
    # warning, but the committed level waits for the 30 s recovery.
    state, _ = d.update(make_sample(440))
    assert state.level == "critical" and state.raw_level == "warning"


def test_sustain_time_ignores_a_blip() -> None:
    d, clock = detector()
    assert feed(d, clock, 100, 3) == ["ok"] * 3
    assert set(feed(d, clock, 900, 3)) == {"ok"}  # 3 s of critical < 5 s sustain
    assert set(feed(d, clock, 100, 10)) == {"ok"}
    levels = feed(d, clock, 900, 7)
    assert levels[:5] == ["ok"] * 5 and levels[-1] == "critical"


def test_hysteresis_and_recovery_prevent_flapping() -> None:
    d, clock = detector(sustain_seconds=0, recovery_seconds=10)
    assert feed(d, clock, 600, 1) == ["critical"]
    # Oscillating around the threshold (490..510 MB): inside the hysteresis band, it stays.
    for mb in (490, 510, 480, 505, 460):
        state, _ = d.update(make_sample(mb, t=clock.now))
        clock.now += 1
        assert state.level == "critical", mb
    # Clearly below: still critical until the recovery time has passed.
    levels = feed(d, clock, 100, 12)
    assert levels[0] == "critical" and levels[-1] == "ok"
    transitions = sum(1 for a, b in itertools.pairwise(levels) if a != b)
    assert transitions == 1


def test_drops_to_the_highest_level_seen_during_recovery() -> None:
    d, clock = detector(sustain_seconds=0, recovery_seconds=5)
    feed(d, clock, 600, 1)
    levels = feed(d, clock, 420, 7)  # warning band
    assert levels[-1] == "warning"


def test_container_psi_children_and_cache_signals() -> None:
    d, _ = detector(sustain_seconds=0, subprocess_threshold_mb=100, psi_threshold=20)
    cg = CgroupMemory(
        2,
        "/x",
        limit=1000 * MIB,
        high=None,
        usage=950 * MIB,
        working_set=950 * MIB,
        inactive_file=0,
        anon=None,
        file=None,
        swap=None,
        events={},
        psi=Psi(30, 10, 1, 0, 5, 1, 0, 0),
    )
    workers = [ChildInfo(10 + i, 1, "w", "S", 30 * MIB, 1, 1, 1) for i in range(4)]
    kids = (*workers, ChildInfo(99, 1, "z", "Z", 0, 1, 1, 1))
    caches = ({"name": "prompts", "fill_ratio": 0.95, "bytes": 1},)
    state, _ = d.update(make_sample(10, cgroup=cg, children=kids, caches=caches))
    signals = {r["signal"]: r for r in state.reasons}
    assert signals["cgroup_memory"]["level"] == "critical"  # 0.95 >= 0.9
    assert signals["psi_memory_some"]["level"] == "critical" and signals["psi_memory_some"]["detail"] == "cgroup"
    assert signals["subprocess_rss"]["value"] == 120 * MIB  # the zombie does not count
    assert signals["cache_fill"]["level"] == "warning"  # never critical on its own
    assert state.level == "critical"


def test_registered_signal_source_counts_and_a_broken_one_is_ignored(clean_registry) -> None:
    registry.register_signal("custom", lambda s, c: [SignalReading("queue_depth", 50, 10, 40, "items")])
    registry.register_signal("broken", lambda s, c: 1 / 0)
    d, _ = detector(sustain_seconds=0)
    state, _ = d.update(make_sample(10))
    assert state.level == "critical"
    assert state.reasons[0]["signal"] == "queue_depth"


def test_reconfigure_applies_new_thresholds() -> None:
    d, clock = detector(sustain_seconds=0, recovery_seconds=0)
    assert feed(d, clock, 300, 1) == ["ok"]
    d.reconfigure(dataclasses.replace(d.config, memory_threshold_mb=200))
    assert feed(d, clock, 300, 1) == ["critical"]


@pytest.mark.parametrize("value", [0.0, 1e18])
def test_extreme_values_do_not_break(value: float) -> None:
    d, _ = detector(sustain_seconds=0)
    state, _ = d.update(make_sample(value / MIB))
    assert state.level in ("ok", "critical")
