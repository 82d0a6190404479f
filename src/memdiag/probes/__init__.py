"""Probes read facts about memory and never decide.

Every probe is cheap, bounded in time, and fails soft: a vanished PID or an unreadable
file gives ``None`` for that figure, never an exception into the host. Each takes the
``/proc`` and cgroup roots as parameters, so recorded trees can stand in for the real
machine in tests.
"""

from .process import ProcStat, page_size, read_smaps_rollup, read_stat, read_statm_rss
from .python import python_heap
from .system import (
    CgroupLocation,
    detect_cgroup,
    read_cgroup,
    read_meminfo,
    read_psi,
)
from .tree import ChildWalker

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
