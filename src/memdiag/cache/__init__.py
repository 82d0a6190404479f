"""SharedPromptCache: memdiag's memory-bounded, thread-safe TTL cache.

See ``docs/cache.md``. The public names are re-exported by :mod:`memdiag`.
"""

from __future__ import annotations

from . import fastpaths  # noqa: F401 - registers the built-in policies' inlined subclasses
from .core import SharedPromptCache
from .policies import EvictionPolicy, LRUPolicy, TinyLFUPolicy
from .sizing import ENTRY_OVERHEAD

__all__ = ["ENTRY_OVERHEAD", "EvictionPolicy", "LRUPolicy", "SharedPromptCache", "TinyLFUPolicy"]
