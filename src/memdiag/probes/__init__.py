"""Probes read facts about memory and never decide.

Every probe is cheap, bounded in time, and fails soft: a vanished PID or an unreadable
file gives ``None`` for that figure, never an exception into the host. Each takes the
``/proc`` and cgroup roots as parameters, so recorded trees can stand in for the real
machine in tests.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

    from .process import ProcStat, page_size, read_smaps_rollup, read_stat, read_statm_rss
    from .python import python_heap
    from .system import CgroupLocation, detect_cgroup, read_cgroup, read_meminfo, read_psi
    from .tree import ChildWalker

# Submodules load on first use, so `import memdiag.probes.process` (the CLI, the runtime
# registry) does not pay for the cgroup and tree code.
_WHERE = {
    "ProcStat": "process",
    "page_size": "process",
    "read_smaps_rollup": "process",
    "read_stat": "process",
    "read_statm_rss": "process",
    "python_heap": "python",
    "CgroupLocation": "system",
    "detect_cgroup": "system",
    "read_cgroup": "system",
    "read_meminfo": "system",
    "read_psi": "system",
    "ChildWalker": "tree",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'memdiag.probes' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CgroupLocation",
    "ChildWalker",
    "ProcStat",
    "detect_cgroup",
    "page_size",
    "python_heap",
    "read_cgroup",
    "read_meminfo",
    "read_psi",
    "read_smaps_rollup",
    "read_stat",
    "read_statm_rss",
]
