"""memdiag: memory diagnostics for long-running Python services and their children.

Importing memdiag is cheap: it starts no thread, loads no web framework and does not
start tracemalloc. Start the monitor explicitly::

    import memdiag
    diag = memdiag.start()                  # background monitor, config from file/env
    print(diag.profile()["pressure"])       # plain dicts, JSON-serialisable
    memdiag.stop()
"""

from __future__ import annotations

import importlib
import sys

from ._version import __version__
from .errors import ConfigError, MemdiagError, MissingExtraError, ProcessNotOwnedError

# memdiag's records: to the application's handlers only, one clean line each. Installed now
# if the application logs; else by the first memdiag module that gets a logger (its
# get_logger), before it can log: the command line's start does not import logging.
if "logging" in sys.modules:
    from . import _logging

    _logging.install()

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

    from .cache import SharedPromptCache
    from .config import MemoryConfig, active_config, load_config, save_config
    from .health import HealthMonitor
    from .http.core import MemoryAPI
    from .http.server import start_api_server
    from .leaks import leaks_report, on_leak, start_tracing
    from .processes import (
        InspectorError,
        MemoryAwarePool,
        NodeProcess,
        inspect_node,
        spawn_inspected_node,
        spawn_node,
        track,
    )
    from .processes.spawn import Popen, owned, spawn
    from .registry import CleanupContext, register_cache, register_cleanup, unregister_cache, unregister_cleanup
    from .service import MemoryDiagnostics

# Every public name but the errors is imported on first use: `import memdiag` in a
# production service (or the CLI's start-up) pays only for what is used.
_LAZY: dict[str, str] = {
    "CleanupContext": "memdiag.registry",
    "HealthMonitor": "memdiag.health",
    "InspectorError": "memdiag.processes",
    "MemoryAPI": "memdiag.http.core",
    "MemoryAwarePool": "memdiag.processes",
    "MemoryConfig": "memdiag.config",
    "MemoryDiagnostics": "memdiag.service",
    "NodeProcess": "memdiag.processes",
    "Popen": "memdiag.processes",
    "SharedPromptCache": "memdiag.cache",
    "active_config": "memdiag.config",
    "inspect_node": "memdiag.processes",
    "leaks_report": "memdiag.leaks",
    "load_config": "memdiag.config",
    "on_leak": "memdiag.leaks",
    "owned": "memdiag.processes",
    "register_cache": "memdiag.registry",
    "register_cleanup": "memdiag.registry",
    "save_config": "memdiag.config",
    "spawn": "memdiag.processes",
    "spawn_inspected_node": "memdiag.processes",
    "spawn_node": "memdiag.processes",
    "start_api_server": "memdiag.http.server",
    "start_tracing": "memdiag.leaks",
    "track": "memdiag.processes",
    "unregister_cache": "memdiag.registry",
    "unregister_cleanup": "memdiag.registry",
}

__all__ = [
    "CleanupContext",
    "ConfigError",
    "HealthMonitor",
    "InspectorError",
    "MemdiagError",
    "MemoryAPI",
    "MemoryAwarePool",
    "MemoryConfig",
    "MemoryDiagnostics",
    "MissingExtraError",
    "NodeProcess",
    "Popen",
    "ProcessNotOwnedError",
    "SharedPromptCache",
    "__version__",
    "active_config",
    "get_diagnostics",
    "inspect_node",
    "leaks_report",
    "load_config",
    "on_leak",
    "owned",
    "register_cache",
    "register_cleanup",
    "save_config",
    "spawn",
    "spawn_inspected_node",
    "spawn_node",
    "start",
    "start_api_server",
    "start_tracing",
    "stop",
    "track",
    "unregister_cache",
    "unregister_cleanup",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memdiag' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def get_diagnostics() -> MemoryDiagnostics:
    """The process's shared :class:`MemoryDiagnostics` (created, not started, on first use)."""
    from .service import MemoryDiagnostics

    return MemoryDiagnostics.get_instance()


def start(config: MemoryConfig | None = None, *, http: bool | str | None = None, **overrides: Any) -> MemoryDiagnostics:
    """Start the shared monitor (idempotent) and, if asked, the standalone API server.

    Args:
        config: a full configuration; ``None`` loads file + environment.
        http: ``True`` serves the API on ``http_host:http_port`` from the config;
            ``"host:port"`` picks the address. The server binds loopback unless told
            otherwise and refuses a non-loopback address without a token.
        **overrides: config fields, e.g. ``memory_threshold_mb=800``; validated as a
            whole (:class:`ConfigError` names each bad field, nothing changes).

    Returns:
        The running shared :class:`MemoryDiagnostics`.

    Raises:
        ConfigError, OSError: a bad ``http`` address (unparsable, unresolvable, in use,
            non-loopback without a token). A monitor this call started is stopped again.
    """
    from .service import MemoryDiagnostics

    host = port = None
    if isinstance(http, str):  # checked before anything starts
        host_text, _, port_text = http.rpartition(":")
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ConfigError({"http": f"expected 'host:port' or 'port' with a port 0-65535, got {http!r}"})
        host, port = host_text.strip("[]") or None, int(port_text)
    from .control.channel import install
    from .workers import install as install_workers

    install(_serve_control)  # the local control channel opens with the monitor (and in forked workers)
    install_workers()  # a pre-fork server's worker keeps its history per worker slot
    diag = MemoryDiagnostics.get_instance(config, **overrides)
    was_running = diag.running
    diag.start()
    from .telemetry import install as install_telemetry

    install_telemetry(diag)  # Prometheus collector / OpenTelemetry, where installed
    if not was_running:
        from .wiring import release_startup_heap

        release_startup_heap(diag.config)  # the imports' freed buffers (docs/benchmarks.md, footprint)
    if http and diag.http_server is None:
        from .http.server import start_api_server

        try:
            diag.http_server = start_api_server(
                diag, host=host or diag.config.http_host, port=diag.config.http_port if port is None else port
            )
        except BaseException:
            if not was_running:  # this call started the monitor: leave nothing running
                diag.stop()
            raise
    return diag


def stop() -> None:
    """Stop the shared monitor and its API server (idempotent)."""
    service = sys.modules.get("memdiag.service")
    inst = service.MemoryDiagnostics._instance if service is not None else None
    if inst is not None:
        inst.stop()


def _serve_control(diag: Any, sock: Any, own_fds: Any) -> Any:
    """The control channel's server, built when its first client connects (the HTTP
    layer is imported then, not by :func:`start`)."""
    from .http.unix import make_server

    return make_server(diag, sock, own_fds)
