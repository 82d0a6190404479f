"""The flight recorder: the latest diagnostics on disk before the OOM killer strikes.

When pressure turns critical, or the cgroup's ``memory.events`` counters ``oom``,
``oom_kill``, ``oom_group_kill`` or ``max`` rise, the full diagnostics report (with the
leak suspects and the top allocation sites) is written to ``flight_recorder_path``:
to a temporary file in the same directory, fsynced, then renamed over the old one,
mode 0600. A reader therefore always sees a whole report, and the evidence survives a
``SIGKILL`` of the service a moment later. Writes are at most one per
``min_interval`` seconds; errors are remembered, never raised.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .._files import write_atomic
from .._logging import get_logger

__all__ = ["EVENT_COUNTERS", "FlightRecorder", "write_atomic"]

log = get_logger("memdiag.leaks")

EVENT_COUNTERS = ("oom", "oom_kill", "oom_group_kill", "max")


class FlightRecorder:
    """Decides when to write, and writes.

    Args:
        min_interval: seconds between two writes.
    """

    def __init__(self, min_interval: float = 5.0) -> None:
        self.min_interval = min_interval
        self._last_events: dict[str, int] | None = None
        self._last_write = 0.0
        self._busy = threading.Lock()
        self.writes = 0
        self.last_written_at: float | None = None
        self.last_reason: str | None = None
        self.last_error: str | None = None
        self.last_seconds: float | None = None

    def event_reason(self, events: Mapping[str, int] | None) -> str | None:
        """Remember the cgroup's event counters; a reason if an OOM/max counter rose."""
        if not events:
            return None
        now = {k: int(events[k]) for k in EVENT_COUNTERS if k in events}
        prev, self._last_events = self._last_events, now
        if prev is None:
            return None
        risen = [f"{k} {prev.get(k, 0)}->{v}" for k, v in now.items() if v > prev.get(k, 0)]
        return "cgroup memory events: " + ", ".join(risen) if risen else None

    def write(self, path: str | None, reason: str, build: Callable[[], dict[str, Any]], *, force: bool = False) -> bool:
        """Write the report ``build()`` returns, if a path is set and the interval allows."""
        if not path:
            return False
        now = time.monotonic()
        if not force and self._last_write and now - self._last_write < self.min_interval:
            return False
        if not self._busy.acquire(blocking=False):  # building the report re-entered us
            return False
        t0 = time.perf_counter()
        try:
            written_at = time.time()
            doc = {"written_at": written_at, "reason": reason, "pid": os.getpid(), "diagnostics": build()}
            write_atomic(path, json.dumps(doc, default=str, indent=1).encode())
            self._last_write = now
            self.writes += 1
            self.last_written_at = written_at
            self.last_reason = reason
            self.last_error = None
            log.warning("memdiag flight recorder wrote %s (%s)", path, reason)
            return True
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.debug("flight recorder failed: %s", self.last_error)
            return False
        finally:
            self.last_seconds = round(time.perf_counter() - t0, 4)
            self._busy.release()

    def report(self, path: str | None) -> dict[str, Any]:
        return {
            "path": path,
            "writes": self.writes,
            "last_written_at": self.last_written_at,
            "last_reason": self.last_reason,
            "last_error": self.last_error,
            "last_seconds": self.last_seconds,
        }
