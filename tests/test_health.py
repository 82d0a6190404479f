"""HealthMonitor: the spec's methods and the pass/warn/fail convention."""

from __future__ import annotations

import json

from memdiag import HealthMonitor
from memdiag.service import MemoryDiagnostics


def test_spec_methods(diag) -> None:
    h = HealthMonitor(diag)
    assert h.get_memory_profile()["process"]["rss_bytes"] > 0
    assert "subprocesses" in h.get_memory_diagnostics()
    assert h.is_memory_pressure_detected() is False
    first = h.perform_memory_cleanup()
    assert first["performed"]
    forced = h.perform_memory_cleanup(force=True)
    assert forced["performed"] and forced["reason"] == "forced"


def test_health_pass_then_warn_on_pressure(diag) -> None:
    h = HealthMonitor(diag, service_id="svc-1")
    body = h.get_enhanced_health_with_memory()
    json.dumps(body)
    assert body["status"] == "pass" and body["serviceId"] == "svc-1"
    assert body["checks"]["memory:pressure"][0]["status"] == "pass"
    diag.configure(memory_threshold_mb=1)  # far below the real RSS
    diag.tick()
    assert h.is_memory_pressure_detected()
    body = h.get_enhanced_health_with_memory()
    assert body["status"] == "warn"  # pressure alone never fails a service
    assert body["checks"]["memory:pressure"][0]["observedValue"] == "critical"


def test_fail_from_an_application_check_or_a_dead_monitor(diag) -> None:
    h = HealthMonitor(diag)
    h.add_check("db", lambda: ("fail", "connection refused"))
    body = h.get_enhanced_health_with_memory()
    assert body["status"] == "fail" and body["checks"]["db"][0]["output"] == "connection refused"
    h.remove_check("db")
    h.add_check("explodes", lambda: 1 / 0)
    assert h.get_enhanced_health_with_memory()["checks"]["explodes"][0]["status"] == "fail"
    h.remove_check("explodes")
    diag.start()
    diag._thread.join(0)  # still alive
    assert h.get_enhanced_health_with_memory()["status"] == "pass"
    # Simulate the thread dying underneath (stop without marking it stopped).
    diag._stop.set()
    diag._thread.join(5)
    diag._stop.clear()
    assert h.get_enhanced_health_with_memory()["checks"]["memdiag:monitor"][0]["status"] == "fail"


def test_default_uses_the_shared_instance() -> None:
    h = HealthMonitor()
    assert h.diagnostics is MemoryDiagnostics.get_instance()
