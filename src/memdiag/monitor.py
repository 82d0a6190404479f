"""What a monitor offers the parts that plug into it.

Leak detection and process governance work on "a monitor": they read its configuration,
history and last sample, listen to its ticks and ask for its diagnostics. They are
layered below :mod:`memdiag.service`, which implements this protocol
(:class:`~memdiag.service.MemoryDiagnostics`), so they name the protocol and never the
service; they find the shared monitor through :func:`memdiag.registry.shared_monitor`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .config import MemoryConfig
    from .history import History
    from .pressure import PressureState
    from .sample import Sample

__all__ = ["Monitor"]


class Monitor(Protocol):
    """The part of :class:`~memdiag.service.MemoryDiagnostics` that plug-ins use."""

    history: History
    last_sample: Sample | None
    last_profile: Sample | None

    @property
    def config(self) -> MemoryConfig: ...

    def on_sample(self, fn: Callable[[Sample, PressureState], None]) -> None: ...

    def on_pressure_change(self, fn: Callable[[PressureState, PressureState], None]) -> None: ...

    def diagnostics(self) -> dict[str, Any]: ...
