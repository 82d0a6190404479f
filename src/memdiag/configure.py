"""Reconfiguring a running monitor: what changes with a new configuration.

:meth:`memdiag.service.MemoryDiagnostics.configure` validates the update as a whole
(:meth:`MemoryConfig.updated`), optionally persists it, then swaps in what the new
values need: a resized history ring, another history store. The functions here decide
those; the service holds the lock and swaps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import MemoryConfig, save_config
from .history import History, HistoryStore, history_path
from .units import MIB

__all__ = ["history_for", "open_store", "store_for", "updated"]


def updated(current: MemoryConfig, changes: Mapping[str, Any], *, persist: bool = False) -> MemoryConfig:
    """``current`` with ``changes`` applied, validated as a whole.

    Raises :class:`~memdiag.errors.ConfigError` (naming each bad field) before anything
    is written. With ``persist`` the changed fields are also written to the config
    file, atomically.
    """
    new = current.updated(changes)
    if persist:
        save_config({k: getattr(new, k) for k in changes})
    return new


def history_for(old: MemoryConfig, new: MemoryConfig, history: History) -> History:
    """The history ring for ``new``: the same one, or one resized keeping recent rows."""
    return history if new.history_size == old.history_size else history.resized(new.history_size)


def store_for(old: MemoryConfig, new: MemoryConfig, store: HistoryStore | None) -> HistoryStore | None:
    """The history store for ``new``: the same one, or (closing it) one with the new settings."""
    if _store_settings(new) == _store_settings(old):
        return store
    if store is not None:
        store.close()
    return open_store(new)


def _store_settings(cfg: MemoryConfig) -> tuple[Any, ...]:
    return (history_path(cfg), cfg.history_db_interval, cfg.history_retention_days, cfg.history_max_mb)


def open_store(cfg: MemoryConfig) -> HistoryStore | None:
    """The history file ``cfg`` asks for (opened lazily, on the first write), or ``None``."""
    path = history_path(cfg)
    if path is None:
        return None
    return HistoryStore(
        path, cfg.history_db_interval, cfg.history_retention_days, max_bytes=int(cfg.history_max_mb * MIB)
    )
