"""The everyday commands without click (memdiag.cli._fast): the same parse as click, the
same output, errors and exit statuses, and click's own handling of everything else.

The option tables of memdiag.cli._spec are read twice, by click (the group) and by the
fast parser; these tests hold the two readings together.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from memdiag.cli import memory_group
from memdiag.cli._spec import parse
from memdiag.cli.commands import FAST

from .test_cli_support import SCRIPTS, Service, cli, dead_pid
from .test_cli_support import service as service  # the fixture, used by name

# Command lines the fast parser takes (all of them must parse as click parses them) or
# hands to click (None): every kind of option, both spellings, defaults and bounds.
ARGV: list[tuple[str, list[str]]] = [
    ("profile", []),
    ("profile", ["--json"]),
    ("profile", ["--json", "--pid", "123", "--timeout", "2.5"]),
    ("profile", ["--pid=77", "--url=http://127.0.0.1:9/x", "--name", "api"]),
    ("profile", ["--allocations", "--seconds", "0.1"]),
    ("profile", ["--format", "speedscope", "--server", "9"]),
    ("profile", ["--pid", "1", "--pid", "2"]),  # the last one wins
    ("profile", ["--seconds", "0.05"]),  # below the bound: click's error
    ("profile", ["--format", "svg"]),  # not a choice: click's error
    ("profile", ["--pid", "x"]),  # not a number
    ("profile", ["--pid"]),  # no value
    ("profile", ["--json=1"]),  # a flag with a value
    ("profile", ["--heap", "out.pb"]),  # a path: click checks it
    ("profile", ["-h"]),
    ("profile", ["--jsn"]),
    ("profile", ["extra"]),
    ("diagnostics", ["--json", "--token", "abc"]),
    ("diagnostics", ["--timeout", "0.1"]),
    ("leaks", ["--json"]),
    ("cleanup", []),
    ("cleanup", ["--force", "--dry-run", "--json"]),
    ("ps", ["--timeout", "3"]),
    ("ps", ["--json", "--pid", "1"]),  # not an option of ps
]


def click_params(name: str, argv: list[str]) -> dict[str, Any] | None:
    """What click passes to the command for ``argv`` (``None``: a usage error or help)."""
    cmd = memory_group.get_command(memory_group.make_context("memdiag", [name]), name)
    assert cmd is not None
    try:
        return dict(cmd.make_context(name, list(argv)).params)
    except (Exception, SystemExit):
        return None


@pytest.mark.parametrize(("name", "argv"), ARGV)
def test_the_fast_parser_reads_a_command_line_as_click_does(name: str, argv: list[str]) -> None:
    spec = importlib.import_module(f"memdiag.cli.commands.{name}").SPEC
    fast = parse(spec.options, argv)
    expected = click_params(name, argv)
    if fast is None:  # handed to click: fine whatever click makes of it
        return
    assert expected is not None, f"click refuses {argv}; the fast parser took it as {fast}"
    assert fast == expected


def test_the_token_comes_from_the_environment_as_with_click(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.import_module("memdiag.cli.commands.leaks").SPEC
    monkeypatch.setenv("MEMDIAG_API_TOKEN", "from-env")
    assert parse(spec.options, [])["token"] == click_params("leaks", [])["token"] == "from-env"  # type: ignore[index]
    assert parse(spec.options, ["--token", "given"])["token"] == "given"  # type: ignore[index]
    monkeypatch.setenv("MEMDIAG_API_TOKEN", "")
    assert parse(spec.options, [])["token"] is None  # type: ignore[index]
    assert click_params("leaks", [])["token"] is None  # type: ignore[index]


def test_every_fast_command_has_its_table_and_function() -> None:
    for name in FAST:
        module = importlib.import_module(f"memdiag.cli.commands.{name}")
        assert module.SPEC.name == name and callable(getattr(module, name))


def same_as_click(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``memdiag ARGV`` (the fast path), and the same through click in-process; assert
    the same exit status and stderr; returns the subprocess's result."""
    r = cli(*argv, env=env)
    ours = CliRunner().invoke(memory_group, argv, env=env, prog_name="memdiag")
    assert r.returncode == ours.exit_code, (r.stderr, ours.output)
    assert r.stderr == ours.stderr
    return r


def test_errors_and_exit_statuses_are_clicks() -> None:
    gone = dead_pid()
    r = same_as_click(["profile", "--json", "--pid", str(gone)])
    assert r.returncode == 2 and r.stderr == f"Error: no process {gone} (it is gone or never existed)\n"
    r = same_as_click(["leaks"])  # no service registered
    assert r.returncode == 2 and r.stderr.startswith("Error: no running memdiag service found; leaks needs one")
    r = same_as_click(["cleanup", "--json", "--name", "nobody"])
    assert r.returncode == 2 and "--name nobody" in r.stderr
    r = same_as_click(["profile", "--seconds", "0"])  # a usage error: click's own message
    assert r.returncode == 2 and "Invalid value for '--seconds'" in r.stderr


def test_a_service_answers_the_fast_path_as_it_answers_click(service: Service) -> None:
    r = same_as_click(["profile", "--json"])
    assert json.loads(r.stdout)["pid"] == service.pid
    r = same_as_click(["ps", "--json"])
    assert [row["pid"] for row in json.loads(r.stdout)] == [service.pid]
    r = same_as_click(["diagnostics"])
    assert f"PID {service.pid}" in r.stdout and "\x1b[" not in r.stdout
    first = cli("cleanup", "--json")  # it runs, then the cooldown refuses the next ones (exit 1)
    assert first.returncode == 0 and json.loads(first.stdout)["performed"] is True
    r = same_as_click(["cleanup", "--json"])
    assert r.returncode == 1 and json.loads(r.stdout)["error"] == "cleanup cooldown"


@pytest.mark.parametrize("argv", [["profile"], ["profile", "--help"]])
def test_a_closed_pipe_ends_the_command_quietly(argv: list[str]) -> None:
    # `memdiag profile | true`: the reader is gone before the report is written. The fast
    # path ends as click's main does (exit 1, nothing on stderr); --help is click's.
    p = subprocess.Popen([str(SCRIPTS / "memdiag"), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()
    with p.stderr:
        err = p.stderr.read().decode()
    p.wait(timeout=60)
    assert p.returncode == 1, err
    assert err == ""


def test_without_click_installed_the_fast_commands_say_which_extra() -> None:
    code = "import sys; sys.modules['click'] = None; from memdiag.cli import main; main(['ps', '--json'])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "pip install 'memdiag[cli]'" in r.stderr
