"""The docs that are generated from code stay current; the README opens as promised."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

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
    # every section of figures is generated (the cache's with its hash seed; the hours-long
    # leak verdicts and soak behind --long)
    assert {b.name for b in blocks} >= {
        "core", "footprint", "tree", "cli", "http", "servers", "cache", "dashboard", "server_view",
        "heapprof", "leaks", "node_inspector", "soak", "scan", "control", "history", "metrics", "oom_cgroup",
    }  # fmt: skip
    assert next(b for b in blocks if b.name == "cache").env == {"PYTHONHASHSEED": "0"}
    # the default set (no --long) holds a block of every bar's benchmark; the hours go behind --long
    default = {b.name for b in blocks if not b.long}
    assert default >= {"core", "footprint", "tree", "cli", "http", "cache", "heapprof"}
    assert {b.name for b in blocks if b.long} >= {"servers", "heapprof", "leaks", "soak", "oom_cgroup"}
    assert all(b.long for b in blocks if b.name in {"servers", "leaks", "soak", "oom_cgroup"})
    for block in blocks:
        assert (ROOT / block.path).is_file(), block.path
        assert block.quick is not None, f"{block.script}: a quick: form for the generator's check"
        assert f"    {block.shown()}" in text, f"the command {block.shown()!r} is not shown in its section"


def test_a_spec_names_its_environment_quick_form_and_length() -> None:
    parse = _run_all()["parse_spec"]
    b = parse("PYTHONHASHSEED=0 bench_cache.py --ops 10 | quick: --ops 1 | long")
    assert (b.script, b.args, b.quick, b.env, b.long) == (
        "bench_cache.py",
        ["--ops", "10"],
        ["--ops", "1"],
        {"PYTHONHASHSEED": "0"},
        True,
    )
    assert b.shown() == "PYTHONHASHSEED=0 python benchmarks/bench_cache.py --ops 10"
    soak = parse("scenarios/soak.py --seconds 9 | quick: --seconds 1 | long")
    assert (soak.path, soak.name, soak.shown(True)) == (
        "scenarios/soak.py",
        "soak",
        "python scenarios/soak.py --seconds 1",
    )
    assert parse("bench_leaks.py kinds --quick | quick: kinds").names == {"leaks", "leaks:kinds"}
    with pytest.raises(ValueError, match="unknown part"):
        parse("bench_x.py | fast: --rounds 1")


def test_match_selects_single_blocks_by_their_command_long_ones_included() -> None:
    ns = _run_all()
    parse, selected = ns["parse_spec"], ns["selected"]
    rounds = parse("bench_servers.py --rounds 4 --seconds 10 | quick: --rounds 1 | long")
    count = parse("bench_servers.py --count --frameworks aiohttp | long")
    assert selected(rounds, quick=False, only=None, long=False, match=["--rounds 4"])
    assert not selected(count, quick=False, only=None, long=False, match=["--rounds 4"])
    assert not selected(rounds, quick=False, only=None, long=False)  # long: not by default
    assert selected(count, quick=False, only={"servers"}, long=False)  # --only takes every block
    foot = parse("bench_footprint.py --rounds 5 | quick: --rounds 1")
    foot_soak = parse("bench_footprint.py --rounds 5 --soak 300 | long")
    end = ["bench_footprint.py --rounds 5$"]
    assert selected(foot, quick=False, only=None, long=False, match=end)
    assert not selected(foot_soak, quick=False, only=None, long=False, match=end)


def test_the_generator_regenerates_a_section_of_the_document_and_keeps_the_prose(tmp_path: Path) -> None:
    # A copy of docs/benchmarks.md, one cheap section in its quick form: that block holds the
    # command, the date, the machine, the load and the printed output; every other block and
    # every line of prose is as it was.
    run_all = _run_all()
    doc = tmp_path / "benchmarks.md"
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    doc.write_text(text, encoding="utf-8")
    out = tmp_path / "new.md"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run_all.py"),
            "--quick",
            "--only",
            "scan",
            "--doc",
            str(doc),
            "--write",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    new = out.read_text(encoding="utf-8")
    block = run_all["BLOCK"]
    assert block.sub("", new) == block.sub("", text)  # the prose: unchanged
    specs = [m.group("spec") for m in block.finditer(text)]
    old_bodies = [m.group("body") for m in block.finditer(text)]
    new_bodies = [m.group("body") for m in block.finditer(new)]
    changed = [i for i, (a, b) in enumerate(zip(old_bodies, new_bodies)) if a != b and specs[i] != "summary"]
    assert len(new_bodies) == len(old_bodies) and len(changed) == 1
    assert specs[changed[0]].startswith("bench_scan.py ")
    # the summary is composed again from the new blocks (no hand-made table at the top)
    assert new_bodies[specs.index("summary")] == run_all["summary"](new)
    body = new_bodies[changed[0]]
    assert body.startswith("Printed by `python benchmarks/bench_scan.py --objects 20000 --rounds 1` on ")
    assert "CPUs" in body and "Python 3." in body and "load average" in body and "--quick: a smoke run" in body
    assert re.search(r" on \d{4}-\d\d-\d\d \d\d:\d\d UTC, commit [0-9a-f]{7,}( \+ changes)?, ", body)  # the code that ran
    assert "```text\nload average" in body and "python / c" in body  # its output, as printed
    assert "Figures transcribed by hand" not in body


def test_the_generator_puts_what_a_benchmark_printed_in_its_block(tmp_path: Path) -> None:
    # A document of one block (a cheap benchmark, its quick form): the block's text is
    # replaced by the command, the date, the load and the printed output; nothing else moves.
    doc = tmp_path / "doc.md"
    spec = "bench_tree.py --children 100 | quick: --children 2 --unrelated 0 --rounds 1 --reps 2"
    summary = "<!-- run_all: summary -->\n<!-- /run_all -->\n\n"
    doc.write_text(f"# T\n\n{summary}before\n\n<!-- run_all: {spec} -->\nstale figures\n<!-- /run_all -->\n\nafter\n")
    out = tmp_path / "new.md"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--doc", str(doc), "--write", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    new = out.read_text()
    assert new.startswith("# T\n\n<!-- run_all: summary -->\n") and new.endswith("<!-- /run_all -->\n\nafter\n")
    assert "\n<!-- /run_all -->\n\nbefore\n\n<!-- run_all: bench_tree.py " in new
    assert "stale figures" not in new
    assert "Printed by `python benchmarks/bench_tree.py --children 2 --unrelated 0 --rounds 1 --reps 2`" in new
    assert "--quick: a smoke run" in new
    assert "```text\nhost processes: " in new and "memdiag walker   median" in new  # its output, as printed
    # its bar line, a row of the summary at the top (marked as a smoke run's)
    row = next(ln for ln in new.splitlines() if ln.startswith("| one tick over "))
    assert "children, median <= 5 ms | " in row and "(`--quick`: smoke run) | " in row
    assert "| `python benchmarks/bench_tree.py --children 2 --unrelated 0 --rounds 1 --reps 2` |" in row  # as run
    assert new.index(row) < new.index("before\n")


def test_the_summary_at_the_top_is_composed_from_the_blocks_bar_lines() -> None:
    # The headline table is run_all's, from the `- bar:` lines the benchmarks printed in the
    # blocks below: edited by hand, or left stale after a block changed, it fails here.
    run_all = _run_all()
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    summaries = [m for m in run_all["BLOCK"].finditer(text) if m.group("spec") == "summary"]
    assert len(summaries) == 1 and text.index("<!-- run_all: summary -->") < text.index("<!-- run_all: bench_")
    assert summaries[0].group("body") == run_all["summary"](text), "run: python benchmarks/run_all.py --only summary --write docs/benchmarks.md"


def test_a_bar_line_becomes_a_summary_row_with_its_command_date_and_load() -> None:
    run_all = _run_all()
    doc = (
        "<!-- run_all: summary -->\nold\n<!-- /run_all -->\n\n"
        "<!-- run_all: bench_x.py --rounds 5 | quick: --rounds 1 -->\n"
        "Printed by `python benchmarks/bench_x.py --rounds 5` on 2026-12-07 06:00 UTC, 2 CPUs, "
        "load average 1.5 before and 2.0 after:\n\n| a | b |\n\n"
        "- bar: `x` p99 <= 3 ms with 50 clients: met (2.10 ms, median of 5 rounds)\n"
        "- bar: the same | piped: NOT met (7 ms)\n- bar: no verdict here (1 ms)\n"
        "<!-- /run_all -->\n"
        "<!-- run_all: bench_y.py | quick: --quick -->\nFigures transcribed by hand ...\n"
        "- bar: y: met (1 ms)\n<!-- /run_all -->\n"
    )
    table = run_all["summary"](doc)
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert rows == [
        "| `x` p99 <= 3 ms with 50 clients | 2.10 ms, median of 5 rounds | met "
        "| `python benchmarks/bench_x.py --rounds 5` | 2026-12-07 06:00 UTC, load 1.5 before and 2.0 after |",
        "| the same \\| piped | 7 ms | NOT met | `python benchmarks/bench_x.py --rounds 5` "
        "| 2026-12-07 06:00 UTC, load 1.5 before and 2.0 after |",
    ]
    assert "the blocks of y still hold figures transcribed by hand" in table
    assert run_all["blocks"](doc)[0].script == "bench_x.py"  # the summary runs nothing


# A figure: a number with a unit results are given in. Parameters of a run are written so as
# not to read as one (a 512-KiB interval, 1 MiB/min, `--seconds 1.5`), bars after their
# comparison (<= 50 ms, within 5 %), and a confidence level before its name (95 % CI).
FIGURE = re.compile(r"(?<![\w.,-])\d[\d,]*(?:\.\d+)? ?(?:ms|us|µs|MiB|MB|KiB|KB|kB|GiB|GB|%|x)(?![\w/])")
NOT_A_RESULT_BEFORE = ("<=", ">=", "<", ">", "≤", "≥", "within", "bar")
NOT_A_RESULT_AFTER = ("confidence", "CI")


def _prose_lines(text: str) -> list[str]:
    """The document's lines with what is not prose blanked: generated blocks, comments, code
    (fenced, indented command lines, inline spans); line numbers kept."""
    text = _run_all()["BLOCK"].sub(lambda m: "\n" * m.group(0).count("\n"), text)
    text = re.sub(r"<!--.*?-->|```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return ["" if ln.startswith("    ") else re.sub(r"`[^`\n]*`", "", ln) for ln in text.split("\n")]


def figures_outside_blocks(text: str) -> list[str]:
    found = []
    for no, line in enumerate(_prose_lines(text), 1):
        for m in FIGURE.finditer(line):
            if line[: m.start()].rstrip().endswith(NOT_A_RESULT_BEFORE):
                continue
            if line[m.end() :].lstrip().startswith(NOT_A_RESULT_AFTER):
                continue
            found.append(f"line {no}: {m.group(0)!r} in {line.strip()!r}")
    return found


def test_no_figure_in_the_benchmarks_doc_is_outside_a_generated_block() -> None:
    # Every figure of docs/benchmarks.md is what a benchmark printed into its block; prose
    # that restates one goes stale when the block is regenerated (issue 17).
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert figures_outside_blocks(text) == [], "move the figure into a block, or point at the block instead"


def test_the_figure_rule_catches_a_copied_figure_and_spares_parameters_and_bars() -> None:
    doc = (
        "<!-- run_all: bench_x.py | quick: --quick -->\n| memdiag | 1.62 ms | 3.4x |\n<!-- /run_all -->\n"
        "The tick takes 1.62 ms, 13x faster than psutil, +7.90 MiB, 0.5 % of a core.\n"
        "A 512-KiB interval, 1 MiB/min, bar <= 50 ms, within 5 %, the 95 % CI, `--seconds 1.5 ms`.\n"
        "    python benchmarks/bench_x.py --budget 8 MiB\n"
        "```text\n3.2 ms\n```\n"
    )
    assert [f.split(" in ")[0] for f in figures_outside_blocks(doc)] == [
        "line 4: '1.62 ms'",
        "line 4: '13x'",
        "line 4: '7.90 MiB'",
        "line 4: '0.5 %'",
    ]


def test_a_benchmark_that_exits_non_zero_on_a_bar_not_met_keeps_its_output_and_a_crash_stops_the_run(
    tmp_path: Path,
) -> None:
    # soak.py exits 1 when its verdict fails: its printed figures still belong in the
    # document. A script that fails without judging a bar (a crash) writes nothing.
    judged, crashed = tmp_path / "judged.py", tmp_path / "crashed.py"
    judged.write_text("import sys\nprint('gap 9.1 MiB')\nprint('- bar: gap <= 8 MiB: NOT met (9.1 MiB)')\nsys.exit(1)\n")
    crashed.write_text("print('- bar: gap <= 8 MiB: met (7 MiB)')\nraise RuntimeError('boom')\n")
    for script, ok in ((judged, True), (crashed, False)):
        doc, out = tmp_path / "doc.md", tmp_path / f"{script.stem}.md"
        doc.write_text(f"<!-- run_all: summary -->\n<!-- /run_all -->\n<!-- run_all: {script} | quick: -->\nold\n<!-- /run_all -->\n")
        r = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--doc", str(doc), "--write", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if ok:
            assert r.returncode == 0 and "a bar not met" in r.stderr, r.stderr
            assert "gap 9.1 MiB" in out.read_text() and "| gap <= 8 MiB | 9.1 MiB | NOT met |" in out.read_text()
        else:
            assert r.returncode != 0 and "nothing written" in r.stderr and not out.exists()
