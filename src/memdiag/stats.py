"""Robust trend statistics: Theil-Sen slope, Mann-Kendall test, plateau check.

Pure Python and bounded: inputs longer than ``max_points`` are thinned evenly before the
O(n^2) pairwise work, so a trend over a full history costs a few milliseconds at most.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ._record import record

__all__ = ["Trend", "mann_kendall", "theil_sen", "thin", "trend"]


def thin(xs: Sequence[float], ys: Sequence[float], max_points: int) -> tuple[list[float], list[float]]:
    """Keep at most ``max_points`` evenly spaced points (the last one always kept)."""
    n = len(xs)
    if n <= max_points:
        return list(xs), list(ys)
    step = (n - 1) / (max_points - 1)
    idx = sorted({round(i * step) for i in range(max_points)})
    return [xs[i] for i in idx], [ys[i] for i in idx]


def theil_sen(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Median of pairwise slopes and the matching intercept (robust to 29% outliers)."""
    n = len(xs)
    if n < 2:
        return 0.0, ys[0] if ys else 0.0
    slopes = []
    for i in range(n - 1):
        xi, yi = xs[i], ys[i]
        for j in range(i + 1, n):
            dx = xs[j] - xi
            if dx != 0:
                slopes.append((ys[j] - yi) / dx)
    if not slopes:
        return 0.0, _median(list(ys))
    slope = _median(slopes)
    intercept = _median([y - slope * x for x, y in zip(xs, ys)])
    return slope, intercept


def mann_kendall(ys: Sequence[float]) -> tuple[float, float]:
    """Mann-Kendall trend test: ``(z, p)`` with a two-sided p-value (ties corrected)."""
    n = len(ys)
    if n < 4:
        return 0.0, 1.0
    s = 0
    for i in range(n - 1):
        yi = ys[i]
        for j in range(i + 1, n):
            d = ys[j] - yi
            s += (d > 0) - (d < 0)
    counts: dict[float, int] = {}
    for y in ys:
        counts[y] = counts.get(y, 0) + 1
    tie = sum(t * (t - 1) * (2 * t + 5) for t in counts.values() if t > 1)
    var = (n * (n - 1) * (2 * n + 5) - tie) / 18.0
    if var <= 0:
        return 0.0, 1.0
    z = (s - 1) / math.sqrt(var) if s > 0 else (s + 1) / math.sqrt(var) if s < 0 else 0.0
    p = math.erfc(abs(z) / math.sqrt(2))
    return z, p


def _median(values: list[float]) -> float:
    values.sort()
    n = len(values)
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2.0


@record
class Trend:
    """A growth verdict over a window.

    Attributes:
        slope_per_second: Theil-Sen slope (units per second).
        z: Mann-Kendall statistic; p: its two-sided p-value.
        growing: a significant upward trend (p < 0.01, slope > 0).
        plateau: the last third of the window is flat (its own slope is under a fifth of
            the whole window's): a cache that warmed up, not a leak.
        points: samples used; span_seconds: time covered.
    """

    slope_per_second: float
    intercept: float
    z: float
    p: float
    growing: bool
    plateau: bool
    points: int
    span_seconds: float

    def seconds_until(self, threshold: float, now_value: float) -> float | None:
        """When the trend line reaches ``threshold`` from ``now_value`` (None: never)."""
        if self.slope_per_second <= 0 or now_value >= threshold:
            return 0.0 if now_value >= threshold else None
        return (threshold - now_value) / self.slope_per_second

    def to_dict(self) -> dict[str, float | bool | int]:
        return {
            "slope_per_second": self.slope_per_second,
            "slope_per_minute": self.slope_per_second * 60.0,
            "z": round(self.z, 3),
            "p": self.p,
            "growing": self.growing,
            "plateau": self.plateau,
            "points": self.points,
            "span_seconds": round(self.span_seconds, 3),
        }


def trend(xs: Sequence[float], ys: Sequence[float], max_points: int = 120, alpha: float = 0.01) -> Trend | None:
    """Fit a robust trend to ``(xs, ys)``; ``None`` with fewer than 6 finite points."""
    pts = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
    if len(pts) < 6:
        return None
    px, py = thin([p[0] for p in pts], [p[1] for p in pts], max_points)
    slope, intercept = theil_sen(px, py)
    z, p = mann_kendall(py)
    tail = len(px) * 2 // 3
    tail_slope, _ = theil_sen(px[tail:], py[tail:]) if len(px) - tail >= 4 else (slope, 0.0)
    plateau = slope > 0 and tail_slope < slope / 5.0
    return Trend(
        slope_per_second=slope,
        intercept=intercept,
        z=z,
        p=p,
        growing=slope > 0 and p < alpha and z > 0,
        plateau=plateau,
        points=len(px),
        span_seconds=px[-1] - px[0],
    )


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values (``statistics`` would pull in decimal and
    fractions: ~0.3 MB in every monitored process)."""
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` (0-100) percentile by linear interpolation between closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
