"""HealthMonitor: the specification's health-check surface over MemoryDiagnostics.

Statuses follow the health-check response format convention (``pass``/``warn``/``fail``):
memory pressure alone is ``warn`` (the service still answers); ``fail`` means memdiag
cannot vouch for the service: its monitor died, or a check the application added fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ._version import __version__
from .service import MemoryDiagnostics

__all__ = ["HealthMonitor"]

_STATUS_RANK = {"pass": 0, "warn": 1, "fail": 2}
CheckFn = Callable[[], "str | tuple[str, str] | dict[str, Any]"]


class HealthMonitor:
    """The service's health, with memory (the spec's ``HealthMonitor`` methods).

    Args:
        diagnostics: the monitor to report on; the shared instance by default.
        service_id: an identifier shown in health responses.
    """

    def __init__(self, diagnostics: MemoryDiagnostics | None = None, *, service_id: str | None = None) -> None:
        self._diag = diagnostics
        self.service_id = service_id
        self._checks: dict[str, CheckFn] = {}

    @property
    def diagnostics(self) -> MemoryDiagnostics:
        return self._diag if self._diag is not None else MemoryDiagnostics.get_instance()

    # -- the spec's methods ------------------------------------------------------------
    def get_memory_profile(self) -> dict[str, Any]:
        """The current memory state (see :meth:`MemoryDiagnostics.profile`)."""
        return self.diagnostics.profile()

    def get_memory_diagnostics(self) -> dict[str, Any]:
        """The comprehensive diagnostics report."""
        return self.diagnostics.diagnostics()

    def perform_memory_cleanup(self, force: bool = False) -> dict[str, Any]:
        """Run the cleanup ladder (respects the cooldown unless ``force``)."""
        return self.diagnostics.cleanup(force=force)

    def is_memory_pressure_detected(self) -> bool:
        """True while the committed pressure level is warning or critical."""
        d = self.diagnostics
        if d.last_sample is None:
            d.tick()
        return d.pressure.level != "ok"

    def get_enhanced_health_with_memory(self) -> dict[str, Any]:
        """Health (``pass``/``warn``/``fail``) with the memory checks and the profile summary."""
        d = self.diagnostics
        status = d.status()
        checks: dict[str, list[dict[str, Any]]] = {}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        level = status["status"]
        mem_status = "pass" if level == "ok" else "warn"
        checks["memory:pressure"] = [
            {
                "componentType": "system",
                "observedValue": level,
                "status": mem_status,
                "time": now,
                "output": "; ".join(f"{r['signal']} {r['value']} >= {r['threshold']}" for r in status["reasons"]),
            }
        ]
        checks["memory:rss"] = [
            {
                "componentType": "system",
                "observedValue": status["rss_bytes"],
                "observedUnit": "bytes",
                "status": "pass" if (status["rss_bytes"] or 0) < status["threshold_bytes"] else "warn",
                "time": now,
            }
        ]
        monitor_ok = d.running or d.last_sample is not None
        if d.should_be_running and not d.running:
            monitor_ok = False
        checks["memdiag:monitor"] = [
            {
                "componentType": "component",
                "observedValue": "running" if d.running else "stopped",
                "status": "pass" if monitor_ok else "fail",
                "time": now,
                "output": d.last_error or "",
            }
        ]
        for name, fn in list(self._checks.items()):
            checks[name] = [self._run_check(fn, now)]
        worst = max((c["status"] for group in checks.values() for c in group), key=_STATUS_RANK.__getitem__)
        body: dict[str, Any] = {
            "status": worst,
            "version": "1",
            "releaseId": __version__,
            "description": "memdiag health with memory",
            "checks": checks,
            "memory": status,
        }
        if self.service_id:
            body["serviceId"] = self.service_id
        if worst != "pass":
            body["notes"] = [f"memory pressure {level}"] if level != "ok" else []
        return body

    # -- extension ---------------------------------------------------------------------
    def has_checks(self) -> bool:
        """Whether the application added checks (:meth:`add_check`)."""
        return bool(self._checks)

    def add_check(self, name: str, fn: CheckFn) -> None:
        """Add an application check: ``fn()`` returns ``"pass"|"warn"|"fail"``, or
        ``(status, output)``, or a dict in the health-check format. An exception is a fail."""
        self._checks[name] = fn

    def remove_check(self, name: str) -> None:
        self._checks.pop(name, None)

    @staticmethod
    def _run_check(fn: CheckFn, now: str) -> dict[str, Any]:
        try:
            r = fn()
        except Exception as exc:
            return {"status": "fail", "output": f"{type(exc).__name__}: {exc}"[:300], "time": now}
        if isinstance(r, dict):
            out = dict(r)
            if out.get("status") not in _STATUS_RANK:
                out["status"] = "fail"
            out.setdefault("time", now)
            return out
        if isinstance(r, tuple):
            status, output = r[0], str(r[1])
        else:
            status, output = r, ""
        if status not in _STATUS_RANK:
            return {"status": "fail", "output": f"invalid check status {status!r}", "time": now}
        return {"status": status, "output": output, "time": now}
