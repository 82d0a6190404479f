"""``memdiag profile --heap``: the live heap of a real service written as pprof and speedscope."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from click.testing import CliRunner

from memdiag.cli import memory_group
from memdiag.leaks.export import to_pprof, to_speedscope

from .test_cli_support import service as service
from .test_cli_support import start_service

HEAP_SERVICE = """
import sys, memdiag
d = memdiag.start(http=True, sample_interval=0.1, profile_interval=1.0, heap_profile="on", heap_sample_interval_kb=16)
KEPT = [bytearray(4096) for _ in range(2000)]  # HEAP-SITE
print(d.http_server.url, flush=True)
sys.stdin.read()
memdiag.stop()
"""


def _invoke(*args: str):
    return CliRunner().invoke(memory_group, list(args), catch_exceptions=False)


def test_profile_heap_writes_pprof_and_speedscope(tmp_path: Path) -> None:
    script = tmp_path / "svc.py"
    script.write_text(HEAP_SERVICE, encoding="utf-8")
    svc = start_service(script=script)
    try:
        out = tmp_path / "heap.pb.gz"
        r = _invoke("profile", "--url", svc.url, "--heap", str(out))
        assert r.exit_code == 0, r.output
        raw = gzip.decompress(out.read_bytes())
        assert str(script).encode() in raw and b"inuse_space" in raw  # string table
        ss = tmp_path / "heap.speedscope.json"
        r = _invoke("profile", "--url", svc.url, "--heap", str(ss), "--format", "speedscope", "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["sites"] > 0
        doc = json.loads(ss.read_text(encoding="utf-8"))
        frames = doc["shared"]["frames"]
        prof = doc["profiles"][0]
        # The site holding ~8 MB is the heaviest stack, and its leaf is the HEAP-SITE line.
        heaviest = max(range(len(prof["weights"])), key=lambda i: prof["weights"][i])
        leaf = frames[prof["samples"][heaviest][-1]]
        assert leaf["file"] == str(script) and leaf["line"] == 4
        # sampled (one sample per 16 KiB here: ~500 samples, a few % of error) or exact (stand-in)
        assert prof["weights"][heaviest] >= 0.8 * 2000 * 4096
    finally:
        svc.stop()


def test_profile_heap_without_a_heap_profile_says_so(tmp_path: Path) -> None:
    svc = start_service(env={"MEMDIAG_HEAP_PROFILE": "off"})  # the sampler is on by default where built
    try:
        r = CliRunner().invoke(memory_group, ["profile", "--url", svc.url, "--heap", str(tmp_path / "x")])
        assert r.exit_code != 0 and "heap profile is not running" in r.output
        assert not (tmp_path / "x").exists()
    finally:
        svc.stop()


def test_pprof_encoding_of_native_and_python_sites() -> None:
    data = {
        "backend": "preload",
        "interval_bytes": 1024,
        "taken_at": 1.0,
        "sites": [
            {"stack": [["/a.py", 3, "f"], ["/b.py", 9, "main"]], "domain": "native", "live_bytes": 5000.0,
             "live_count": 5.0, "alloc_bytes": 9000.0, "alloc_count": 9.0},
        ],
    }
    raw = gzip.decompress(to_pprof(data))
    for text in (b"/a.py", b"/b.py", b"alloc_space", b"native code"):
        assert text in raw
    doc = to_speedscope(data)
    assert doc["profiles"][0]["name"].endswith("(native)")
    assert [doc["shared"]["frames"][i]["file"] for i in doc["profiles"][0]["samples"][0]] == ["/b.py", "/a.py"]
