"""Exporting memdiag's metrics and events to fleet tools: Prometheus and OpenTelemetry.

* :mod:`memdiag.telemetry.families`: the metric families as plain data (one source);
* :mod:`memdiag.telemetry.prometheus`: a prometheus_client ``Collector`` in the default
  registry (the ``[prometheus]`` extra), multiprocess-mode aware, and ``/metrics``;
* :mod:`memdiag.telemetry.otel`: the same metrics as OpenTelemetry instruments, and
  leak verdicts, pressure transitions and cleanups as log events (the ``[otel]`` extra).

:func:`install` is what ``memdiag.start()`` calls: each exporter whose library is
installed (and, for OpenTelemetry, configured by ``OTEL_*`` variables) is attached to the
shared monitor. Nothing here is imported by ``import memdiag``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .._logging import get_logger

__all__ = ["install"]

log = get_logger("memdiag")


def install(diag: Any) -> dict[str, bool]:
    """Attach every available exporter to ``diag``; never raises into the host."""
    done = {"prometheus": False, "otel": False}
    try:
        from . import prometheus

        done["prometheus"] = prometheus.install(diag)
    except Exception as exc:  # a broken prometheus_client must not stop the monitor
        log.warning("memdiag could not register its Prometheus collector: %r", exc)
    if not any(k.startswith("OTEL_") for k in os.environ) and not any(
        m.startswith("opentelemetry") for m in sys.modules
    ):
        return done  # nothing OpenTelemetry-ish around: otel.configured() would say no; not imported
    try:
        from . import otel

        if otel.configured():
            done["otel"] = otel.install(diag)
    except Exception as exc:
        log.warning("memdiag could not start its OpenTelemetry export: %r", exc)
    return done
