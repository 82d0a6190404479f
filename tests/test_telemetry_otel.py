"""OpenTelemetry: the same metrics through the real SDK (its in-memory metric reader), and
pressure transitions, cleanups and leak verdicts as events (its in-memory log exporter);
configured by OTEL_* variables in a real process (the console exporters)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from memdiag import leaks
from memdiag.config import MemoryConfig
from memdiag.service import MemoryDiagnostics
from memdiag.telemetry import otel
from memdiag.telemetry.families import memdiag_families


@pytest.fixture
def sdk() -> Iterator[tuple[InMemoryMetricReader, InMemoryLogRecordExporter]]:
    reader = InMemoryMetricReader()
    logs = InMemoryLogRecordExporter()
    yield reader, logs
    otel.uninstall()


def _points(reader: InMemoryMetricReader) -> dict[str, list]:
    out: dict[str, list] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = [(dict(p.attributes), p.value) for p in m.data.data_points]
    return out


def test_metrics_and_events_through_the_sdk(sdk, fast_config: MemoryConfig) -> None:
    reader, logs = sdk
    lp = LoggerProvider()
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs))
    d = MemoryDiagnostics(fast_config.updated(leak_detection=False))
    try:
        assert otel.install(d, meter_provider=MeterProvider(metric_readers=[reader]), logger_provider=lp)
        for _ in range(5):
            d.tick(profile=True)
        points = _points(reader)
        expected = {f.name.removesuffix("_total"): f for f in memdiag_families(d)}
        assert set(expected) <= set(points), set(expected) - set(points)  # the same families
        (attrs, rss), = points["memdiag_process_rss_bytes"]
        assert rss == d.last_sample.process.rss
        ratios = {a["signal"]: v for a, v in points["memdiag_pressure_signal_ratio"]}
        assert "process_rss" in ratios
        # A pressure transition and a cleanup become events.
        d.configure(memory_threshold_mb=1.0)
        d.tick()
        assert d.pressure.level == "critical"
        d.cleanup(force=True)
        d.configure(memory_threshold_mb=100000.0)
        d.tick()
        events = [(r.log_record.event_name, dict(r.log_record.attributes or {})) for r in logs.get_finished_logs()]
        names = [n for n, _ in events]
        assert names.count("memdiag.pressure") == 2 and "memdiag.cleanup" in names, names
        up = next(a for n, a in events if n == "memdiag.pressure")
        assert up["memdiag.pressure.to"] == "critical" and "process_rss" in up["memdiag.pressure.signals"]
        cleanup = next(a for n, a in events if n == "memdiag.cleanup")
        assert cleanup["memdiag.cleanup.reason"] == "forced" and "gc" in cleanup["memdiag.cleanup.rungs"]
        counters = _points(reader)["memdiag_cleanup_runs"]
        assert dict((a["result"], v) for a, v in counters)["performed"] == 1
    finally:
        d.close()


@pytest.mark.slow
def test_a_leak_verdict_is_an_event(sdk, fast_config: MemoryConfig) -> None:
    from .conftest import wait_for

    _, logs = sdk
    lp = LoggerProvider()
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs))
    cfg = fast_config.updated(
        leak_window_seconds=10.0, trace_window_seconds=1.5, trace_budget=1.0, heap_snapshot_seconds=0.25
    )
    d = MemoryDiagnostics(cfg)
    fds: list[int] = []
    try:
        otel.install(d, logger_provider=lp)
        d.start()

        def leaked() -> bool:
            fds.extend(os.pipe())  # a real descriptor leak
            leaks.leaks_report(d)  # what the dashboard and the CLI ask for
            return any(r.log_record.event_name == "memdiag.leak" for r in logs.get_finished_logs())

        wait_for(leaked, timeout=40, what="a leak event", step=0.1)
    finally:
        d.close()
        for fd in fds:
            os.close(fd)
    rec = next(r.log_record for r in logs.get_finished_logs() if r.log_record.event_name == "memdiag.leak")
    assert rec.attributes["memdiag.leak.kind"] == "fds" and rec.attributes["memdiag.leak.event"] == "new"


ENV_CONFIGURED = """
import sys, time, memdiag
diag = memdiag.start(sample_interval=0.05, leak_detection=False, service_name="otel-demo")
diag.cleanup(force=True)
time.sleep(1.0)
memdiag.stop()
from memdiag.telemetry import otel
otel.uninstall()   # shuts the providers built from OTEL_* down: exports flush
"""


def test_configured_by_otel_environment_variables() -> None:
    assert not otel.configured({"OTEL_SDK_DISABLED": "true", "OTEL_METRICS_EXPORTER": "console"})
    env = {
        **os.environ,
        "OTEL_METRICS_EXPORTER": "console",
        "OTEL_LOGS_EXPORTER": "console",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    }
    r = subprocess.run([sys.executable, "-c", ENV_CONFIGURED], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert '"name": "memdiag_process_rss_bytes"' in r.stdout
    assert '"service.name": "otel-demo"' in r.stdout and '"deployment.environment": "test"' in r.stdout
    assert '"event_name": "memdiag.cleanup"' in r.stdout
    r = subprocess.run(
        [sys.executable, "-c", ENV_CONFIGURED],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
    )
    assert r.returncode == 0 and "memdiag_process_rss_bytes" not in r.stdout  # not asked: nothing exported
