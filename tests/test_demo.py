"""`memdiag demo` runs for its --duration and serves its dashboard all that time."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import wait_for


@pytest.mark.slow
def test_demo_honours_duration_and_keeps_the_dashboard_up(children: list) -> None:
    duration = 12.0
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "memdiag", "demo", "--duration", str(duration)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, "NO_COLOR": "1"},
    )
    children.append(proc)
    lines: list[str] = []
    url = None
    while url is None:
        line = proc.stdout.readline()
        assert line, "the demo printed no dashboard URL: " + "".join(lines) + proc.stderr.read()
        lines.append(line)
        m = re.match(r"dashboard: (\S+)", line)
        url = m.group(1) if m else None
    page = url.split("#", 1)[0]
    # Late in the run, after the workload's story (a few seconds), the page still answers.
    wait_for(lambda: time.monotonic() - t0 > duration - 3, timeout=duration, what="the end of the run", step=0.2)
    with urllib.request.urlopen(page, timeout=10) as resp:
        assert resp.status == 200 and b"memdiag" in resp.read()
    out, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - t0
    text = "".join(lines) + out
    assert elapsed >= duration, f"ended after {elapsed:.1f} s of {duration} s:\n{text}"
    assert " MB" not in text and "MiB" in text, text  # binary units, one convention
