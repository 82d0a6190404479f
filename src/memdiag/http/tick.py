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

After each tick the monitor rebuilds the answers clients asked for in the last few
seconds (:meth:`PerTick.prebuild`, an ``on_sample`` listener), and until that is done a
poll of such an answer gets the one of the previous sample, as long as only the sample
moved on (the same configuration, last error and cleanup result) and that sample is within
two intervals; an answer not polled lately is built for the current sample, as before.
Without this, the polls arriving between a tick and the rebuild took the slow path (a
worker thread waiting for the rebuild) and were among the slowest answers
(``benchmarks/bench_http.py``).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ..service import MemoryDiagnostics

__all__ = ["PerTick"]

T = TypeVar("T")

_RECENT = 5.0  # seconds: an answer asked for this recently is rebuilt after each tick


def _key(diag: MemoryDiagnostics) -> tuple[Any, ...] | None:
    s = diag.last_sample
    if not diag.running or s is None or time.monotonic() - s.monotonic > 2 * diag.config.sample_interval:
        return None
    return (s, diag.last_profile, diag.config, diag.pressure, diag.last_error, diag.ladder.last_result)


class PerTick:
    """One encoded answer per name, valid for the sample it was built from."""

    def __init__(self) -> None:
        # name -> (key, answer, make, the monitor it was made for)
        self._answers: dict[str, tuple[tuple[Any, ...], Any, Callable[[], Any], weakref.ref[Any]]] = {}
        self._asked: dict[str, float] = {}  # name -> when it was last asked for
        self._lock = threading.Lock()
        self._listening: weakref.WeakSet[Any] = weakref.WeakSet()

    def get(self, name: str, diag: MemoryDiagnostics) -> Any | None:
        """The answer built for the current sample (or, while the monitor rebuilds it, for
        the previous one: see the module), or ``None``; never blocks."""
        now = time.monotonic()
        polled = now - self._asked.get(name, -_RECENT - 1.0) <= _RECENT  # so the monitor rebuilds it
        self._asked[name] = now
        cached = self._answers.get(name)
        key = _key(diag)
        if cached is None or key is None:
            return None
        old = cached[0]
        if all(a is b for a, b in zip(key, old)):
            return cached[1]
        same_state = old[2] is key[2] and old[4] is key[4] and old[5] is key[5]  # config, error, cleanup
        if polled and same_state and cached[3]() is diag and self._fresh(old[0], diag):
            return cached[1]  # only the sample moved on, and the monitor is rebuilding it
        return None

    @staticmethod
    def _fresh(sample: Any, diag: MemoryDiagnostics) -> bool:
        return bool(time.monotonic() - sample.monotonic <= 2 * diag.config.sample_interval)

    def _current(self, name: str, diag: MemoryDiagnostics) -> Any | None:
        """The answer built for exactly the current sample, or ``None``."""
        cached = self._answers.get(name)
        key = _key(diag)
        if cached is None or key is None or not all(a is b for a, b in zip(key, cached[0])):
            return None
        return cached[1]

    def build(self, name: str, diag: MemoryDiagnostics, make: Callable[[], T]) -> T:
        """The current answer, made by ``make()`` if there is none for this sample.

        One caller makes it; those arriving meanwhile wait and reuse it, instead of every
        worker building the same report after each tick. The first answer built for a
        monitor subscribes :meth:`prebuild` to its ticks.
        """
        found = self._current(name, diag)
        if found is not None:
            return found  # type: ignore[no-any-return]
        with self._lock:
            return self._build_locked(name, diag, make)

    def _build_locked(self, name: str, diag: MemoryDiagnostics, make: Callable[[], T]) -> T:
        found = self._current(name, diag)
        if found is not None:
            return found  # type: ignore[no-any-return]
        key = _key(diag)
        answer = make()
        if key is not None and key == _key(diag):  # no tick in between
            self._answers[name] = (key, answer, make, weakref.ref(diag))
        if diag not in self._listening:
            self._listening.add(diag)
            ref, me = weakref.ref(diag), weakref.ref(self)

            def after_tick(_sample: Any, _state: Any) -> None:
                tick = me()
                if tick is not None:
                    tick.prebuild(ref())

            diag.on_sample(after_tick)
        return answer

    def prebuild(self, diag: MemoryDiagnostics | None) -> None:
        """Rebuild, on the monitor thread after a tick, the answers asked for recently."""
        if diag is None:
            return
        now = time.monotonic()
        for name, (_, _, make, made_for) in list(self._answers.items()):
            if made_for() is diag and now - self._asked.get(name, 0.0) <= _RECENT:
                # Never wait for the lock here: a request thread holding it may be inside
                # make(), waiting for this monitor thread (a sample, the service's lock).
                # Waiting would deadlock both (requests timed out in a full test run);
                # that thread builds the answer anyway.
                if not self._lock.acquire(blocking=False):
                    return
                try:
                    self._build_locked(name, diag, make)
                finally:
                    self._lock.release()
