"""The docs that are generated from code stay current; the README opens as promised."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_doc_is_current() -> None:
    gen = runpy.run_path(str(ROOT / "scripts" / "gen_config_doc.py"), run_name="not_main")
    assert (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8") == gen["render"](), (
        "run: python scripts/gen_config_doc.py"
    )


def test_readme_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert first_block is not None
    lines = [ln for ln in first_block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(lines) == 2
    assert "demo" in lines[0]
    assert lines[1].strip() == "bash .ci/run"


# -- docs/benchmarks.md: its figures are what the benchmarks print (benchmarks/run_all.py) --


def _run_all() -> dict:
    return runpy.run_path(str(ROOT / "benchmarks" / "run_all.py"), run_name="not_main")


def test_every_generated_block_names_a_benchmark_and_its_command_is_beside_it() -> None:
    run_all = _run_all()
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    blocks = run_all["blocks"](text)
    assert {b.name for b in blocks} >= {"cli", "footprint", "http"}
    for block in blocks:
        assert (ROOT / "benchmarks" / block.script).is_file(), block.script
        assert block.quick is not None, f"{block.script}: a quick: form for the generator's check"
        shown = " ".join(["python", f"benchmarks/{block.script}", *block.args])
        assert f"    {shown}" in text, f"the command {shown!r} is not shown in its section"


def test_the_generator_puts_what_a_benchmark_printed_in_its_block(tmp_path: Path) -> None:
    # A document of one block (a cheap benchmark, its quick form): the block's text is
    # replaced by the command, the date, the load and the printed output; nothing else moves.
    doc = tmp_path / "doc.md"
    spec = "bench_tree.py --children 100 | quick: --children 2 --unrelated 0 --rounds 1 --reps 2"
    doc.write_text(f"# T\n\nbefore\n\n<!-- run_all: {spec} -->\nstale figures\n<!-- /run_all -->\n\nafter\n")
    out = tmp_path / "new.md"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--doc", str(doc), "--write", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    new = out.read_text()
    assert new.startswith("# T\n\nbefore\n\n<!-- run_all: ") and new.endswith("<!-- /run_all -->\n\nafter\n")
    assert "stale figures" not in new
    assert "Printed by `python benchmarks/bench_tree.py --children 2 --unrelated 0 --rounds 1 --reps 2`" in new
    assert "--quick: a smoke run" in new
    assert "```text\nhost processes: " in new and "memdiag walker   median" in new  # its output, as printed
