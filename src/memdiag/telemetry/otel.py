"""OpenTelemetry: memdiag's metrics as instruments, its verdicts and transitions as events.

``pip install 'memdiag[otel]'`` (the SDK and the OTLP/HTTP exporter). ``memdiag.start()``
attaches when the SDK is there and the standard variables ask for export
(:func:`configured`): ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the per-signal
``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` / ``..._LOGS_ENDPOINT``), ``OTEL_METRICS_EXPORTER`` /
``OTEL_LOGS_EXPORTER`` (``otlp``, ``console`` or ``none``), ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_METRIC_EXPORT_INTERVAL``; ``OTEL_SDK_DISABLED=true``
turns it off. An application that already installed an SDK ``MeterProvider`` /
``LoggerProvider`` globally gets memdiag's instruments in those.

* Metrics: one observable gauge or counter per family of
  :mod:`memdiag.telemetry.families` (the names Prometheus sees, counters without
  ``_total``), read from one snapshot per collection.
* Events (log records with an ``event_name``): ``memdiag.pressure`` (a committed level
  change, with its reasons), ``memdiag.cleanup`` (a cleanup that ran: freed bytes per
  rung), ``memdiag.leak`` (a leak verdict: new, update, resolved), with flat attributes.

:func:`install` takes explicit providers too (tests use the SDK's in-memory reader and
exporter).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from .._logging import get_logger
from .._version import __version__
from .families import all_families, memdiag_families

__all__ = ["available", "configured", "install", "uninstall"]

log = get_logger("memdiag")

_ENV_ASKS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    "OTEL_METRICS_EXPORTER",
    "OTEL_LOGS_EXPORTER",
)
_SNAPSHOT_SECONDS = 1.0  # a snapshot older than this is never reused
_lock = threading.Lock()
_installed: _Export | None = None


def available() -> bool:
    """True when the OpenTelemetry SDK can be imported."""
    try:
        import opentelemetry.sdk.metrics  # noqa: F401
    except ImportError:
        return False
    return True


def _global_sdk_providers() -> tuple[Any, Any]:
    """The SDK meter and logger providers the application installed globally, if any."""
    from opentelemetry import _logs, metrics
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.metrics import MeterProvider

    mp = metrics.get_meter_provider()
    lp = _logs.get_logger_provider()
    return (mp if isinstance(mp, MeterProvider) else None, lp if isinstance(lp, LoggerProvider) else None)


def configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when the SDK is installed, not disabled, and the environment (or an SDK
    provider the application installed) asks for export."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    asked = any(env.get(k) for k in _ENV_ASKS)
    if not asked and not any(m in sys.modules for m in ("opentelemetry.sdk.metrics", "opentelemetry.sdk._logs")):
        return False  # nothing asks, and the application has not loaded the SDK: import nothing
    if not available():
        return False
    return asked or any(p is not None for p in _global_sdk_providers())


def _exporter_names(env: Mapping[str, str], signal: str) -> list[str]:
    raw = env.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp")
    return [n.strip().lower() for n in raw.split(",") if n.strip() and n.strip().lower() != "none"]


def _metric_exporters(names: Iterable[str]) -> list[Any]:
    out = []
    for name in names:
        if name == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            out.append(ConsoleMetricExporter())
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            out.append(OTLPMetricExporter())  # endpoint, headers, timeout from OTEL_EXPORTER_OTLP_*
        else:
            log.warning("memdiag: OTEL_METRICS_EXPORTER=%s is not supported (otlp, console, none)", name)
    return out


def _log_exporters(names: Iterable[str]) -> list[Any]:
    out = []
    for name in names:
        if name == "console":
            from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

            out.append(ConsoleLogRecordExporter())
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

            out.append(OTLPLogExporter())
        else:
            log.warning("memdiag: OTEL_LOGS_EXPORTER=%s is not supported (otlp, console, none)", name)
    return out


def _providers_from_env(diag: Any) -> tuple[Any, Any]:
    """Meter and logger providers built from ``OTEL_*`` (the resource from
    ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES``, else memdiag's service name)."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    from ..history import service_name_from_argv

    env = os.environ
    attrs = {}
    if not env.get("OTEL_SERVICE_NAME") and "service.name=" not in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attrs["service.name"] = diag.config.service_name or service_name_from_argv()
    resource = Resource.create(attrs)
    readers = [PeriodicExportingMetricReader(e) for e in _metric_exporters(_exporter_names(env, "metrics"))]
    meters = MeterProvider(resource=resource, metric_readers=readers) if readers else None
    log_exporters = _log_exporters(_exporter_names(env, "logs"))
    loggers = None
    if log_exporters:
        loggers = LoggerProvider(resource=resource)
        for e in log_exporters:
            loggers.add_log_record_processor(BatchLogRecordProcessor(e))
    return meters, loggers


def _unit(name: str) -> str:
    base = name.removesuffix("_total")
    if base.endswith("_bytes"):
        return "By"
    if base.endswith("_seconds"):
        return "s"
    return "1" if base.endswith(("_ratio", "_percent")) else ""


class _Export:
    """The instruments and event listeners attached to one monitor."""

    def __init__(self, diag: Any, meter_provider: Any, logger_provider: Any, *, owned: bool = False) -> None:
        self._diag = weakref.ref(diag)
        self.owned = owned  # providers memdiag built from OTEL_*: shut down with uninstall()
        self.meter_provider = meter_provider
        self.logger_provider = logger_provider
        self._snap_lock = threading.Lock()
        self._snap: tuple[float, dict[str, Any]] = (0.0, {})
        self._logger = logger_provider.get_logger("memdiag", __version__) if logger_provider is not None else None
        self._pid = os.getpid()
        if meter_provider is not None:
            self._instruments(meter_provider.get_meter("memdiag", __version__), diag)
        self.attach(diag)

    # -- metrics ----------------------------------------------------------------------
    def _instruments(self, meter: Any, diag: Any) -> None:
        # The SDK calls the callbacks in the order the instruments were made: the first
        # takes a new snapshot for the whole collection.
        for i, fam in enumerate(all_families(diag)):
            callback = self._callback(fam.name, fresh=i == 0)
            if fam.kind == "counter":
                meter.create_observable_counter(
                    fam.name.removesuffix("_total"), [callback], unit=_unit(fam.name), description=fam.help
                )
            else:
                meter.create_observable_gauge(fam.name, [callback], unit=_unit(fam.name), description=fam.help)

    def _families(self, fresh: bool) -> dict[str, Any]:
        with self._snap_lock:
            at, snap = self._snap
            now = time.monotonic()
            if fresh or now - at > _SNAPSHOT_SECONDS:
                diag = self._diag()
                snap = {f.name: f for f in memdiag_families(diag)} if diag is not None else {}
                self._snap = (now, snap)
            return snap

    def _callback(self, name: str, fresh: bool) -> Any:
        from opentelemetry.metrics import Observation

        def observe(options: Any) -> list[Any]:
            try:
                fam = self._families(fresh).get(name)
            except Exception as exc:  # never raise into the SDK's collection
                log.debug("memdiag OpenTelemetry snapshot failed: %r", exc)
                return []
            if fam is None:
                return []
            return [Observation(value, dict(zip(fam.labels, values))) for values, value in fam.samples]

        return observe

    # -- events -----------------------------------------------------------------------
    def attach(self, diag: Any) -> None:
        """Listen to ``diag``'s transitions and cleanups and to leak verdicts."""
        if self._logger is None:
            return
        diag.on_pressure_change(self._pressure)
        diag.on_cleanup(self._cleanup)
        from .. import leaks

        leaks.on_leak(self._leak)

    def _emit(self, name: str, body: str, attributes: dict[str, Any], severity: str) -> None:
        from opentelemetry._logs import SeverityNumber

        number = SeverityNumber.WARN if severity == "WARN" else SeverityNumber.INFO
        clean = {k: v for k, v in attributes.items() if v is not None}
        try:
            self._logger.emit(
                event_name=name,
                body=body,
                attributes=clean,
                severity_number=number,
                severity_text=severity,
                timestamp=time.time_ns(),
            )
        except Exception as exc:  # an exporter problem must not reach the monitor thread
            log.debug("memdiag OpenTelemetry event failed: %r", exc)

    def _pressure(self, previous: Any, current: Any) -> None:
        reasons = [dict(r) for r in current.reasons]
        up = ["ok", "warning", "critical"].index(current.level) > ["ok", "warning", "critical"].index(previous.level)
        self._emit(
            "memdiag.pressure",
            f"memory pressure {previous.level} -> {current.level}",
            {
                "memdiag.pressure.from": previous.level,
                "memdiag.pressure.to": current.level,
                "memdiag.pressure.signals": [str(r.get("signal")) for r in reasons],
                "memdiag.pressure.reasons": json.dumps(reasons, default=str),
                "process.pid": os.getpid(),
            },
            "WARN" if up else "INFO",
        )

    def _cleanup(self, result: Any) -> None:
        if not result.performed:
            return
        self._emit(
            "memdiag.cleanup",
            f"cleanup ({result.reason}) freed {result.freed_bytes} bytes",
            {
                "memdiag.cleanup.reason": result.reason,
                "memdiag.cleanup.dry_run": bool(result.dry_run),
                "memdiag.cleanup.freed_bytes": int(result.freed_bytes),
                "memdiag.cleanup.level_before": result.level_before,
                "memdiag.cleanup.level_after": result.level_after,
                "memdiag.cleanup.rungs": [a.name for a in result.actions],
                "memdiag.cleanup.seconds": float(result.seconds),
                "process.pid": os.getpid(),
            },
            "INFO",
        )

    def _leak(self, alert: Mapping[str, Any]) -> None:
        if os.getpid() != self._pid:
            return
        s = dict(alert.get("suspect") or {})
        event = str(alert.get("event"))
        rate = s.get("growth_bytes_per_min")
        self._emit(
            "memdiag.leak",
            f"leak {event}: {s.get('kind')} at {s.get('file')}:{s.get('line')}",
            {
                "memdiag.leak.event": event,
                "memdiag.leak.id": s.get("id"),
                "memdiag.leak.kind": s.get("kind"),
                "code.filepath": s.get("file"),
                "code.lineno": s.get("line"),
                "memdiag.leak.growth_bytes_per_min": float(rate) if isinstance(rate, (int, float)) else None,
                "memdiag.leak.confidence": s.get("confidence"),
                "process.pid": os.getpid(),
            },
            "INFO" if event == "resolved" else "WARN",
        )

    def detach(self) -> None:
        from .. import leaks

        leaks.remove_leak_callback(self._leak)
        if self.owned:
            for provider in (self.meter_provider, self.logger_provider):
                if provider is not None:
                    try:
                        provider.shutdown()
                    except Exception as exc:
                        log.debug("memdiag OpenTelemetry shutdown failed: %r", exc)


def install(diag: Any, meter_provider: Any = None, logger_provider: Any = None) -> bool:
    """Export ``diag``'s metrics and events through OpenTelemetry (once per process).

    Args:
        diag: the monitor.
        meter_provider, logger_provider: SDK providers to use; ``None`` takes the
            application's global SDK providers, else builds them from ``OTEL_*``.

    Returns False when the SDK is not installed.
    """
    global _installed
    if not available():
        return False
    with _lock:
        if _installed is not None:
            return True
        owned = False
        if meter_provider is None and logger_provider is None:
            meter_provider, logger_provider = _global_sdk_providers()
            if meter_provider is None and logger_provider is None:
                meter_provider, logger_provider = _providers_from_env(diag)
                owned = True
        _installed = _Export(diag, meter_provider, logger_provider, owned=owned)
    return True


def uninstall() -> None:
    """Stop the events and forget the instruments (providers memdiag built are shut down)."""
    global _installed
    with _lock:
        export, _installed = _installed, None
    if export is not None:
        export.detach()


def _after_fork_in_child() -> None:
    # The monitor's listeners are per process: a forked worker's monitor starts with none.
    export = _installed
    diag = export._diag() if export is not None else None
    if export is not None and diag is not None:
        export._pid = os.getpid()
        try:
            export.attach(diag)
        except Exception as exc:
            log.debug("memdiag OpenTelemetry re-attach after fork failed: %r", exc)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
