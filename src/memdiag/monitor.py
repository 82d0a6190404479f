"""What a monitor offers the parts that plug into it.

Leak detection and process governance work on "a monitor": they read its configuration,
history and last sample, listen to its ticks and ask for its diagnostics. They are
layered below :mod:`memdiag.service`, which implements this protocol
(:class:`~memdiag.service.MemoryDiagnostics`), so they name the protocol and never the
service; they find the shared monitor through :func:`memdiag.registry.shared_monitor`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._record import field, mutable_record

if TYPE_CHECKING:
    from .cleanup import CleanupLadder
    from .config import MemoryConfig
    from .history import History, HistoryStore
    from .pressure import PressureState
    from .sample import Sample

__all__ = ["LoopStats", "Monitor"]


class Monitor(Protocol):
    """The part of :class:`~memdiag.service.MemoryDiagnostics` that plug-ins use."""

    history: History
    store: HistoryStore | None
    ladder: CleanupLadder
    events: deque[dict[str, Any]]
    last_sample: Sample | None
    last_profile: Sample | None

    @property
    def config(self) -> MemoryConfig: ...

    def on_sample(self, fn: Callable[[Sample, PressureState], None]) -> None: ...

    def on_pressure_change(self, fn: Callable[[PressureState, PressureState], None]) -> None: ...

    def profile(self) -> dict[str, Any]: ...

    def subprocesses(self) -> list[dict[str, Any]]: ...

    def trends(self) -> dict[str, Any]: ...

    def overhead(self) -> dict[str, Any]: ...

    def diagnostics(self) -> dict[str, Any]: ...


@mutable_record
class LoopStats:
    """What running the monitor loop has cost and counted (read by the overhead report).

    Attributes:
        ticks: samples taken.
        errors: ticks that raised (the loop goes on).
        last_error: the last such error, short.
        cpu_seconds: CPU time of the monitor thread.
        started_at: epoch seconds of the last start, ``None`` before one.
        tick_seconds: the wall time of the recent ticks.
    """

    ticks: int = 0
    errors: int = 0
    last_error: str | None = None
    cpu_seconds: float = 0.0
    started_at: float | None = None
    tick_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=512))
