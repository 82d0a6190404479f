"""``GET /metrics``: the Prometheus text exposition format (0.0.4).

With prometheus_client installed this is its default registry (memdiag's collector
beside prometheus_client's own ``process_*``/``python_*`` collectors and the
application's metrics), or every worker's values in multiprocess mode; without it, the
standalone families of :mod:`memdiag.telemetry.families`, ``process_*`` included. See
:mod:`memdiag.telemetry.prometheus`. Figures that are unknown (no cgroup, no PSI, no
profile tick yet) are left out rather than reported as zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..service import MemoryDiagnostics

__all__ = ["render"]


def render(diag: MemoryDiagnostics) -> str:
    """The exposition text for ``diag``'s latest sample and this process."""
    from ..telemetry.prometheus import exposition

    diag.status()  # takes a sample if the monitor is not running
    return exposition(diag)
