"""Pressure detection: a state machine ok -> warning -> critical that does not flap.

Each sample is turned into signal readings (process RSS, container or system memory in
use, PSI, children's RSS, cache fill, and any registered source). A signal's level uses
hysteresis: it enters a level at that level's threshold and leaves it only below
``(1 - hysteresis)`` times it. The overall level rises only once a higher level has held
for ``sustain_seconds`` and falls only once a lower one has held for
``recovery_seconds`` (as systemd-oomd and the kubelet avoid acting on a blip). Every
level carries its reasons: signal, value, threshold.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from . import registry
from ._record import field, record
from .config import MemoryConfig
from .projection import SIGNAL as PROJECTED_SIGNAL
from .projection import LimitProjection
from .registry import SignalReading
from .sample import Sample

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["LEVELS", "RANK", "PressureDetector", "PressureState", "builtin_signals", "level_of"]

#: The pressure levels, lowest first: the one ordering every part compares levels by.
LEVELS = ("ok", "warning", "critical")
#: level name -> rank (0 ok, 1 warning, 2 critical).
RANK: dict[str, int] = {name: i for i, name in enumerate(LEVELS)}


def level_of(rank: int) -> str:
    return LEVELS[max(0, min(rank, 2))]


@record
class PressureState:
    """The committed pressure level and why.

    Attributes:
        level: "ok", "warning" or "critical" (after hysteresis and sustain times).
        raw_level: what this sample alone says (with hysteresis, without time).
        since: epoch seconds when ``level`` was entered.
        reasons: the signals at warning or above, worst first.
        signals: every signal read from the last sample.
    """

    level: str = "ok"
    raw_level: str = "ok"
    since: float = field(default_factory=time.time)
    reasons: tuple[dict[str, Any], ...] = ()
    signals: tuple[dict[str, Any], ...] = ()

    @property
    def detected(self) -> bool:
        return self.level != "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "raw_level": self.raw_level,
            "since": self.since,
            "reasons": [dict(r) for r in self.reasons],
            "signals": [dict(s) for s in self.signals],
        }


def builtin_signals(sample: Sample, cfg: MemoryConfig) -> list[SignalReading]:
    """The signals every monitor reads from a sample."""
    return _memory_signals(sample, cfg) + _children_signals(sample, cfg) + _cache_signals(sample, cfg)


def _memory_signals(sample: Sample, cfg: MemoryConfig) -> list[SignalReading]:
    """The process's RSS, the container's working set, system memory and PSI."""
    w = cfg.warning_ratio
    out: list[SignalReading] = []
    if sample.process.rss is not None:
        crit = float(cfg.memory_threshold_bytes)
        out.append(SignalReading("process_rss", float(sample.process.rss), crit * w, crit, "bytes"))
    cg = sample.cgroup
    if cg is not None and cg.limit and cg.working_set is not None:
        out.append(
            SignalReading(
                "cgroup_memory",
                cg.working_set / cg.limit,
                cfg.system_memory_threshold * w,
                cfg.system_memory_threshold,
                "ratio",
                f"working set {cg.working_set} of limit {cg.limit}",
            )
        )
    if sample.system is not None and sample.system.total:
        out.append(
            SignalReading(
                "system_memory",
                sample.system.used / sample.system.total,
                cfg.system_memory_threshold * w,
                cfg.system_memory_threshold,
                "ratio",
                f"available {sample.system.available} of {sample.system.total}",
            )
        )
    psi = cg.psi if cg is not None and cg.psi is not None else sample.psi
    if psi is not None:
        where = "cgroup" if cg is not None and cg.psi is psi else "system"
        out.append(
            SignalReading("psi_memory_some", psi.some_avg10, cfg.psi_threshold * w, cfg.psi_threshold, "percent", where)
        )
    return out


def _children_signals(sample: Sample, cfg: MemoryConfig) -> list[SignalReading]:
    """All descendants together, and the largest one against ``child_limit_mb``."""
    if not sample.children:
        return []
    w = cfg.warning_ratio
    crit = float(cfg.subprocess_threshold_bytes)
    out = [
        SignalReading(
            "subprocess_rss", float(sample.children_rss), crit * w, crit, "bytes", f"{len(sample.children)} descendants"
        )
    ]
    if cfg.child_limit_bytes is not None:
        limit = float(cfg.child_limit_bytes)
        worst = max((c for c in sample.children if c.state != "Z"), key=lambda c: c.rss_bytes, default=None)
        if worst is not None:
            detail = f"pid {worst.pid} ({worst.name})"
            out.append(SignalReading("child_rss", float(worst.rss_bytes), limit * w, limit, "bytes", detail))
    return out


def _cache_signals(sample: Sample, cfg: MemoryConfig) -> list[SignalReading]:
    """Each registered cache's fill ratio: a full bounded cache is a warning, not a crisis
    (it evicts by itself), so it has no critical level."""
    out = []
    for cache in sample.caches:
        fill = cache.get("fill_ratio")
        if isinstance(fill, (int, float)):
            name = str(cache.get("name", ""))
            out.append(SignalReading("cache_fill", float(fill), cfg.cache_pressure_threshold, None, "ratio", name))
    return out


def _reading_dict(r: SignalReading, level: str) -> dict[str, Any]:
    threshold = r.critical if level == "critical" else r.warning
    if level == "ok":
        threshold = r.warning if r.warning is not None else r.critical
    return {
        "signal": r.signal,
        "level": level,
        "value": round(r.value, 6) if r.unit != "bytes" else int(r.value),
        "threshold": (round(threshold, 6) if r.unit != "bytes" else int(threshold)) if threshold is not None else None,
        "critical": (round(r.critical, 6) if r.unit != "bytes" else int(r.critical)) if r.critical is not None else None,
        "unit": r.unit,
        "detail": r.detail,
    }


class PressureDetector:
    """Turns samples into a committed pressure level.

    Not thread-safe by itself: the monitor serialises calls to :meth:`update`.

    Args:
        config: thresholds, hysteresis and the sustain/recovery times.
        clock: a monotonic clock (injectable for tests).
    """

    def __init__(self, config: MemoryConfig, clock: Any = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._signal_levels: dict[str, int] = {}
        self._level = 0
        self._since_wall = time.time()
        self._up_since: dict[int, float] = {}  # rank -> monotonic time raw first >= rank
        self._down_since: float | None = None
        self._down_target = 0
        self.projection = LimitProjection()
        self._urgent = False
        self.state = PressureState()

    def readings(self, sample: Sample, *, commit: bool = False) -> list[SignalReading]:
        out = builtin_signals(sample, self.config)
        projected = self.projection.feed(sample, self.config, store=commit)
        if projected is not None:
            out.append(projected)
        for name, fn in registry.signal_sources().items():
            try:
                out.extend(fn(sample, self.config))
            except Exception as exc:  # a broken source must not break detection
                from ._logging import get_logger  # not at import: the CLI's outside views need no logging

                get_logger("memdiag.pressure").debug("signal source %s failed: %r", name, exc)
        return out

    def _signal_rank(self, r: SignalReading, key: str, commit: bool) -> int:
        h = self.config.hysteresis
        prev = self._signal_levels.get(key, 0)
        rank = 0
        if r.critical is not None and (r.value >= r.critical or (prev >= 2 and r.value >= r.critical * (1 - h))):
            rank = 2
        elif r.warning is not None and (r.value >= r.warning or (prev >= 1 and r.value >= r.warning * (1 - h))):
            rank = 1
        if commit:
            self._signal_levels[key] = rank
        return rank

    def assess(self, sample: Sample, *, commit: bool = False) -> tuple[int, list[dict[str, Any]]]:
        """The raw level of one sample (hysteresis, no time) and every signal's reading."""
        signals = []
        raw = 0
        urgent = False
        for r in self.readings(sample, commit=commit):
            key = f"{r.signal}:{r.detail}" if r.signal in ("cache_fill", "node_heap") else r.signal
            rank = self._signal_rank(r, key, commit)
            raw = max(raw, rank)
            urgent = urgent or (r.signal == PROJECTED_SIGNAL and rank == 2)
            signals.append(_reading_dict(r, LEVELS[rank]))
        if commit:
            self._urgent = urgent
        signals.sort(key=lambda d: -RANK[d["level"]])
        return raw, signals

    def update(self, sample: Sample) -> tuple[PressureState, PressureState | None]:
        """Feed one sample; returns ``(state, previous_state_if_the_level_changed)``."""
        now = self._clock()
        raw, signals = self.assess(sample, commit=True)
        cfg = self.config
        for rank in (1, 2):
            if raw >= rank:
                self._up_since.setdefault(rank, now)
            else:
                self._up_since.pop(rank, None)
        new = self._level
        # Rise to the highest level that has held long enough; a limit projected to be
        # reached within act_ahead_seconds does not wait for the sustain time.
        for rank in (2, 1):
            since = self._up_since.get(rank)
            sustain = 0.0 if self._urgent and rank == 2 else cfg.sustain_seconds
            if rank > self._level and since is not None and now - since >= sustain:
                new = rank
                break
        if new == self._level and raw < self._level:
            if self._down_since is None:
                self._down_since = now
                self._down_target = raw
            else:
                self._down_target = max(self._down_target, raw)
            if now - self._down_since >= cfg.recovery_seconds:
                new = self._down_target
        if raw >= self._level or new != self._level:
            self._down_since = None
        previous = None
        if new != self._level:
            previous = self.state
            self._level = new
            self._since_wall = time.time()
            self._up_since = {r: t for r, t in self._up_since.items() if r > new}
        reasons = tuple(s for s in signals if s["level"] != "ok")
        self.state = PressureState(LEVELS[self._level], LEVELS[raw], self._since_wall, reasons, tuple(signals))
        return self.state, previous

    def reconfigure(self, config: MemoryConfig) -> None:
        """Use new thresholds from the next sample on; the committed level is kept."""
        self.config = config


def worst(levels: Iterable[str]) -> str:
    return level_of(max((RANK.get(x, 0) for x in levels), default=0))
