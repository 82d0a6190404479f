"""memdiag in prometheus_client: a ``Collector`` in the default registry, and ``/metrics``.

With prometheus_client installed, ``memdiag.start()`` registers a :class:`MemdiagCollector`
in ``prometheus_client.REGISTRY`` (once per process), so an application that already
serves its own metrics (``start_http_server``, ``make_wsgi_app``, ...) exports the
``memdiag_*`` families too. It exports only ``memdiag_*``: the ``process_*``/``python_*``
families stay with prometheus_client's own default collectors, so no family appears twice.
memdiag's ``/metrics`` then serves the default registry.

Multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set, as pre-fork servers such as gunicorn
need): a scrape reaches one worker, so every worker's monitor also mirrors its
``memdiag_*`` values into prometheus_client's multiprocess files (gauges per ``pid``,
counters summed) every :data:`MIRROR_EVERY` seconds, and ``/metrics`` serves the
``MultiProcessCollector``: every worker, whichever one answers. The server's
``child_exit`` hook should call ``prometheus_client.multiprocess.mark_process_dead(pid)``
(see examples/gunicorn).

Without prometheus_client, ``/metrics`` is the standalone text of
:mod:`memdiag.telemetry.families` (``process_*`` included), which its parser and
``promtool check metrics`` accept (tests/test_telemetry_prometheus.py).
"""

from __future__ import annotations

import importlib.util
import os
import struct
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the families are imported on first use: start() without a scrape pays nothing
    from .families import Family

__all__ = ["MIRROR_EVERY", "available", "exposition", "install", "multiprocess_mode", "uninstall"]

#: Seconds between two mirrors of a worker's values into the multiprocess files.
MIRROR_EVERY = 5.0
_OBSERVER = "memdiag.telemetry.prometheus"
_LATE = "memdiag.telemetry.prometheus.late"  # waits for the application to import it

_lock = threading.Lock()
_collector: Any = None  # the MemdiagCollector registered in the default registry


def available() -> bool:
    """True when prometheus_client can be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def multiprocess_mode() -> bool:
    """True when prometheus_client runs in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"))


def _collector_class() -> type:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector

    from .families import memdiag_families

    class MemdiagCollector(Collector):
        """The ``memdiag_*`` families of one monitor, read at each scrape."""

        def __init__(self, diag: Any) -> None:
            self._diag = weakref.ref(diag)

        def describe(self) -> list[Any]:
            return []  # families depend on what the monitor sees; checked at collect time

        def collect(self) -> Any:
            diag = self._diag()
            if diag is None:
                return
            for fam in memdiag_families(diag):
                yield _to_client(fam, GaugeMetricFamily, CounterMetricFamily)

    return MemdiagCollector


def _to_client(fam: Family, gauge: type, counter: type) -> Any:
    if fam.kind == "counter":
        out = counter(fam.name.removesuffix("_total"), fam.help, labels=list(fam.labels))
    else:
        out = gauge(fam.name, fam.help, labels=list(fam.labels))
    for values, value in fam.samples:
        out.add_metric(list(values), value)
    return out


def install(diag: Any) -> bool:
    """Register ``diag``'s collector in prometheus_client's default registry (once per
    process), and in multiprocess mode start mirroring. False without prometheus_client.

    Importing prometheus_client costs a process about 6 MB (it pulls in http.server,
    wsgiref, email, gzip): when the application has not imported it (and multiprocess mode
    is off), nothing is imported now; a per-tick check of ``sys.modules`` registers the
    collector within one tick of the application importing it."""
    if "prometheus_client" not in sys.modules and not multiprocess_mode():
        if importlib.util.find_spec("prometheus_client") is None:
            return False
        from .. import registry

        late = weakref.ref(diag)
        registry.register_observer(_LATE, lambda sample: _install_when_imported(late))
        return True
    return _install_now(diag)


def _install_when_imported(ref: Any) -> None:
    """The deferred install: once the application imported prometheus_client."""
    if sys.modules.get("prometheus_client") is None:
        return
    from .. import registry

    registry.unregister_observer(_LATE)
    diag = ref()
    if diag is not None:
        _install_now(diag)


def _install_now(diag: Any) -> bool:
    global _collector
    if not available():
        return False
    with _lock:
        if _collector is not None:
            _collector._diag = weakref.ref(diag)  # the latest shared monitor wins
        else:
            from prometheus_client import REGISTRY

            _collector = _collector_class()(diag)
            REGISTRY.register(_collector)
    if multiprocess_mode():
        from .. import registry

        mirror = _Mirror(diag)
        registry.register_observer(_OBSERVER, mirror.observe)
    return True


def uninstall() -> None:
    """Remove memdiag's collector from the default registry and stop mirroring."""
    global _collector
    from .. import registry

    registry.unregister_observer(_OBSERVER)
    registry.unregister_observer(_LATE)
    with _lock:
        if _collector is not None:
            from prometheus_client import REGISTRY

            try:
                REGISTRY.unregister(_collector)
            except KeyError:
                pass
            _collector = None


class _Mirror:
    """Copies a monitor's families into prometheus_client's multiprocess metric files."""

    def __init__(self, diag: Any) -> None:
        self._diag = weakref.ref(diag)
        self._metrics: dict[str, Any] = {}
        self._counted: dict[tuple[str, tuple[str, ...]], float] = {}
        self._last = 0.0
        self._pid = os.getpid()

    def observe(self, sample: Any) -> None:
        now = time.monotonic()
        if os.getpid() != self._pid:  # a forked worker: its own files and counts
            self._metrics, self._counted, self._pid, self._last = {}, {}, os.getpid(), 0.0
        diag = self._diag()
        if diag is None or now - self._last < MIRROR_EVERY:
            return
        self._last = now
        from .families import memdiag_families

        self.mirror(memdiag_families(diag))

    def mirror(self, families: list[Family]) -> None:
        from prometheus_client import Counter, Gauge

        for fam in families:
            metric = self._metrics.get(fam.name)
            if metric is None:
                if fam.kind == "counter":
                    metric = Counter(fam.name.removesuffix("_total"), fam.help, list(fam.labels), registry=None)
                else:
                    metric = Gauge(fam.name, fam.help, list(fam.labels), registry=None, multiprocess_mode="all")
                self._metrics[fam.name] = metric
            for values, value in fam.samples:
                child = metric.labels(*values) if fam.labels else metric
                if fam.kind == "counter":
                    key = (fam.name, values)
                    delta = value - self._counted.get(key, 0.0)
                    if delta > 0:
                        child.inc(delta)
                        self._counted[key] = value
                else:
                    child.set(value)


def exposition(diag: Any) -> str:
    """The text ``/metrics`` serves: the default registry (or every worker in multiprocess
    mode) with prometheus_client; the standalone families without it."""
    from .families import memdiag_families, process_families, render_text

    if not available():
        return render_text(process_families(diag) + memdiag_families(diag))
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

    if multiprocess_mode():
        from prometheus_client import multiprocess

        _install_now(diag)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        for attempt in range(3):
            try:
                return generate_latest(registry).decode("utf-8")
            except struct.error:  # a worker's file just created, still empty: read again
                if attempt == 2:
                    raise
                time.sleep(0.01)
    _install_now(diag)
    return generate_latest(REGISTRY).decode("utf-8")
