"""Cleanup accounting against the OS: ``freed_bytes`` is what the process really released.

A fresh process fills a real SharedPromptCache with 320 MiB, runs the forced ladder, and
measures its own USS (smaps_rollup) around the run. Before this accounting, the cache rung
claimed the entries' bytes and the malloc_trim rung then claimed the same pages again
(938 MB reported for a 500 MB cache)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

MIB = 1024 * 1024

CHILD = r"""
import json
from memdiag import SharedPromptCache
from memdiag.cleanup import CleanupLadder, install_builtin_actions
from memdiag.config import MemoryConfig
from memdiag.probes.process import read_smaps_rollup

cache = SharedPromptCache(max_bytes=2 << 30, name="big")
for i in range(5120):  # 5120 x 64 KiB = 320 MiB of touched heap (below the mmap threshold)
    cache.set(f"k{i}", bytes([i % 251 + 1]) * (64 * 1024))
cfg = MemoryConfig(cleanup_cooldown=0)
install_builtin_actions()
uss_before = read_smaps_rollup()["uss"]
res = CleanupLadder(lambda: cfg).run(force=True).to_dict()
uss_after = read_smaps_rollup()["uss"]
print(json.dumps({"result": res, "uss_drop": uss_before - uss_after}))
"""


@pytest.mark.slow
def test_freed_bytes_is_the_measured_release_not_the_sum_of_claims() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    res, uss_drop = got["result"], got["uss_drop"]
    rss_drop = res["rss_freed_bytes"]
    ran = [a for a in res["actions"] if a["skipped"] is None and a["error"] is None]
    caches = next(a for a in ran if a["name"] == "caches")
    assert caches["released_logical_bytes"] >= 320 * MIB  # the cache's own claim, shown apart
    assert rss_drop >= 280 * MIB and uss_drop >= 280 * MIB  # the memory really went back
    # The total is the process's measured drop, within 5% of what USS saw.
    assert res["freed_bytes"] == res["process_freed_bytes"] == rss_drop
    assert abs(res["freed_bytes"] - uss_drop) <= 0.05 * uss_drop
    # No rung claims more than the process released, and the rungs do not double count.
    tolerance = 4 * MIB  # the pressure-free run's own small allocations between rungs
    assert all(a["freed_bytes"] <= rss_drop + tolerance for a in ran)
    assert sum(a["freed_bytes"] for a in ran) <= rss_drop + tolerance
    # The credit goes to the rung that dropped the objects, not to the trim after it.
    assert caches["freed_bytes"] >= 0.9 * rss_drop
    assert res["released_logical_bytes"] >= caches["released_logical_bytes"]
