"""Time to the memory limit, from the trend: the pressure signal that acts ahead.

A level alone acts late: at a few MiB/s, a container crosses 90 % of its limit and is
OOM-killed within seconds, while ``sustain_seconds`` is still holding (issue 16: a 5 s
sustain let usage reach 99.6 % before anything ran). :class:`LimitProjection` keeps the
last :data:`TREND_SECONDS` of the limiting memory figure (the cgroup's working set against
its limit, else system memory in use against RAM), fits a least-squares slope, and
projects where usage will be ``act_ahead_seconds`` from now.

Its reading, ``memory_projected``, is that projected share of the limit: critical at 1.0
(the limit will be reached within ``act_ahead_seconds`` at the current rate), once at
least :data:`FLOOR` of the limit is in use (a young service's warm-up is not an
emergency; below it the reading is just the share in use). A critical projection is
*urgent*: the pressure detector enters critical at once, without waiting
for ``sustain_seconds``. ``act_ahead_seconds = 0`` turns it off.
"""

from __future__ import annotations

from collections import deque

from ._record import record
from .config import MemoryConfig
from .registry import SignalReading
from .sample import Sample

__all__ = ["TREND_SECONDS", "LimitProjection", "Projection"]

TREND_SECONDS = 10.0  # the slope is fitted over this much recent history
DROP = 0.02  # a fall by this share of the limit between two samples starts a new trend
FLOOR = 0.5  # below this share of the limit in use, growth is warm-up, not an emergency
MIN_POINTS = 3
MIN_SPAN = 1.5  # seconds the points must span before a slope is trusted
SIGNAL = "memory_projected"
MIB = 1024 * 1024


@record
class Projection:
    """Where the limiting memory is heading."""

    scope: str  # "cgroup" or "system"
    used: float
    limit: float
    bytes_per_second: float
    seconds_to_limit: float | None  # None: not growing

    def describe(self) -> str:
        eta = f"limit in ~{self.seconds_to_limit:.0f} s" if self.seconds_to_limit is not None else "not growing"
        return (
            f"{self.scope} {self.used / MIB:.0f} of {self.limit / MIB:.0f} MiB, "
            f"{self.bytes_per_second / MIB:+.1f} MiB/s: {eta}"
        )


class LimitProjection:
    """Fits the recent growth of the limiting memory figure (one per pressure detector)."""

    def __init__(self) -> None:
        self._points: deque[tuple[float, float]] = deque()
        self._scope: str | None = None
        self.last: Projection | None = None

    @staticmethod
    def _figure(sample: Sample) -> tuple[str, float, float] | None:
        cg = sample.cgroup
        if cg is not None and cg.limit and cg.working_set is not None:
            return "cgroup", float(cg.working_set), float(cg.limit)
        if sample.system is not None and sample.system.total:
            return "system", float(sample.system.used), float(sample.system.total)
        return None

    def feed(self, sample: Sample, cfg: MemoryConfig, *, store: bool = True) -> SignalReading | None:
        """Add one sample; the ``memory_projected`` reading, or None (off, no figure yet).

        ``store=False`` (a re-check between cleanup rungs) projects with the sample
        without keeping it, and leaves :attr:`last` alone.
        """
        if not store:
            keep_points, keep_scope, keep_last = deque(self._points), self._scope, self.last
            try:
                return self.feed(sample, cfg)
            finally:
                self._points, self._scope, self.last = keep_points, keep_scope, keep_last
        fig = self._figure(sample)
        if fig is None or cfg.act_ahead_seconds <= 0:
            self.last = None
            return None
        scope, used, limit = fig
        if scope != self._scope:
            self._points.clear()
            self._scope = scope
        now = sample.monotonic
        if self._points and used < self._points[-1][1] - DROP * limit:
            self._points.clear()  # a cleanup (or a restart) freed memory: the old trend is over
        self._points.append((now, used))
        while self._points and now - self._points[0][0] > TREND_SECONDS:
            self._points.popleft()
        slope = self._slope()
        if slope is None:
            self.last = None
            return None
        eta = (limit - used) / slope if slope > 0 else None
        self.last = Projection(scope, used, limit, slope, max(0.0, eta) if eta is not None else None)
        projected = (used + max(0.0, slope) * cfg.act_ahead_seconds) / limit
        if used < FLOOR * limit:
            projected = min(projected, used / limit)  # reported, never acted on, below the floor
        return SignalReading(SIGNAL, projected, None, 1.0, "ratio", self.last.describe())

    def _slope(self) -> float | None:
        pts = self._points
        if len(pts) < MIN_POINTS or pts[-1][0] - pts[0][0] < MIN_SPAN:
            return None
        n = len(pts)
        mt = sum(t for t, _ in pts) / n
        mv = sum(v for _, v in pts) / n
        den = sum((t - mt) ** 2 for t, _ in pts)
        if den <= 0:
            return None
        return sum((t - mt) * (v - mv) for t, v in pts) / den
