"""examples/ run: the Prometheus configuration and alert rules go through the real
``promtool`` (check config, check rules, test rules); every metric the Grafana dashboard
and the rules name is in a real exposition of a service that has pressure, a leak suspect,
a growth projection, caches, cleanups and zombies; the Kubernetes snippet's settings are
memdiag's, and its probe and scrape paths answer on a real server started with them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from memdiag.config import ENV_PREFIX, FIELD_INFO

from .conftest import wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
METRIC = re.compile(r"\b((?:memdiag|process|python)_[a-z0-9_]+)\b")

# A service that shows every family the examples use: it grows (a projection), leaks
# descriptors (a suspect), has a cache with hits and misses, has run a cleanup, and has
# zombie children. It prints its /metrics text.
EVERYTHING = """
import os, sys, time
if sys.argv[1] == "standalone":
    sys.modules["prometheus_client"] = None
import memdiag
from memdiag import SharedPromptCache, leaks
from memdiag.http.metrics import render
diag = memdiag.start(sample_interval=0.05, profile_interval=1.0, leak_window_seconds=10.0,
                     trace_window_seconds=1.5, trace_budget=1.0, heap_snapshot_seconds=0.25,
                     enable_auto_cleanup=False,
                     sustain_seconds=0.0, recovery_seconds=0.0, memory_threshold_mb=4096)
cache = SharedPromptCache(max_bytes=1 << 20, name="prompts")
for i in range(200):
    cache.set(f"k{i}", "x" * 20000)   # evictions by size
    cache.get(f"k{i}"); cache.get(f"missing{i}")
diag.cleanup(force=True)
for _ in range(3):  # zombies: forked children that exit and are never waited for
    if os.fork() == 0:
        os._exit(0)
keep, fds = [], []
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    keep.append(bytearray(2 << 20))   # growth: 40 MiB/s
    fds.extend(os.pipe())             # a descriptor leak
    time.sleep(0.05)
    if len(keep) > 200:
        del keep[:100]
    trend = diag.trends().get("rss") or {}
    suspects = leaks.get_detector(diag).suspects()
    if suspects and trend.get("seconds_to_threshold") and diag.last_sample.zombies >= 3:
        break
sys.stdout.write(render(diag))
"""


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: apt-get install prometheus (.ci/run does)"
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_prometheus_config_and_rules_pass_promtool() -> None:
    d = EXAMPLES / "prometheus"
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "memdiag-alerts.yml")):
        r = promtool(*args, cwd=d)
        assert r.returncode == 0, r.stdout + r.stderr
    r = promtool("test", "rules", "memdiag-alerts.test.yml", cwd=d)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    rules = yaml.safe_load((d / "memdiag-alerts.yml").read_text())["groups"][0]["rules"]
    tested = (d / "memdiag-alerts.test.yml").read_text()
    assert {r["alert"] for r in rules} == {
        "MemdiagCriticalPressureSustained",
        "MemdiagLeakSuspected",
        "MemdiagThresholdWithinAnHour",
        "MemdiagZombiesPilingUp",
    }
    assert all(f"alertname: {r['alert']}" in tested for r in rules)  # every rule has a unit test


def test_promtool_test_rules_fails_on_a_wrong_rule(tmp_path: Path) -> None:
    """The unit tests can fail: a rule that fires at once breaks them."""
    d = EXAMPLES / "prometheus"
    (tmp_path / "memdiag-alerts.yml").write_text((d / "memdiag-alerts.yml").read_text().replace("for: 5m", "for: 0m"))
    shutil.copy(d / "memdiag-alerts.test.yml", tmp_path)
    r = promtool("test", "rules", "memdiag-alerts.test.yml", cwd=tmp_path)
    assert r.returncode != 0


def _sample_names(text: str) -> set[str]:
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["prometheus_client", "standalone"])
def test_dashboard_and_rules_name_only_metrics_that_exist(mode: str) -> None:
    r = subprocess.run([sys.executable, "-c", EVERYTHING, mode], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    exposed = _sample_names(r.stdout)
    dashboard = json.loads((EXAMPLES / "grafana" / "memdiag-dashboard.json").read_text())
    used: dict[str, str] = {}
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for name in METRIC.findall(target["expr"]):
                used[name] = panel["title"]
    rules = yaml.safe_load((EXAMPLES / "prometheus" / "memdiag-alerts.yml").read_text())
    for rule in rules["groups"][0]["rules"]:
        for name in METRIC.findall(rule["expr"]):
            used[name] = rule["alert"]
    assert len(used) >= 15
    missing = {name: where for name, where in used.items() if name not in exposed}
    assert not missing, f"named by the examples but not exported: {missing}"


def test_kubernetes_snippet_settings_probes_and_scrape_answer(children: list, tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all((EXAMPLES / "kubernetes" / "deployment.yaml").read_text()))
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]
    (app,) = pod["spec"]["containers"]
    assert app["resources"]["limits"]["memory"] and app["resources"]["requests"]["memory"]
    env = {e["name"]: e.get("value") for e in app["env"]}
    for name in env:
        if name.startswith(ENV_PREFIX):
            assert name[len(ENV_PREFIX) :].lower() in FIELD_INFO, f"{name} is no memdiag setting"
    port = pod["metadata"]["annotations"]["prometheus.io/port"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert env["MEMDIAG_HTTP_PORT"] == port == str(app["ports"][0]["containerPort"])
    probes = [app["livenessProbe"]["httpGet"], app["readinessProbe"]["httpGet"]]
    assert {p["path"] for p in probes} == {"/api/memory/health"}
    scrape = yaml.safe_load((EXAMPLES / "kubernetes" / "prometheus-scrape.yml").read_text())
    assert scrape["scrape_configs"][0]["kubernetes_sd_configs"] == [{"role": "pod"}]
    # The snippet's settings on a real server (loopback and any free port here).
    run_env = {**os.environ, **{k: v for k, v in env.items() if v is not None}}
    run_env.update(
        MEMDIAG_HTTP_HOST="127.0.0.1",
        MEMDIAG_HTTP_PORT="0",
        MEMDIAG_API_TOKEN="k8s-example-token-0123456789",
        XDG_STATE_HOME=str(tmp_path),  # the pod's volume path, here
    )
    code = "import memdiag, sys; d = memdiag.start(http=True); print(d.http_server.url, flush=True); sys.stdin.read()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=run_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    children.append(proc)
    url = proc.stdout.readline().strip()
    for path in {p["path"] for p in probes} | {pod["metadata"]["annotations"]["prometheus.io/path"]}:
        with urllib.request.urlopen(url + path, timeout=10) as resp:  # no token: probes and scrapes have none
            assert resp.status == 200, path
    health = json.loads(urllib.request.urlopen(url + "/api/memory/health", timeout=10).read())
    assert health["status"] in ("pass", "warn")
    proc.stdin.close()
    wait_for(lambda: proc.poll() is not None, timeout=15, what="the service to stop")
    assert (tmp_path / "memdiag" / "orders-api.sqlite").is_file()  # history under the mounted state dir
