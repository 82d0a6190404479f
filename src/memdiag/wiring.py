"""Wiring: how the service turns the parts on and off.

The parts (cleanup rungs, process governance, leak detection) sit below the service
and plug into it through :mod:`memdiag.registry` and the monitor's listeners. The
service calls these functions; nothing below it does. The leak and process packages
are imported on first use, so ``import memdiag`` stays cheap.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

from . import registry
from .cleanup import install_builtin_actions

__all__ = ["attach_leaks", "become_subreaper", "detach_leaks", "install_parts", "run_lifecycle"]

log = logging.getLogger("memdiag")


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
