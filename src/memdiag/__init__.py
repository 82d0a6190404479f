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
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .config import MemoryConfig, active_config, load_config, save_config
from .errors import ConfigError, MemdiagError, MissingExtraError, ProcessNotOwnedError
from .health import HealthMonitor
from .registry import (
    CleanupContext,
    register_cache,
    register_cleanup,
    unregister_cache,
    unregister_cleanup,
)
from .service import MemoryDiagnostics

if TYPE_CHECKING:
    from .cache import SharedPromptCache

# Names whose modules are imported on first use (they are larger, or optional).
_LAZY: dict[str, str] = {
    "SharedPromptCache": "memdiag.cache",
    "MemoryAwarePool": "memdiag.processes",
    "NodeProcess": "memdiag.processes",
    "Popen": "memdiag.processes",
    "owned": "memdiag.processes",
    "spawn": "memdiag.processes",
    "spawn_node": "memdiag.processes",
    "track": "memdiag.processes",
    "leaks_report": "memdiag.leaks",
    "on_leak": "memdiag.leaks",
    "start_tracing": "memdiag.leaks",
    "MemoryAPI": "memdiag.http.core",
    "start_api_server": "memdiag.http.server",
}

__all__ = [
    "CleanupContext",
    "ConfigError",
    "HealthMonitor",
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
    "leaks_report",
    "load_config",
    "on_leak",
    "owned",
    "register_cache",
    "register_cleanup",
    "save_config",
    "spawn",
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


def get_diagnostics() -> MemoryDiagnostics:
    """The process's shared :class:`MemoryDiagnostics` (created, not started, on first use)."""
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
    """
    diag = MemoryDiagnostics.get_instance(config, **overrides)
    diag.start()
    if http and diag.http_server is None:
        from .http.server import start_api_server

        host, port = diag.config.http_host, diag.config.http_port
        if isinstance(http, str):
            host, _, port_text = http.rpartition(":")
            host = host.strip("[]") or diag.config.http_host
            port = int(port_text) if port_text else diag.config.http_port
        diag.http_server = start_api_server(diag, host=host, port=port)
    return diag


def stop() -> None:
    """Stop the shared monitor and its API server (idempotent)."""
    inst = MemoryDiagnostics._instance
    if inst is not None:
        inst.stop()
