"""Answers that change only with a new sample: built and encoded once, served to everyone.

Between two ticks of a running monitor, ``status()`` and ``profile()`` return the same
report (same sample, pressure, config, last cleanup), so the API encodes each once per
sample and hands the same bytes to every client until the next sample: a poll costs one
comparison instead of a report (dashboards, scrapers, fifty polling clients). Acting
endpoints and the other reports are never cached.

The key is what the reports read beyond the sample, compared by identity (each of these
objects is replaced, never changed in place, when it changes). Nothing is cached while
the monitor is stopped or its sample is older than two intervals: the service then
builds a fresh sample per request, and so does the API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ..service import MemoryDiagnostics

__all__ = ["PerTick"]

T = TypeVar("T")


def _key(diag: MemoryDiagnostics) -> tuple[Any, ...] | None:
    s = diag.last_sample
    if not diag.running or s is None or time.monotonic() - s.monotonic > 2 * diag.config.sample_interval:
        return None
    return (s, diag.last_profile, diag.config, diag.pressure, diag.last_error, diag.ladder.last_result)


class PerTick:
    """One encoded answer per name, valid for the sample it was built from."""

    def __init__(self) -> None:
        self._answers: dict[str, tuple[tuple[Any, ...], Any]] = {}
        self._lock = threading.Lock()

    def get(self, name: str, diag: MemoryDiagnostics) -> Any | None:
        """The answer built for the current sample, or ``None``; never blocks."""
        cached = self._answers.get(name)
        if cached is None:
            return None
        key = _key(diag)
        if key is not None and all(a is b for a, b in zip(key, cached[0])):
            return cached[1]
        return None

    def build(self, name: str, diag: MemoryDiagnostics, make: Callable[[], T]) -> T:
        """The current answer, made by ``make()`` if there is none for this sample.

        One caller makes it; those arriving meanwhile wait and reuse it, instead of every
        worker building the same report after each tick.
        """
        found = self.get(name, diag)
        if found is not None:
            return found  # type: ignore[no-any-return]
        with self._lock:
            found = self.get(name, diag)
            if found is not None:
                return found  # type: ignore[no-any-return]
            key = _key(diag)
            answer = make()
            if key is not None and key == _key(diag):  # no tick in between
                self._answers[name] = (key, answer)
            return answer
