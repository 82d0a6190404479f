"""Process-tree governance: ownership, spawning, reaping, termination, pools, Node.js.

The public names (also on the ``memdiag`` package): :class:`Popen`, :func:`spawn`,
:func:`owned`, :func:`track`, :class:`MemoryAwarePool`, :func:`spawn_node`,
:class:`NodeProcess`, :func:`spawn_inspected_node`, :func:`inspect_node`,
:class:`InspectorError`. See ``docs/processes.md``.

:func:`install` registers the tree observer, the ``zombies`` (40) and ``owned_children``
(60) cleanup rungs, the ``owned_child_limit`` signal, the ``processes`` diagnostics
section and the ``subprocesses()`` decorator. Every monitor calls it; it is idempotent.
"""

from __future__ import annotations

import atexit
import importlib
from collections.abc import Callable
from typing import Any

from .. import registry as _registry
from ..config import MemoryConfig
from .ownership import OwnedProcess, is_descendant, owned_processes, owner_of, track
from .reap import direct_zombies, reap_zombies
from .sanitize import sanitize_env, sanitize_node_options
from .spawn import owned, spawn
from .subreaper import is_child_subreaper, set_child_subreaper
from .terminate import stop_entries, terminate

__all__ = [
    "InspectedNode",
    "InspectedNodeProcess",
    "InspectorError",
    "MemoryAwarePool",
    "NodeProcess",
    "OwnedProcess",
    "Popen",
    "direct_zombies",
    "inspect_node",
    "install",
    "is_child_subreaper",
    "is_descendant",
    "owned",
    "owned_processes",
    "owner_of",
    "reap_zombies",
    "sanitize_env",
    "sanitize_node_options",
    "set_child_subreaper",
    "spawn",
    "spawn_inspected_node",
    "spawn_node",
    "stop_entries",
    "terminate",
    "track",
]

_LAZY = {
    "InspectedNode": "memdiag.processes.inspector",
    "InspectedNodeProcess": "memdiag.processes.inspector",
    "InspectorError": "memdiag.processes.cdp",
    "MemoryAwarePool": "memdiag.processes.pool",
    "NodeProcess": "memdiag.processes.node",
    "Popen": "memdiag.processes.spawn",  # defined on first use: see spawn.py
    "inspect_node": "memdiag.processes.inspector",
    "spawn_inspected_node": "memdiag.processes.inspector",
    "spawn_node": "memdiag.processes.node",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memdiag.processes' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


_exit_hook = False


def install(config_getter: Callable[[], MemoryConfig] | None = None) -> None:
    """Register the process rungs, signals, report section and decorator (idempotent).

    Args:
        config_getter: ignored, kept for callers of earlier versions: each rung reads
            ``terminate_policy`` and the grace period from the configuration of the
            ladder that runs it (``CleanupContext.config``).
    """
    from . import groups, rungs
    from .terminate import end_owned_at_exit

    global _exit_hook
    if not _exit_hook:  # registered after the monitors' own: runs before they stop
        atexit.register(end_owned_at_exit)
        _exit_hook = True
    names = {a.name for a in _registry.cleanup_actions()}
    if "zombies" not in names:
        _registry.register_cleanup("zombies", rungs.zombies_rung, order=40)
    if "owned_children" not in names:
        _registry.register_cleanup("owned_children", rungs.owned_children_rung, order=60, emergency_only=True)
    if "process_tree" not in _registry.observers():
        _registry.register_observer("process_tree", groups.observer.observe)
    if "owned_child_limit" not in _registry.signal_sources():
        _registry.register_signal("owned_child_limit", rungs.owned_limit_signal)
    if "processes" not in _registry.sections():
        _registry.register_section("processes", groups.processes_section)
    _registry.add_subprocess_decorator(groups.decorate_subprocesses)
