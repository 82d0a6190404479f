"""Issue 16 item 9, the whole: scenarios/oom_cgroup.py --short in a real memory cgroup.

Without memdiag the service is OOM-killed; with memdiag (its defaults, plus the
application's own rung) it survives and its healthy cache is never emptied; when no rung
can free the leak, the OOM comes, and the flight recorder named the cause before it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cgroup_writable() -> bool:
    if os.geteuid() != 0:
        return False
    v2 = any(
        (p / "cgroup.controllers").exists() and "memory" in (p / "cgroup.controllers").read_text().split()
        for p in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
    )
    return v2 or os.access("/sys/fs/cgroup/memory", os.W_OK)


@pytest.mark.slow
@pytest.mark.skipif(not _cgroup_writable(), reason="needs root and a writable memory cgroup")
def test_oom_is_averted_and_when_it_cannot_be_its_cause_is_recorded() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scenarios" / "oom_cgroup.py"), "--short", "--mode", "all"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    runs = {r["mode"]: r for r in json.loads(out.stdout.split("\n- bar:")[0])["runs"]}  # then the bar lines
    without, with_, doomed = runs["without"], runs["with"], runs["doomed"]
    assert without["oom_killed"], without
    assert with_["survived"] and with_["oom_kills"] == 0, with_
    s = with_["summary"]
    assert s["healthy_cache_cleared"] == 0 and s["healthy_hit_rate"] > 0.9, s  # the leak was addressed instead
    assert s["sessions_expired"] > 0 and s["cold_cache_cleared"] > 0, s
    assert doomed["oom_killed"], doomed
    reason = (doomed["flight_record"] or {}).get("reason", "")
    assert reason.startswith("OOM imminent") and "outside the caches" in reason, doomed["flight_record"]
