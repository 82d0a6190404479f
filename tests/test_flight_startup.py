"""Issue 16 item 6: the flight recorder records a service already critical at startup."""

from __future__ import annotations

import json
from pathlib import Path

from memdiag import leaks
from memdiag.config import MemoryConfig
from memdiag.service import MemoryDiagnostics

from .conftest import wait_for


def _cfg(path: Path) -> MemoryConfig:
    return MemoryConfig(
        sample_interval=0.05,
        sustain_seconds=0.0,
        recovery_seconds=0.0,
        enable_auto_cleanup=False,
        memory_threshold_mb=1.0,  # RSS is far above it: critical from the first sample
        flight_recorder_path=str(path),
    )


def test_critical_before_the_recorder_attached_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "flight.json"
    diag = MemoryDiagnostics(_cfg(path))
    try:
        _, state = diag.tick()  # the ok -> critical transition happens before recording begins
        assert state.level == "critical"
        leaks.enable(diag)
        diag.start()
        wait_for(path.exists, timeout=20, what="flight record")
        doc = json.loads(path.read_text())
        assert "critical" in doc["reason"] and "process_rss" in doc["reason"]
        assert doc["diagnostics"]["profile"]["pressure"]["level"] == "critical"
        writes = leaks.leaks_report(diag)["flight_recorder"]["writes"]
        for _ in range(5):
            diag.tick()
        assert leaks.leaks_report(diag)["flight_recorder"]["writes"] == writes  # once per episode
    finally:
        diag.close()


def test_critical_at_start_is_recorded_by_start(tmp_path: Path) -> None:
    path = tmp_path / "flight.json"
    diag = MemoryDiagnostics(_cfg(path)).start()  # the monitor may tick before leaks attach
    try:
        wait_for(path.exists, timeout=20, what="flight record")
        assert "critical" in json.loads(path.read_text())["reason"]
    finally:
        diag.close()
