"""Regenerate the figures of docs/benchmarks.md: run every benchmark the document names,
with the arguments it names, and put what each printed in its place.

Run:  python benchmarks/run_all.py [--quick] [--long] [--only NAME[,NAME]] [--match TEXT] [--list] [--write docs/benchmarks.md]

(From a source tree, with ``PYTHONPATH=src`` and the C extensions built in place, as every
benchmark is run.) The document marks each generated block::

    <!-- run_all: bench_footprint.py --rounds 5 | quick: --rounds 1 -->
    ...what the benchmark printed (replaced at every run)...
    <!-- /run_all -->

The spec is the script (in ``benchmarks/``, or a path from the repository's root such as
``scenarios/soak.py``) and its arguments, optionally preceded by environment settings
(``PYTHONHASHSEED=0 bench_cache.py ...``), then parts after ``|``: ``quick: ARGS`` (the
smoke form) and ``long`` (a run of many minutes: only with ``--long``, or when ``--only``
names it). The text between the markers is replaced by a line naming the command, the
date, the commit (``+ changes`` when the tree differs from it), the machine and its load (the machines here are shared: the load says how far to
trust a time), then the benchmark's standard output: as it is when it prints Markdown (its
lines start with ``|``), else as a code block. Everything outside the markers is left as
written, so every figure in the document is a benchmark's printed output, with its command
beside it.

``--quick`` runs each block with its ``quick:`` arguments instead (blocks without them are
left unchanged): a check that the generator and the benchmarks still run, not figures to
publish. ``--only`` takes section names: the script's name without ``bench_`` and ``.py``
(``cli``, ``soak``: every block of that script), or with its sub-command (``leaks:kinds``).
``--only summary`` composes the summary alone. ``--match TEXT`` selects single blocks by
their command as the document shows it (``--match "bench_servers.py --rt --rounds 8"``:
one long block, not the script's five; a final ``$`` anchors the end of the command:
``--match "bench_footprint.py --rounds 5$"``). ``--list`` prints the blocks and runs
nothing. Without ``--write`` the new document goes to stdout; each block's run time and the
total go to stderr. The default set (no ``--long``) is meant to fit in about 25 minutes on
a quiet machine: the blocks of many minutes are marked ``long`` (some of them judge bars:
the real servers, the leak verdicts, the soak). A benchmark
that fails stops the run with its output, and nothing is written (one that exits non-zero
having printed a bar line "NOT met" has not failed: its output stands).

The summary at the top of the document (``<!-- run_all: summary -->``) is composed, at every
run, from what the blocks hold: every line a benchmark printed of the form
``- bar: WHAT: RESULT (FIGURE)`` (RESULT one of ``met``, ``NOT met``, ``not shown``) becomes a
row, with the block's command, date and load. So the headline figures are the benchmarks'
printed lines too, and change when their blocks are regenerated.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOC = ROOT / "docs" / "benchmarks.md"
BLOCK = re.compile(r"(<!-- run_all: (?P<spec>[^\n]*?) -->\n)(?P<body>.*?)(<!-- /run_all -->)", re.S)
ENV_SETTING = re.compile(r"[A-Z_][A-Z0-9_]*=\S*")
SUMMARY = "summary"  # the spec of the block composed from the others' bar lines
BAR_LINE = re.compile(
    r"^\s*- bar: (?P<what>.+): (?P<result>met|NOT met|not shown)(?: \((?P<figure>.*)\))?[ \t]*$", re.M
)
PRINTED = re.compile(r"^Printed by `[^`]*` on (?P<when>[^,]*),.*?load average (?P<load>[^:(]*?)\s*[:(]", re.M)
HAND = "Figures transcribed by hand"
SMOKE = "--quick: a smoke run"


class Block(NamedTuple):
    script: str
    args: list[str]
    quick: list[str] | None
    env: dict[str, str] | None = None  # settings the command runs with (PYTHONHASHSEED=0)
    long: bool = False

    @property
    def path(self) -> str:
        """The script from the repository's root (``benchmarks/bench_x.py``)."""
        return self.script if "/" in self.script else f"benchmarks/{self.script}"

    @property
    def name(self) -> str:
        return Path(self.script).stem.removeprefix("bench_")

    @property
    def names(self) -> set[str]:
        """What ``--only`` may call it: the name, and with a sub-command ``name:sub``."""
        sub = self.args[0] if self.args and not self.args[0].startswith("-") else None
        return {self.name} | ({f"{self.name}:{sub}"} if sub else set())

    def arguments(self, quick: bool) -> list[str]:
        return self.quick if quick and self.quick is not None else self.args

    def command(self, quick: bool) -> list[str]:
        return [sys.executable, str(ROOT / self.path), *self.arguments(quick)]

    def shown(self, quick: bool = False) -> str:
        """The command as the document shows it (and a reader types it)."""
        env = [f"{k}={v}" for k, v in (self.env or {}).items()]
        return " ".join([*env, "python", self.path, *self.arguments(quick)])


def parse_spec(spec: str) -> Block:
    """``"[ENV=V ...] bench_x.py --rounds 5 | quick: --rounds 1 | long"`` -> a :class:`Block`."""
    main, *parts = (p.strip() for p in spec.split("|"))
    words = shlex.split(main)
    env = {}
    while words and ENV_SETTING.fullmatch(words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if not words:
        raise ValueError(f"no script in <!-- run_all: {spec} -->")
    quick: list[str] | None = None
    long = False
    for part in parts:
        if part.startswith("quick:"):
            quick = shlex.split(part.removeprefix("quick:"))
        elif part == "long":
            long = True
        else:
            raise ValueError(f"unknown part {part!r} in <!-- run_all: {spec} -->")
    return Block(words[0], words[1:], quick, env, long)


def blocks(text: str) -> list[Block]:
    """The generated blocks of a document, in order (not the summary, which runs nothing)."""
    return [parse_spec(m.group("spec")) for m in BLOCK.finditer(text) if m.group("spec").strip() != SUMMARY]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").strip()


def summary(text: str) -> str:
    """The summary block's text: one row per ``- bar:`` line printed in the document's blocks."""
    rows, pending = [], []
    for m in BLOCK.finditer(text):
        if m.group("spec").strip() == SUMMARY:
            continue
        block, body = parse_spec(m.group("spec")), m.group("body")
        if HAND in body:
            pending.append(block)
            continue
        head = PRINTED.search(body)
        when = f"{head.group('when')}, load {head.group('load')}" if head else "-"
        smoke = " (`--quick`: smoke run)" if SMOKE in body else ""
        command = block.shown(quick=bool(smoke))  # the command that printed it
        for bar in BAR_LINE.finditer(body):
            rows.append(
                f"| {_cell(bar.group('what'))} | {_cell(bar.group('figure') or '-')} | {bar.group('result')}{smoke} "
                f"| `{_cell(command)}` | {_cell(when)} |"
            )
    out = [
        "Composed by `python benchmarks/run_all.py` from the `- bar:` lines the benchmarks printed in the blocks "
        "below: the figure and the verdict as printed, the command that printed them, when, and the machine's "
        "load then (the machines here are shared: a time taken at a high load is an upper bound).",
        "",
        "| bar | figure | result | printed by | when, load average |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ]
    if pending:
        names = sorted({b.name for b in pending})
        out += [
            "",
            f"Not in this table: the blocks of {', '.join(names)} still hold figures transcribed by hand "
            f"(`python benchmarks/run_all.py --only {','.join(names)} --write docs/benchmarks.md` prints them).",
        ]
    return "\n".join(out) + "\n\n"


def machine() -> str:
    """``2 CPUs (model), Linux 6.1, Python 3.11.7``: what the figures were taken on."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    cpus = f"{os.cpu_count()} CPUs" + (f" ({model})" if model else "")
    return f"{cpus}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def commit() -> str:
    """``commit 1a2b3c4`` (``+ changes`` when the tree differs from it): the code that ran."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "benchmarks", "scenarios"], cwd=ROOT,
                               capture_output=True, text=True)  # fmt: skip
    except OSError:
        return "commit unknown"
    if head.returncode != 0:
        return "commit unknown"
    return f"commit {head.stdout.strip()}{' + changes' if dirty.stdout.strip() else ''}"


def render(block: Block, output: str, quick: bool, load: tuple[float, float]) -> str:
    """The text of a block: its command, when, on what code and machine, under what load, and the output."""
    head = (
        f"Printed by `{block.shown(quick)}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{commit()}, {machine()}, load average {load[0]:.1f} before and {load[1]:.1f} after"
        f"{' (--quick: a smoke run, not figures to publish)' if quick else ''}:\n\n"
    )
    out = output.strip("\n")
    if out.lstrip().startswith("|") or "\n|" in out:
        return head + out + "\n\n"
    return head + "```text\n" + out + "\n```\n\n"


def run(block: Block, quick: bool) -> str:
    """Run one benchmark; its standard output (the run stops if it fails)."""
    argv = block.command(quick)
    print(f"run_all: {block.shown(quick)}", file=sys.stderr, flush=True)
    before, started = os.getloadavg()[0], time.monotonic()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, **(block.env or {})})
    print(f"run_all: {block.shown(quick)}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        # a benchmark that judges its own bars may exit non-zero when one is not met (soak.py):
        # its output stands; any other failure stops the run
        if not any(m.group("result") == "NOT met" for m in BAR_LINE.finditer(proc.stdout)):
            sys.stderr.write(proc.stdout)
            raise SystemExit(f"run_all: {block.shown(quick)} exited with {proc.returncode}; nothing written")
        print(f"run_all: {block.shown(quick)} exited with {proc.returncode}: a bar not met", file=sys.stderr)
    return render(block, proc.stdout, quick, (before, os.getloadavg()[0]))


def selected(block: Block, *, quick: bool, only: set[str] | None, long: bool, match: list[str] | None = None) -> bool:
    """Whether this run regenerates ``block`` (``match``: only blocks whose command, as the
    document shows it, contains one of these strings, or ends with one written with a final ``$``; long ones
    included)."""
    if match:
        shown = block.shown()
        hit = any(shown.endswith(m[:-1]) if m.endswith("$") else m in shown for m in match)
        return hit and not (quick and block.quick is None)
    if only is not None:
        return bool(block.names & only) and not (quick and block.quick is None)
    return (long or not block.long) and not (quick and block.quick is None)


def regenerate(
    text: str, *, quick: bool, only: set[str] | None, long: bool = False, match: list[str] | None = None
) -> str:
    """``text`` with every selected block's output replaced by a fresh run."""

    def replace(m: re.Match[str]) -> str:
        if m.group("spec").strip() == SUMMARY:
            return m.group(0)
        block = parse_spec(m.group("spec"))
        if not selected(block, quick=quick, only=only, long=long, match=match):
            return m.group(0)
        return m.group(1) + run(block, quick) + m.group(4)

    def compose(m: re.Match[str]) -> str:
        return m.group(1) + summary(new) + m.group(4) if m.group("spec").strip() == SUMMARY else m.group(0)

    new = BLOCK.sub(replace, text)
    return BLOCK.sub(compose, new)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="each block's quick: arguments (a smoke run)")
    ap.add_argument("--long", action="store_true", help="also the blocks marked long (leak verdicts, soak: hours)")
    ap.add_argument("--only", help="comma-separated section names (cli, footprint, leaks:kinds, soak, ...)")
    ap.add_argument("--match", action="append", metavar="TEXT",
                    help="only the blocks whose command contains TEXT (repeatable; long ones included)")
    ap.add_argument("--list", action="store_true", help="print the blocks and their commands; run nothing")
    ap.add_argument("--doc", type=Path, default=DOC, help="the document to read (default: docs/benchmarks.md)")
    ap.add_argument("--write", type=Path, help="write the new document here (default: stdout)")
    args = ap.parse_args()
    text = args.doc.read_text(encoding="utf-8")
    found = blocks(text)
    if args.list:
        for b in found:
            flags = " (long)" if b.long else ""
            print(f"{'/'.join(sorted(b.names))}{flags}: {b.shown()}  | quick: {b.shown(True)}")
        return 0
    only = set(args.only.split(",")) if args.only else None
    known = set().union(*(b.names for b in found)) | {SUMMARY}  # --only summary: the summary alone
    if only and not only <= known:
        raise SystemExit(f"run_all: no block for {sorted(only - known)} (blocks: {', '.join(sorted(known))})")
    started = time.monotonic()
    new = regenerate(text, quick=args.quick, only=only, long=args.long, match=args.match)
    print(f"run_all: done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    if args.write:
        args.write.write_text(new, encoding="utf-8")
    else:
        sys.stdout.write(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
