"""Wiring: how the service turns the parts on and off.

The parts (cleanup rungs, process governance, leak detection) sit below the service
and plug into it through :mod:`memdiag.registry` and the monitor's listeners. The
service calls these functions; nothing below it does. The leak and process packages
are imported on first use, so ``import memdiag`` stays cheap.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from . import registry
from ._logging import get_logger
from .cleanup import install_builtin_actions
from .history import growth_split
from .units import MIB

__all__ = [
    "attach_leaks",
    "become_subreaper",
    "detach_leaks",
    "growth_hints",
    "install_parts",
    "release_startup_heap",
    "run_lifecycle",
]

log = get_logger("memdiag")


def release_startup_heap(cfg: Any) -> bool:
    """Hand back the heap that starting memdiag dirtied and freed (``malloc_trim(0)``, glibc,
    unless the ``malloc_trim`` config is off). Importing memdiag's modules reads each
    ``.pyc`` into a buffer that is freed once unmarshalled; those pages stay resident between
    the code objects in malloc's heap: ~1.3 MiB of the footprint (a process that only
    imported json and logging gives back ~64 KiB). True when the trim ran."""
    if not cfg.malloc_trim:
        return False
    from ._libc import malloc_trim

    return malloc_trim(0) is not None


def install_parts() -> None:
    """Register the core rungs (caches, gc, malloc_trim) and the process parts (zombie
    and owned-children rungs, tree observer, processes section) (idempotent)."""
    install_builtin_actions()
    from .processes import install

    install()


def attach_leaks(monitor: Any, on_alert: Callable[[Mapping[str, Any]], None] | None = None) -> None:
    """Turn leak detection on for ``monitor``, ``on_alert(alert)`` receiving its alerts;
    a failure is logged, never raised."""
    try:
        from .leaks import enable, on_leak

        enable(monitor)
        if on_alert is not None:
            on_leak(on_alert)
    except Exception as exc:
        log.warning("memdiag leak detection could not start: %r", exc)


def detach_leaks(monitor: Any, on_alert: Callable[[Mapping[str, Any]], None] | None = None) -> None:
    """Turn leak detection off for ``monitor`` (if it was ever loaded)."""
    leaks = sys.modules.get("memdiag.leaks")
    if leaks is not None:  # loaded only if leak detection or tracing was ever used
        leaks.disable(monitor)
        if on_alert is not None:
            leaks.remove_leak_callback(on_alert)


def run_lifecycle(monitor: Any, *, started: bool) -> None:
    """Tell the surfaces that follow the monitor (the local control channel) that it
    ``started`` (True) or stopped; a failing one is logged, never raised."""
    for name, (on_start, on_stop) in registry.lifecycle_hooks().items():
        try:
            (on_start if started else on_stop)(monitor)
        except Exception as exc:
            log.warning("memdiag %s could not %s: %r", name, "start" if started else "stop", exc)


def become_subreaper() -> None:
    """Adopt orphaned descendants (config ``subreaper``); a refusal is logged."""
    try:
        from .processes import set_child_subreaper

        set_child_subreaper(True)
    except Exception as exc:  # not Linux, or the module is not there
        log.info("could not become a child subreaper: %r", exc)


GROWTH_SECONDS = 30.0  # the window the growth hints look at
GROWTH_FLOOR = 128 * 1024  # bytes/s outside the caches below which nothing counts as growing
_NOT_MEMORY = ("fds", "threads", "asyncio_tasks", "child_processes", "zombies")


def growth_hints(monitor: Any) -> dict[str, Any]:
    """What is growing, for the cleanup ladder (``CleanupContext.hints``): memory outside
    the registered caches over the last :data:`GROWTH_SECONDS` (its releases, a cleanup's
    included, left out), or a leak suspect."""
    split = growth_split(monitor.history, GROWTH_SECONDS)
    other = split.get("other_growth_bytes_per_second", 0.0)  # releases left out: growth underneath
    cache = split.get("cache_bytes_per_second", 0.0)
    suspects = _leak_suspects(monitor)
    detail = f"outside caches {other / MIB:+.2f} MiB/s, caches {cache / MIB:+.2f} MiB/s"
    if suspects:
        detail += f"; leak suspect: {suspects[0]}"
    return {"growth_elsewhere": bool(suspects) or other > GROWTH_FLOOR, "detail": detail, **split}


def _leak_suspects(monitor: Any) -> list[str]:
    """The leak detector's current memory suspects, named (only if leak detection runs)."""
    leaks = sys.modules.get("memdiag.leaks")
    if leaks is None:
        return []
    try:
        found = leaks.get_detector(monitor).suspects()
    except Exception:
        return []
    return [
        f"{s.get('kind')} at {s.get('file')}:{s.get('line')}" if s.get("file") else str(s.get("kind"))
        for s in found
        if s.get("kind") not in _NOT_MEMORY
    ]
