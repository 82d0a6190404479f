"""Regenerate the figures of docs/benchmarks.md: run every benchmark the document names,
with the arguments it names, and put what each printed in its place.

Run:  python benchmarks/run_all.py [--quick] [--only NAME[,NAME]] [--write docs/benchmarks.md]

The document marks each generated block::

    <!-- run_all: bench_footprint.py --rounds 5 | quick: --rounds 1 -->
    ...what the benchmark printed (replaced at every run)...
    <!-- /run_all -->

The text between the markers is replaced by a line naming the command, the date and the
machine's load (the machines here are shared: the load says how far to trust a time),
then the benchmark's standard output: as it is when it prints Markdown (its lines start
with ``|``), else as a code block. Everything outside the markers is left as written, so
every figure in the document is a benchmark's printed output, with its command beside it.

``--quick`` runs each block with its ``quick:`` arguments instead (blocks without them are
left unchanged): a check that the generator and the benchmarks still run, not figures to
publish. ``--only`` takes script names without ``bench_`` and ``.py`` (``cli,footprint``).
Without ``--write`` the new document goes to stdout. A benchmark that fails stops the
run with its output, and nothing is written.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "benchmarks.md"
BLOCK = re.compile(r"(<!-- run_all: (?P<spec>.*?) -->\n)(?P<body>.*?)(<!-- /run_all -->)", re.S)


class Block(NamedTuple):
    script: str
    args: list[str]
    quick: list[str] | None

    @property
    def name(self) -> str:
        return self.script.removeprefix("bench_").removesuffix(".py")

    def command(self, quick: bool) -> list[str]:
        args = self.quick if quick and self.quick is not None else self.args
        return [sys.executable, str(HERE / self.script), *args]


def parse_spec(spec: str) -> Block:
    """``"bench_x.py --rounds 5 | quick: --rounds 1"`` -> the block's script and arguments."""
    main, _, quick = spec.partition("|")
    script, *args = shlex.split(main)
    quick = quick.strip()
    if quick and not quick.startswith("quick:"):
        raise ValueError(f"unknown part {quick!r} in <!-- run_all: {spec} -->")
    return Block(script, args, shlex.split(quick.removeprefix("quick:")) if quick else None)


def blocks(text: str) -> list[Block]:
    """The generated blocks of a document, in order."""
    return [parse_spec(m.group("spec")) for m in BLOCK.finditer(text)]


def render(block: Block, output: str, quick: bool, load: tuple[float, float]) -> str:
    """The text of a block: its command, when and under what load, and the output."""
    shown = " ".join(["python", f"benchmarks/{block.script}", *(block.quick if quick and block.quick else block.args)])
    head = (
        f"Printed by `{shown}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} before and {load[1]:.1f} after"
        f"{' (--quick: a smoke run, not figures to publish)' if quick else ''}:\n\n"
    )
    out = output.strip("\n")
    if out.lstrip().startswith("|") or "\n|" in out:
        return head + out + "\n\n"
    return head + "```text\n" + out + "\n```\n\n"


def run(block: Block, quick: bool) -> str:
    """Run one benchmark; its standard output (the run stops if it fails)."""
    argv = block.command(quick)
    print(f"run_all: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    before = os.getloadavg()[0]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout)
        raise SystemExit(f"run_all: {block.script} exited with {proc.returncode}; nothing written")
    return render(block, proc.stdout, quick, (before, os.getloadavg()[0]))


def regenerate(text: str, *, quick: bool, only: set[str] | None) -> str:
    """``text`` with every selected block's output replaced by a fresh run."""

    def replace(m: re.Match[str]) -> str:
        block = parse_spec(m.group("spec"))
        if (only and block.name not in only) or (quick and block.quick is None):
            return m.group(0)
        return m.group(1) + run(block, quick) + m.group(4)

    return BLOCK.sub(replace, text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="each block's quick: arguments (a smoke run)")
    ap.add_argument("--only", help="comma-separated benchmark names (cli, footprint, http, ...)")
    ap.add_argument("--doc", type=Path, default=DOC, help="the document to read (default: docs/benchmarks.md)")
    ap.add_argument("--write", type=Path, help="write the new document here (default: stdout)")
    args = ap.parse_args()
    text = args.doc.read_text(encoding="utf-8")
    only = set(args.only.split(",")) if args.only else None
    if only and not only <= {b.name for b in blocks(text)}:
        raise SystemExit(f"run_all: no block for {sorted(only - {b.name for b in blocks(text)})}")
    new = regenerate(text, quick=args.quick, only=only)
    if args.write:
        args.write.write_text(new, encoding="utf-8")
    else:
        sys.stdout.write(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
