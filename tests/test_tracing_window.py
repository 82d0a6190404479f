"""Tracing windows on a busy service end on time and never starve the application (issue 14).

A window used to raise the switch interval to 1000 s for its object walks; when the walk
lost the GIL anyway (an import inside it, or a waiter that timed out first), the window
thread waited up to 1000 s while tracemalloc stayed on: a 5 s window ran 39-76 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "fixtures", "busy_trace_window.py")


@pytest.mark.slow
def test_window_on_a_busy_service_ends_on_time() -> None:
    seconds = 2.0
    for _ in range(2):  # the stall was intermittent: two windows
        out = subprocess.run([sys.executable, SCRIPT, str(seconds)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        res = json.loads(out.stdout)
        assert res["finished"], res
        # Tracing stops at the window's end plus at most the time its captures took (the last
        # capture starts early enough to end on time by its predicted cost; on a loaded
        # machine it can take longer). The defect waited up to 1000 s with tracing on.
        # The grace also covers the thread being scheduled late on a loaded machine (a full
        # run at load 7-19 overran a 2 s window by 1.1 s with 0.47 s captures).
        grace = max(2.0, 2.0 * (res["snapshot_seconds"] or 0.0))
        assert res["traced"] <= seconds + grace, res
        assert res["wall"] <= seconds + grace + 2.0, res  # analysis included
        assert all(p > 0 for p in res["progress"]), res  # every worker ran during the window
        assert res["switchinterval"] == pytest.approx(0.005), res
