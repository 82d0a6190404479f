"""What each command imports, not how long it takes (timings are the benchmark's job:
benchmarks/bench_cli.py). Like click's tests/test_imports.py: a fresh interpreter runs the
command and reports the modules it added to ``sys.modules``; each command may load only
what it uses (the HTTP client only to talk to a service, no psutil even to look from outside,
the renderers only for text output, click only for help, usage errors and the commands
that are not everyday ones).

The interpreter runs with ``-S`` and memdiag's source and site-packages on ``PYTHONPATH``:
``.pth`` files may import anything at start-up (this machine's import certifi, pathlib and
re), which would hide those modules from the check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import memdiag
from memdiag.cli.commands import COMMANDS, FAST

from .test_cli_support import Service
from .test_cli_support import service as service  # the fixture, used by name

RECORD = """
import sys
before = set(sys.modules)
from memdiag.cli import main
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
new = sorted(set(sys.modules) - before)
with open(sys.argv[1], "w") as fh:
    fh.write(f"{code}\\n" + "\\n".join(new))
"""

# memdiag's modules on the path of every command: the package (and its logging policy),
# the entry point, the fast path's option tables, the command list and shared helpers.
CORE = {
    "memdiag",  # not memdiag._logging: without logging loaded, the first memdiag logger installs it
    "memdiag._version",
    "memdiag.errors",
    "memdiag.units",
    "memdiag.cli",
    "memdiag.cli._fast",
    "memdiag.cli._format",
    "memdiag.cli._spec",
    "memdiag.cli.commands",
    "memdiag.cli.commands._common",
}
# What a command parsed by click adds: the groups and the shared click options.
CLICK = {"memdiag.cli._options", "memdiag.cli.commands._group"}
# Finding a registered service: the runtime directory and the /proc stat reader it checks
# PIDs with; reaching it: the API client, over the service's control channel (the client
# side of memdiag.control, not its server).
FIND = {"memdiag._files", "memdiag.runtime", "memdiag.probes", "memdiag.probes._io", "memdiag.probes.process"}
REACH = {
    "memdiag.cli._client",
    "memdiag.cli._target",
    "memdiag._record",  # the target is a record
    "memdiag.control",
    "memdiag.control.client",
}
# What talking to a service takes: the bare C socket (not the socket module, its enums and
# selectors), JSON; h11 only for an answer that is not plain.
HTTP_CLIENT = {"_socket", "json"}
HTTP_CLIENT_NOT = {"http", "ssl", "email"}  # http.client's weight (an https:// URL alone loads ssl)
# Standard modules no everyday command loads (each costs milliseconds at start: dataclasses
# with inspect ~13 ms, typing ~5 ms beyond what json needs; annotations name typing's types
# under `if TYPE_CHECKING:`, the NamedTuples are memdiag._record.tuple_record).
SLOW_STDLIB = {"dataclasses", "inspect", "ast", "dis", "tokenize", "typing"}
NEVER = {"asyncio", "sqlite3", "http.server", "tracemalloc", "subprocess", "concurrent", "logging"}


def imported(*argv: str) -> tuple[int, set[str]]:
    """Run ``memdiag ARGV`` in a fresh ``python -S``; its exit status and the modules it added."""
    src = Path(memdiag.__file__).resolve().parent.parent
    paths = dict.fromkeys([str(src), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    out = Path(os.environ["MEMDIAG_RUNTIME_DIR"]).parent / "modules.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    argv_ = [sys.executable, "-S", "-c", RECORD, str(out), *argv]
    subprocess.run(argv_, env=env, stdout=subprocess.DEVNULL, timeout=60, check=False)
    code, *mods = out.read_text().split("\n")
    return int(code), set(mods)


def tops(mods: set[str]) -> set[str]:
    """Top-level names of the modules not in the standard library."""
    return {m.split(".")[0] for m in mods} - set(sys.stdlib_module_names)


def loaded(mods: set[str], names: set[str]) -> set[str]:
    """Which of ``names`` (modules or packages) are among ``mods``."""
    return {n for n in names if any(m == n or m.startswith(n + ".") for m in mods)}


def test_help_loads_click_and_the_command_modules_and_nothing_they_run() -> None:
    code, mods = imported("--help")
    assert code == 0
    assert tops(mods) == {"click", "memdiag"}
    commands = {f"memdiag.cli.commands.{c}" for c in COMMANDS}
    assert {m for m in mods if m.startswith("memdiag")} == CORE | CLICK | commands
    assert loaded(mods, HTTP_CLIENT | HTTP_CLIENT_NOT | NEVER | {"h11", "pathlib", "dataclasses"}) == set()


def test_profile_of_a_service_loads_the_client_and_no_click_probe_or_renderer(service: Service) -> None:
    code, mods = imported("profile", "--json")
    assert code == 0
    assert tops(mods) == {"memdiag"}  # no click, no h11 (the service's answer is plain), no psutil
    assert {m for m in mods if m.startswith("memdiag")} == CORE | FIND | REACH | {"memdiag.cli.commands.profile"}
    assert loaded(mods, HTTP_CLIENT) == HTTP_CLIENT
    assert loaded(mods, HTTP_CLIENT_NOT | NEVER | SLOW_STDLIB | {"socket", "pathlib", "threading"}) == set()


@pytest.mark.parametrize("argv", [["diagnostics", "--json"], ["leaks", "--json"], ["ps", "--json"], ["profile"]])
def test_the_everyday_commands_of_a_service_start_without_click(service: Service, argv: list[str]) -> None:
    assert argv[0] in FAST
    code, mods = imported(*argv)
    assert code == 0
    assert "click" not in tops(mods)
    assert loaded(mods, CLICK | HTTP_CLIENT_NOT | NEVER | SLOW_STDLIB) == set()
    if "--json" in argv:
        assert "memdiag.cli._render" not in mods


def test_help_of_an_everyday_command_is_clicks() -> None:
    code, mods = imported("profile", "--help")
    assert code == 0
    assert "click" in tops(mods) and loaded(mods, CLICK) == CLICK


# What an outside view (no service: the machine, or --pid of a process without memdiag)
# adds to finding a service: the same sample, configuration, pressure and report code a
# service runs, its records built without dataclasses (memdiag._record).
OUTSIDE = {
    "memdiag._record",
    "memdiag.cli._outside",
    "memdiag.cli._target",
    "memdiag.cli.commands.profile",
    "memdiag.config",
    "memdiag.pressure",
    "memdiag.probes._gcwalk",
    "memdiag.probes.python",
    "memdiag.probes.system",
    "memdiag.probes.tree",
    "memdiag.projection",
    "memdiag.registry",
    "memdiag.reports",
    "memdiag.sample",
}

@pytest.mark.parametrize("view", ["machine", "process"])
def test_the_outside_view_loads_no_http_client_and_no_renderer_for_json(view: str) -> None:
    argv = ["profile", "--json"] + (["--pid", str(os.getpid())] if view == "process" else [])
    code, mods = imported(*argv)
    assert code == 0
    assert tops(mods) == {"memdiag"}  # /proc is read directly: no psutil
    redact = {"memdiag.redact"} if view == "process" else set()
    assert {m for m in mods if m.startswith("memdiag")} == CORE | FIND | OUTSIDE | redact
    assert loaded(mods, SLOW_STDLIB | {"threading"}) == set()
    assert loaded(mods, HTTP_CLIENT_NOT | {"h11", "memdiag.cli._client", "memdiag.cli._render"}) == set()
    # what the view does not use: logging, pathlib, the history ring and statistics
    assert loaded(mods, {"logging", "pathlib", "memdiag.history", "memdiag.stats", "memdiag._logging"}) == set()
    assert ("memdiag.redact" in mods) == (view == "process")  # the machine view shows no command line
    others = {f"memdiag.cli.commands.{c}" for c in COMMANDS} - {"memdiag.cli.commands.profile"}
    assert loaded(mods, others | {"memdiag.service", "memdiag.http", "memdiag.leaks", "memdiag.cache"}) == set()


def test_no_command_module_compiles_an_annotation() -> None:
    """A NamedTuple's string annotations (``from __future__ import annotations``) become
    ``typing.ForwardRef`` objects, and the first one runs ``compile()``, which initialises
    the AST types: ~10 M instructions (~3 ms) at every start. The modules of the command
    paths declare theirs evaluated."""
    code = (
        "import gc, sys, typing\n"
        "import memdiag.cli._outside, memdiag.cli._client, memdiag.cli._target, memdiag.redact\n"
        "print([type(o).__name__ for o in gc.get_objects() if isinstance(o, typing.ForwardRef)])\n"
    )
    src = Path(memdiag.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
