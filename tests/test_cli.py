"""The CLI in-process (click's CliRunner), against real service processes and real /proc."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from memdiag import runtime
from memdiag.cli import claude_pm_main, main, memory_group
from memdiag.cli._format import human_bytes, human_duration, table
from memdiag.config import FIELD_INFO, default_config_path, load_config
from memdiag.probes.process import read_stat

from .conftest import spawn_sleeper, wait_for
from .test_cli_support import Service, dead_pid, start_service
from .test_cli_support import service as service  # the fixture, used by name


def invoke(*args: str) -> click.testing.Result:
    return CliRunner().invoke(memory_group, list(args), catch_exceptions=False)


# -- surface ---------------------------------------------------------------------------


def test_group_has_the_spec_commands_and_ours() -> None:
    out = invoke("--help").output
    for name in ("profile", "cleanup", "diagnostics", "configure", "ps", "watch", "run", "demo", "leaks"):
        assert f"  {name} " in out, name


def test_every_config_field_has_a_flag_plus_the_spec_aliases() -> None:
    helptext = invoke("configure", "--help").output
    for name, info in FIELD_INFO.items():
        flag = "--" + name.replace("_", "-")
        assert flag in helptext, flag
        if info.type is bool:
            assert f"--no-{flag[2:]}" in helptext
    for alias in ("--threshold", "--auto-cleanup", "--no-auto-cleanup", "--interval"):
        assert alias in helptext
    assert "--threshold" in invoke("run", "--help").output


def test_a_host_cli_mounts_the_group(service: Service) -> None:
    @click.group()
    def host() -> None:
        """A host application's CLI."""

    host.add_command(memory_group, "memory")
    r = CliRunner().invoke(host, ["memory", "profile", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["pid"] == service.pid


def test_main_and_claude_pm_main_run_the_same_group(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    for fn, argv in ((main, ["profile", "--json"]), (claude_pm_main, ["memory", "profile", "--json"])):
        with pytest.raises(SystemExit) as exc:
            fn(argv)
        assert exc.value.code == 0
        assert json.loads(capsys.readouterr().out)["pid"] == service.pid


# -- profile / diagnostics -------------------------------------------------------------


def test_profile_json_is_the_apis_json(service: Service) -> None:
    r = invoke("profile", "--json")
    assert r.exit_code == 0, r.output
    cli_data = json.loads(r.output)
    status, api_data = service.api("GET", "/api/memory/profile")
    assert status == 200
    assert set(cli_data) == set(api_data)
    assert cli_data["pid"] == api_data["pid"] == service.pid
    assert cli_data["process"]["threshold_bytes"] == 500 * 1024 * 1024


def test_profile_for_people_shows_threshold_system_caches_pressure(service: Service) -> None:
    r = invoke("profile")
    assert r.exit_code == 0, r.output
    out = r.output
    assert f"PID {service.pid}" in out
    assert "of 500.0 MiB threshold" in out
    assert "System" in out and "% used" in out
    assert "Pressure  OK" in out
    assert "No caches registered." in out
    assert "\x1b[" not in out  # not a terminal: no colour


def test_diagnostics_json_and_text(service: Service) -> None:
    data = json.loads(invoke("diagnostics", "--json").output)
    for key in ("profile", "config", "subprocesses", "trends", "pressure_events", "cleanup", "overhead"):
        assert key in data
    out = invoke("diagnostics").output
    assert "Configuration" in out and "memory_threshold_mb" in out
    assert "Subprocesses (0)" in out and "Trends" in out


def test_profile_with_no_service_shows_the_machine() -> None:
    r = invoke("profile", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["view"] == "machine"
    assert data["system"]["total_bytes"] > 0
    pids = [p["pid"] for p in data["top_processes"]]
    assert pids and all(isinstance(p, int) for p in pids)
    text = invoke("profile").output
    assert "Machine memory" in text and "Largest processes" in text


def test_largest_processes_are_psutils_rows(tmp_path: Path) -> None:
    # The machine view reads /proc itself; its rows are what psutil.process_iter gives:
    # RSS from statm, the 15-byte comm completed from the command line, the real user's name.
    import psutil

    from memdiag.cli._outside import largest_processes

    exe = tmp_path / "memdiag-long-named-python"  # longer than the kernel's 15-byte comm
    exe.symlink_to(sys.executable)
    code = "import sys, time; b = bytearray(256 << 20); print('ready', flush=True); time.sleep(60)"
    child = subprocess.Popen([str(exe), "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        rows = {r["pid"]: r for r in largest_processes(limit=100_000)}
        ours = rows[child.pid]
        p = psutil.Process(child.pid)
        assert ours == {"pid": child.pid, "name": p.name(), "user": p.username(), "rss_bytes": p.memory_info().rss}
        assert ours["name"] == "memdiag-long-named-python"
        sizes = [r["rss_bytes"] for r in largest_processes(limit=3)]
        assert len(sizes) == 3 and sizes == sorted(sizes, reverse=True)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_profile_pid_without_agent_shows_the_outside_view(children: list[subprocess.Popen[bytes]]) -> None:
    # A parent with one live child and one zombie (it never waits for the second).
    code = (
        "import subprocess, sys, time\n"
        "live = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "dead = subprocess.Popen(['true'])\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    children.append(parent)
    assert parent.stdout is not None and parent.stdout.readline().strip() == b"ready"
    wait_for(
        lambda: json.loads(invoke("profile", "--json", "--pid", str(parent.pid)).output)["children"]["zombies"] == 1
    )
    data = json.loads(invoke("profile", "--json", "--pid", str(parent.pid)).output)
    assert data["view"] == "outside" and data["agent"] is False
    assert data["process"]["rss_bytes"] > 0 and data["process"]["uss_bytes"] > 0 and data["process"]["pss_bytes"] > 0
    assert data["children"]["count"] == 2
    assert {p["zombie"] for p in data["children"]["processes"]} == {True, False}
    assert data["pressure"]["instant"] is True
    assert "python" in data["unavailable"] and "caches" in data["unavailable"]
    text = invoke("profile", "--pid", str(parent.pid)).output
    assert "seen from outside" in text and "Not visible from outside" in text and "1 zombies" in text


def test_gone_pid_is_exit_2() -> None:
    pid = dead_pid()
    r = invoke("profile", "--pid", str(pid))
    assert r.exit_code == 2
    assert f"no process {pid}" in r.output


# -- choosing the target ---------------------------------------------------------------


def test_two_services_are_ambiguous_and_pid_chooses() -> None:
    a, b = start_service(), start_service()
    try:
        r = invoke("profile")
        assert r.exit_code == 2
        assert str(a.pid) in r.output and str(b.pid) in r.output and "--pid" in r.output
        assert len(r.output.strip().splitlines()) == 1
        for s in (a, b):
            assert json.loads(invoke("profile", "--json", "--pid", str(s.pid)).output)["pid"] == s.pid
        assert json.loads(invoke("profile", "--json", "--url", b.url).output)["pid"] == b.pid
    finally:
        a.stop()
        b.stop()


def _fake_entry(pid: int, start_ticks: int) -> Path:
    d = runtime.runtime_dir(create=True)
    path = d / f"{pid}.json"
    path.write_text(
        json.dumps(
            {"pid": pid, "start_ticks": start_ticks, "url": "http://127.0.0.1:9", "version": "0", "name": "ghost"}
        )
    )
    return path


def test_stale_entries_are_ignored_and_removed() -> None:
    gone = _fake_entry(dead_pid(), 1)
    st = read_stat(os.getpid())
    assert st is not None
    reused = _fake_entry(os.getpid(), st.start_ticks + 1)  # our PID, another start time
    r = invoke("ps", "--json")
    assert r.exit_code == 0 and json.loads(r.output) == []
    assert not gone.exists() and not reused.exists()
    assert json.loads(invoke("profile", "--json").output)["view"] == "machine"


def test_a_service_whose_api_is_gone_is_exit_2() -> None:
    st = read_stat(os.getpid())
    assert st is not None
    _fake_entry(os.getpid(), st.start_ticks)  # alive, but nothing listens on port 9
    r = invoke("profile")
    assert r.exit_code == 2
    assert "not answering" in r.output


def test_a_wrong_token_is_exit_2(service: Service) -> None:
    r = invoke("profile", "--token", "not-the-token-0123456789")
    assert r.exit_code == 2 and "not authorised" in r.output


def test_ps_lists_the_service(service: Service) -> None:
    rows = json.loads(invoke("ps", "--json").output)
    assert [r["pid"] for r in rows] == [service.pid]
    assert rows[0]["pressure"] == "ok" and rows[0]["url"] == service.url and rows[0]["rss_bytes"] > 0
    out = invoke("ps").output
    assert "PRESSURE" in out and service.url in out


# -- cleanup ---------------------------------------------------------------------------


def test_cleanup_then_cooldown_then_force(service: Service) -> None:
    r = invoke("cleanup")
    assert r.exit_code == 0, r.output
    assert "Cleanup done." in r.output and "gc" in r.output and "Freed" in r.output
    r = invoke("cleanup")
    assert r.exit_code == 1
    assert re.search(r"may run again in [45]m \d+s \(at \d\d:\d\d:\d\d\)", r.output) and "--force" in r.output
    body = json.loads(invoke("cleanup", "--json").output)
    assert body["result"]["skipped_reason"] == "cooldown" and body["retry_after_seconds"] > 200
    r = invoke("cleanup", "--force", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["performed"] is True


def test_cleanup_dry_run(service: Service) -> None:
    r = invoke("cleanup", "--dry-run", "--json")
    assert r.exit_code == 0
    assert json.loads(r.output)["dry_run"] is True


def test_cleanup_needs_a_service() -> None:
    r = invoke("cleanup")
    assert r.exit_code == 2 and "no running memdiag service" in r.output
    sleeper = spawn_sleeper()
    try:
        r = invoke("cleanup", "--pid", str(sleeper.pid))
        assert r.exit_code == 2 and "runs no memdiag agent" in r.output
    finally:
        sleeper.kill()
        sleeper.wait()


# -- configure -------------------------------------------------------------------------


def test_configure_applies_live_and_persists_only_when_asked(service: Service) -> None:
    r = invoke("configure", "--threshold", "1000")
    assert r.exit_code == 0, r.output
    assert "memory_threshold_mb = 1000.0" in r.output and "this service only" in r.output
    _, body = service.api("GET", "/api/memory/configure")
    assert body["config"]["memory_threshold_mb"] == 1000.0
    assert not default_config_path().exists()  # services started later are not changed
    r = invoke("configure", "--threshold", "1000", "--persist")
    assert r.exit_code == 0, r.output
    assert f"saved to {default_config_path()}" in r.output  # names the file it wrote
    assert load_config().memory_threshold_mb == 1000.0
    assert invoke("configure", "--no-auto-cleanup").exit_code == 0
    assert service.api("GET", "/api/memory/configure")[1]["config"]["enable_auto_cleanup"] is False
    assert invoke("configure", "--auto-cleanup", "--interval", "0.5").exit_code == 0
    cfg = service.api("GET", "/api/memory/configure")[1]["config"]
    assert cfg["enable_auto_cleanup"] is True and cfg["sample_interval"] == 0.5
    r = invoke("configure", "--cleanup-cooldown", "60", "--no-persist")
    assert r.exit_code == 0 and "not saved" in r.output
    assert load_config().cleanup_cooldown == 300.0
    assert load_config().enable_auto_cleanup is True  # --no-auto-cleanup above was not saved


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--threshold", "-5"], "memory_threshold_mb"),
        (["--threshold", "lots"], "memory_threshold_mb"),
        (["--cache-pressure-threshold", "1.5"], "cache_pressure_threshold"),
        (["--auto-cleanup-level", "panic"], "auto_cleanup_level"),
        (["--threshold", "800", "--warning-ratio", "7"], "warning_ratio"),
    ],
)
def test_configure_invalid_value_is_exit_2_and_changes_nothing(service: Service, args: list[str], field: str) -> None:
    before = service.api("GET", "/api/memory/configure")[1]["config"]
    r = invoke("configure", *args)
    assert r.exit_code == 2
    assert field in r.output and len(r.output.strip().splitlines()) == 1
    assert service.api("GET", "/api/memory/configure")[1]["config"] == before
    assert not default_config_path().exists()


def test_configure_a_field_the_service_will_not_take_live(service: Service) -> None:
    r = invoke("configure", "--http-port", "8123")
    assert r.exit_code == 2
    assert "http_port" in r.output and "nothing was changed" in r.output
    assert not default_config_path().exists()
    r = invoke("configure", "--local", "--http-port", "8123")
    assert r.exit_code == 0 and load_config().http_port == 8123


def test_configure_without_service_saves_the_file() -> None:
    r = invoke("configure", "--threshold", "700", "--auto-cleanup")
    assert r.exit_code == 0, r.output
    assert "No running memdiag service; saved to" in r.output
    assert load_config().memory_threshold_mb == 700.0
    assert oct(default_config_path().stat().st_mode & 0o777) == "0o600"
    r = invoke("configure", "--threshold", "0")
    assert r.exit_code == 2 and "memory_threshold_mb" in r.output
    assert load_config().memory_threshold_mb == 700.0


def test_configure_without_flags_prints_the_config(service: Service) -> None:
    out = invoke("configure").output
    assert "memory_threshold_mb" in out and "500.0" in out and "api_token" in out
    data = json.loads(invoke("configure", "--json").output)
    assert data["config"]["memory_threshold_mb"] == 500.0 and "fields" in data


def test_alias_and_field_disagreeing_is_a_usage_error() -> None:
    r = invoke("configure", "--threshold", "100", "--memory-threshold-mb", "200")
    assert r.exit_code == 2 and "memory_threshold_mb" in r.output


# -- leaks -----------------------------------------------------------------------------


def test_leaks_json_is_the_apis(service: Service) -> None:
    r = invoke("leaks", "--json")
    assert r.exit_code == 0, r.output
    _, api = service.api("GET", "/api/memory/leaks")
    assert set(json.loads(r.output)) == set(api)
    r = invoke("leaks")
    assert r.exit_code == 0 and "Leaks" in r.output and "No leak suspects" in r.output


LEAKY_SERVICE = """
import sys, threading, time, memdiag
d = memdiag.start(http=True, sample_interval=0.1)
keep = []
def grow():
    while True:
        keep.append("x" * 20000)  # the leak
        time.sleep(0.002)
threading.Thread(target=grow, daemon=True).start()
print(d.http_server.url, flush=True)
sys.stdin.read()
"""


def test_profile_allocations_names_the_growing_line(tmp_path: Path) -> None:
    script = tmp_path / "leaky_service.py"
    script.write_text(LEAKY_SERVICE)
    s = start_service(script=script)
    # On a loaded machine the leaking thread may barely run during a short window: the
    # condition to wait on is a window that saw it grow (another window, up to a deadline).
    deadline = time.monotonic() + 120
    windows = 0
    try:
        while True:
            r = invoke("profile", "--allocations", "--seconds", "1", "--timeout", "60")
            windows += 1
            assert r.exit_code == 0, r.output
            first_site = r.output.splitlines()[2]  # title, headers, then the biggest grower
            if f"{script}:7" in first_site or time.monotonic() > deadline:
                break
        assert f"{script}:7" in first_site
        assert "GROWTH" in r.output and "/min" in first_site
        while True:
            r = invoke("profile", "--allocations", "--seconds", "0.5", "--json", "--timeout", "60")
            windows += 1
            data = json.loads(r.output)
            sites = data["growing_sites"]
            if (sites and sites[0]["line"] == 7) or time.monotonic() > deadline:
                break
        # The latest window's results (the leak detector may have opened windows of its own).
        assert data["tracing"]["last"]["id"] >= windows and data["growing_sites"][0]["line"] == 7
    finally:
        s.stop()


def test_profile_allocations_joins_a_window_already_running(tmp_path: Path) -> None:
    # The leak detector (or another user) may have a window open: the CLI shows that
    # window's results instead of failing with a conflict.
    script = tmp_path / "leaky_service.py"
    script.write_text(LEAKY_SERVICE)
    s = start_service(script=script)
    try:
        status, window = s.api("POST", "/api/memory/leaks/trace", {"seconds": 1.5})
        assert status == 200, window
        started = time.monotonic()
        r = invoke("profile", "--allocations", "--seconds", "30", "--json")
        assert r.exit_code == 0, r.output
        assert time.monotonic() - started < 20  # it waited for the running window, not for 30 s
        assert f"A tracing window (#{window['id']}, manual) is already running" in r.stderr
        data = json.loads(r.stdout)
        assert data["tracing"]["last"]["id"] == window["id"]
        assert data["growing_sites"][0]["line"] == 7
    finally:
        s.stop()


# -- watch -----------------------------------------------------------------------------


def test_watch_draws_count_frames(service: Service) -> None:
    started = time.monotonic()
    # --timeout: on a loaded machine the service may take longer than the default 5 s to
    # answer; the frames, not the service's speed, are the subject.
    r = invoke("watch", "--count", "3", "--interval", "0.2", "--timeout", "60")
    assert r.exit_code == 0, r.output
    assert r.output.count("--- frame") == 3
    assert "process RSS" in r.output and "MEMORY" in r.output and f"PID {service.pid}" in r.output
    assert time.monotonic() - started >= 0.4


# -- formatting ------------------------------------------------------------------------


def test_human_units() -> None:
    assert human_bytes(None) == "-"
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(500 * 1024 * 1024) == "500.0 MiB"
    assert human_bytes(-2048) == "-2.0 KiB" and human_bytes(2048, signed=True) == "+2.0 KiB"
    assert human_duration(272) == "4m 32s" and human_duration(0.25) == "0.25s" and human_duration(7200) == "2h 0m"


def test_table_aligns_even_with_colour() -> None:
    text = table([["a", "\x1b[31mRED\x1b[0m", 1], ["bbbb", "x", 100]], ["K", "V", "N"], right=(2,))
    lines = text.splitlines()
    assert lines[1].index("\x1b[31m") == lines[2].index("x")
    assert lines[1].endswith("  1") and lines[2].endswith("100")
