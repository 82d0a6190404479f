"""The dashboard page: its Python helpers, and the page itself in a real headless Chromium
talking to a real memdiag API server (``memdiag.start(http=True)``) on 127.0.0.1.

The browser is Debian's Chromium driven by Playwright (``pip install playwright``; its own
browser download is not used). Screenshots go to ``$DASHBOARD_SCREENSHOTS`` when
set, else to the test's tmp directory.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import memdiag
from memdiag.config import MemoryConfig
from memdiag.dashboard import DASHBOARD_PATH, dashboard_url, page_html
from memdiag.service import MemoryDiagnostics

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


# -- the Python side -------------------------------------------------------------------------
def test_page_html_is_cached_bytes() -> None:
    page = page_html()
    assert isinstance(page, bytes)
    assert page is page_html()  # read once
    assert page.startswith(b"<!doctype html>")


def test_page_is_self_contained() -> None:
    html = page_html().decode("utf-8")
    # No resource from another origin: every src/href is local (the icon is the page itself).
    refs = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    assert refs == ["#"]
    assert "@import" not in html and "url(" not in html
    # The CSP allows inline code but no eval, and data is never parsed as HTML.
    for banned in ("eval(", "new Function", "innerHTML", "outerHTML", "document.write", "insertAdjacentHTML"):
        assert banned not in html, banned
    assert "<script src" not in html and '<link rel="stylesheet"' not in html


def test_dashboard_url() -> None:
    assert dashboard_url("http://127.0.0.1:8765", "tok") == "http://127.0.0.1:8765/memory/dashboard#token=tok"
    assert (
        dashboard_url("https://host/ops/", "a b/+=&c") == "https://host/ops/memory/dashboard#token=a%20b%2F%2B%3D%26c"
    )
    assert dashboard_url("http://h:1/") == "http://h:1/memory/dashboard"
    assert dashboard_url("http://h:1", "") == "http://h:1/memory/dashboard"
    assert DASHBOARD_PATH == "/memory/dashboard"


# -- fixtures: a real server, a real browser -----------------------------------------------------
@dataclass
class Served:
    diag: MemoryDiagnostics
    url: str
    token: str

    def api(self, path: str, token: str | None = None, method: str = "GET", body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture
def served(fast_config: MemoryConfig) -> Iterator[Served]:
    """The shared monitor with its standalone API server on a loopback port."""
    # The browser Playwright starts is a child of this process: keep it from being a signal.
    cfg = fast_config.updated({"sample_interval": 0.1, "cleanup_cooldown": 60.0, "subprocess_threshold_mb": 1_000_000})
    diag = memdiag.start(cfg, http="127.0.0.1:0")
    server = diag.http_server
    assert server is not None
    try:
        yield Served(diag, server.url, server.token)
    finally:
        memdiag.stop()
        MemoryDiagnostics.reset_instance()


class BlobCache:
    """A real, minimal cache of byte blobs that memdiag watches and shrinks."""

    def __init__(self, name: str, max_bytes: int) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.items: dict[int, bytes] = {}
        self.hits = self.misses = 0

    def get(self, key: int) -> bytes | None:
        blob = self.items.get(key)
        if blob is None:
            self.misses += 1
        else:
            self.hits += 1
        return blob

    def metrics(self) -> dict[str, Any]:
        used = sum(len(b) for b in self.items.values())
        return {
            "entries": len(self.items),
            "bytes": used,
            "max_bytes": self.max_bytes,
            "fill_ratio": used / self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
        }

    def shrink(self, fraction: float) -> int:
        drop = list(self.items)[: round(len(self.items) * fraction)]
        return sum(len(self.items.pop(k)) for k in drop)

    def clear(self) -> int:
        return self.shrink(1.0)


@pytest.fixture(scope="module", autouse=True)
def _collect_playwright_garbage() -> Iterator[None]:
    """Playwright leaves thousands of objects in reference cycles (requests, responses,
    frames, its own handles): collect them when this module is done (torn down after the
    browser), not in a later test that inspects ``gc.garbage``."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(exe):
        pytest.fail("Chromium is missing: apt-get install chromium (the CI script installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Console:
    """Everything the page logged or threw, and every request it made."""

    messages: list[tuple[str, str, str]] = field(default_factory=list)  # (type, text, url)
    errors: list[str] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def unexpected(self, allowed: tuple[tuple[str, str], ...] = ()) -> list[str]:
        """Console errors/warnings other than the browser's own log line for an expected
        HTTP answer, given as (status text, URL part) pairs; and every uncaught error."""
        bad = list(self.errors)
        for kind, text, url in self.messages:
            if kind not in ("error", "warning"):
                continue
            if text.startswith("Failed to load resource") and any(s in text and u in url for s, u in allowed):
                continue
            bad.append(f"{kind}: {text} ({url})")
        return bad


LEAKS_ABSENT = ("501", "/api/memory/leaks")


def problems(pg: Any, log: Console, *allowed: tuple[str, str]) -> list[str]:
    """Unexpected console output and uncaught errors, plus panels that failed to render."""
    found = log.unexpected((LEAKS_ABSENT, *allowed))
    if pg.get_attribute("body", "data-render-errors"):
        found.append(f"render error: {pg.get_attribute('body', 'data-last-render-error')}")
    return found


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, Console]]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    log = Console()
    pg.on("console", lambda m: log.messages.append((m.type, m.text, (m.location or {}).get("url", ""))))
    pg.on("pageerror", lambda e: log.errors.append(f"pageerror: {e}"))
    pg.on("request", lambda r: log.requests.append((r.method, r.url, dict(r.headers))))
    try:
        yield pg, log
    finally:
        context.close()


def shot_path(name: str, tmp_path: Path) -> Path:
    base = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path)
    base.mkdir(parents=True, exist_ok=True)
    return base / f"dashboard-{name}.png"


def parse_bytes(text: str) -> float:
    m = re.fullmatch(r"(−?[\d.]+) (B|KiB|MiB|GiB|TiB)", text.strip())
    assert m, f"not a byte figure: {text!r}"
    return float(m.group(1).replace("−", "-")) * UNITS[m.group(2)]


def open_dashboard(pg: Any, served: Served, token: str | None = None) -> None:
    pg.goto(dashboard_url(served.url, served.token if token is None else token))


# How long to wait for the page: a deadline that only a failure reaches, not an expected
# speed. On a loaded machine a cleanup (a gc of this whole test process) or the page's next
# poll can take many seconds.
PATIENCE_MS = 30000


def wait_text(pg: Any, element_id: str, test: str, text: str, timeout: float = PATIENCE_MS) -> None:
    """Wait until ``#element_id``'s text ``test``s (``startsWith``, ``includes``, ``===``) ``text``."""
    expr = f"t === {text!r}" if test == "===" else f"t.{test}({text!r})"
    pg.wait_for_function(
        f"() => {{ const t = document.getElementById({element_id!r}).textContent; return {expr}; }}", timeout=timeout
    )


def wait_live(pg: Any) -> None:
    wait_text(pg, "conn", "===", "live")
    # At least a few history rows drawn in the RSS chart.
    pg.wait_for_function(
        "() => { const s = document.querySelector('#chart-rss svg'); return !!s && +s.dataset.points >= 3; }",
        timeout=PATIENCE_MS,
    )


# -- the page in a browser ----------------------------------------------------------------------
@pytest.mark.slow
def test_live_view_matches_api_and_keeps_token_out_of_urls(
    served: Served, page: tuple[Any, Console], tmp_path: Path
) -> None:
    pg, log = page
    resp = pg.goto(dashboard_url(served.url, served.token))
    assert resp is not None and resp.status == 200
    assert "default-src 'self'" in resp.headers["content-security-policy"]
    wait_live(pg)

    status_code, status = served.api("/api/memory/status")
    assert status_code == 200
    assert pg.inner_text("#level").lower() == status["status"]
    assert pg.get_attribute("#level-pill", "class").endswith(f"lvl-{status['status']}")
    shown_rss = parse_bytes(pg.inner_text("#rss-value"))
    # RSS moves between the page's fetch and ours; 1 decimal place of MiB rounds too.
    assert abs(shown_rss - status["rss_bytes"]) <= 0.1 * status["rss_bytes"]
    exact = int(pg.get_attribute("#rss-value", "data-bytes"))
    assert abs(exact - status["rss_bytes"]) <= 0.1 * status["rss_bytes"]
    assert parse_bytes(pg.inner_text("#rss-value")) == pytest.approx(exact, rel=0.01)
    assert pg.inner_text("#rss-threshold") == "of 500 MiB threshold"
    assert pg.inner_text("#proc-id").startswith(f"pid {status['pid']}")

    # Every chart with data drew points; the projection line comes from trends.
    for chart in ("chart-rss", "chart-mem", "chart-heap", "chart-children"):
        assert int(pg.get_attribute(f"#{chart} svg", "data-points")) >= 3, chart
    assert pg.locator("#chart-rss svg path.series").count() == 1
    wait_text(pg, "projections", "includes", "RSS")
    assert pg.locator("#signals tr").count() >= 2  # process RSS and system memory at least

    # The token: gone from the address bar, kept in sessionStorage, never in the DOM or a URL.
    assert "token" not in pg.url
    assert pg.evaluate("sessionStorage.getItem('memdiag.token')") == served.token
    assert served.token not in pg.content()
    api_requests = [r for r in log.requests if "/api/memory/" in r[1]]
    assert {"/api/memory/diagnostics", "/api/memory/history"} <= {
        r[1].split("?")[0].replace(served.url, "") for r in api_requests
    }
    for _, url, headers in api_requests:
        assert served.token not in url
        assert headers.get("authorization") == f"Bearer {served.token}"
    history_urls = [url for _, url, _ in api_requests if "/history" in url]
    assert "since=" in history_urls[0] and "columns=rss," in history_urls[0]  # the range's rows
    assert all("last=" in url for url in history_urls[1:])  # then increments, cheap for the service

    # A single process, not a pre-fork server: the page asked, and shows no server panel.
    assert any("/api/memory/server" in r[1] for r in api_requests)
    assert pg.is_hidden("#workers-card")

    # The leak panel is shown exactly when the API answers it.
    leaks_code, leaks = served.api("/api/memory/leaks")
    assert pg.is_visible("#leaks-card") == (leaks_code == 200)
    if leaks_code == 200:
        assert pg.inner_text("#leaks-note").startswith(f"{len(leaks['suspects'])} suspect")

    # Range switch reloads history and still draws.
    pg.click("button[data-range='0']")
    assert pg.get_attribute("button[data-range='0']", "aria-pressed") == "true"
    pg.wait_for_function(
        "() => +(document.querySelector('#chart-rss svg')?.dataset.points || 0) >= 3", timeout=PATIENCE_MS
    )

    pg.screenshot(path=str(shot_path("desktop", tmp_path)), full_page=True)
    assert problems(pg, log) == []


@pytest.mark.slow
def test_pressure_transition_shows_level_and_reason(served: Served, page: tuple[Any, Console], tmp_path: Path) -> None:
    pg, log = page
    open_dashboard(pg, served)
    wait_live(pg)
    assert pg.inner_text("#level").lower() == "ok"

    rss_mb = served.diag.status()["rss_bytes"] / 2**20
    served.diag.configure(memory_threshold_mb=max(1.0, round(rss_mb / 2)))
    wait_text(pg, "level", "===", "critical")
    assert "lvl-critical" in pg.get_attribute("#level", "class")
    assert pg.inner_text("#level-pill") == "pressure: critical"
    reasons = pg.inner_text("#reasons")
    assert "critical: Process RSS" in reasons and "threshold" in reasons
    assert served.api("/api/memory/status")[1]["status"] == "critical"
    wait_text(pg, "events", "includes", "critical")
    assert "Process RSS" in pg.inner_text("#events")
    assert "above its threshold" in pg.inner_text("#projections")
    pg.screenshot(path=str(shot_path("critical", tmp_path)))

    served.diag.configure(memory_threshold_mb=4096)
    wait_text(pg, "level", "===", "ok")
    assert pg.inner_text("#reasons") == "No signal is at warning or above."
    assert problems(pg, log) == []


@pytest.mark.slow
def test_cleanup_button_dry_run_result_and_cooldown(
    served: Served, page: tuple[Any, Console], clean_registry: None
) -> None:
    pg, log = page
    cache = BlobCache("blobs", 8 * 2**20)
    for i in range(6):
        cache.items[i] = bytes(2**20)
    for i in range(4):  # 3 hits, 1 miss
        cache.get(i if i < 3 else 99)
    memdiag.register_cache(cache)
    try:
        open_dashboard(pg, served)
        wait_live(pg)
        wait_text(pg, "caches", "includes", "blobs")
        row = pg.inner_text("#caches tr")
        assert "6.0 MiB / 8.0 MiB" in row and "75 %" in row  # size and fill
        assert row.rstrip().endswith("75 %")  # hit rate 3 of 4
        assert pg.inner_text("#caches-bytes") == "6.0 MiB"
        assert int(pg.get_attribute("#chart-caches svg", "data-points")) >= 1
        click_cleanups(pg, served, cache)
    finally:
        memdiag.unregister_cache(cache)
    assert problems(pg, log, ("429", "/api/memory/cleanup")) == []


def click_cleanups(pg: Any, served: Served, cache: BlobCache) -> None:
    result = pg.locator("#cleanup-result")

    pg.check("#cleanup-dry")
    pg.click("#cleanup-btn")
    wait_text(pg, "cleanup-result", "startsWith", "Dry run")
    assert "nothing changed" in result.inner_text()
    assert "gc:" in result.inner_text()  # one line per rung
    assert len(cache.items) == 6

    pg.uncheck("#cleanup-dry")
    pg.click("#cleanup-btn")
    wait_text(pg, "cleanup-result", "startsWith", "Cleanup (manual)")
    text = result.inner_text()
    assert re.search(r"freed \d", text), text
    assert "malloc_trim" in text
    # A manual cleanup is an emergency one: it clears the caches (6 MiB of blobs).
    assert cache.items == {}
    # freed is the measured release (RSS across the rung, since 284e595): how much of the 6 MiB
    # the allocator hands back to the OS varies; the cache being emptied is checked above.
    assert re.search(r"caches: clear.* · freed [\d.]+ (B|KiB|MiB)", text), text
    last = served.diag.ladder.last_result
    assert last is not None and last.performed and not last.dry_run

    pg.click("#cleanup-btn")
    wait_text(pg, "cleanup-result", "includes", "retry in")
    m = re.search(r"retry in (\d+) s", result.inner_text())
    assert m and 1 <= int(m.group(1)) <= 60
    assert "warning" in (result.get_attribute("class") or "")
    # The state refreshes: the last cleanup and the cooldown are shown.
    wait_text(pg, "cleanup-cooldown", "startsWith", "cooldown")
    assert "freed" in pg.inner_text("#cleanup-last")


@pytest.mark.slow
def test_wrong_or_missing_token_shows_the_prompt(served: Served, page: tuple[Any, Console], tmp_path: Path) -> None:
    pg, log = page
    open_dashboard(pg, served, token="not-the-token-0123456789")
    pg.wait_for_selector("#auth", state="visible", timeout=PATIENCE_MS)
    assert "rejected" in pg.inner_text("#auth-msg")
    assert pg.is_hidden("#main")
    assert pg.inner_text("#conn") == "not signed in"
    assert pg.get_attribute("#auth-token", "type") == "password"
    pg.screenshot(path=str(shot_path("token", tmp_path)))

    # Pasting the right token connects; the field is cleared, the token is not in the DOM.
    pg.fill("#auth-token", served.token)
    pg.press("#auth-token", "Enter")
    wait_live(pg)
    assert pg.is_hidden("#auth")
    assert pg.input_value("#auth-token") == ""
    assert served.token not in pg.content()
    assert pg.evaluate("sessionStorage.getItem('memdiag.token')") == served.token

    # "Forget token" and a fresh tab without a fragment: no token, so the prompt says so.
    pg.click("#forget")
    assert pg.is_visible("#auth")
    pg.goto(served.url + DASHBOARD_PATH)
    pg.wait_for_selector("#auth", state="visible", timeout=PATIENCE_MS)
    assert "No API token" in pg.inner_text("#auth-msg")
    assert problems(pg, log, ("401", "/api/memory/")) == []


SERVICE = """
import sys, time, memdiag
diag = memdiag.start(api_token=sys.argv[1], sample_interval=0.1, http="127.0.0.1:" + sys.argv[2])
print(diag.http_server.url, flush=True)
time.sleep(120)
"""


def start_service(token: str, port: int) -> tuple[subprocess.Popen[str], str]:
    """A separate service process with memdiag's API on ``port``; returns it and its URL."""
    proc = subprocess.Popen([sys.executable, "-c", SERVICE, token, str(port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), url
    return proc, url


@pytest.mark.slow
def test_survives_the_service_going_away_and_coming_back(
    page: tuple[Any, Console], children: list[subprocess.Popen[str]]
) -> None:
    pg, log = page
    token = "restart-test-token-0123456789"
    proc, url = start_service(token, 0)
    children.append(proc)
    port = int(url.rsplit(":", 1)[1])
    pg.goto(dashboard_url(url, token))
    wait_live(pg)
    first_pid = pg.inner_text("#proc-id")

    proc.kill()  # the service dies: its sockets close, new connections are refused
    proc.wait(timeout=10)
    pg.wait_for_selector("#down-banner", state="visible", timeout=PATIENCE_MS)
    assert "Disconnected" in pg.inner_text("#down-banner")
    wait_text(pg, "conn", "===", "disconnected, retrying")
    assert "stale" in (pg.get_attribute("#main", "class") or "")
    assert pg.text_content("#level") in ("ok", "warning", "critical")  # the last data stays shown

    proc2, _ = start_service(token, port)  # back on the same address, as a new process
    children.append(proc2)
    wait_text(pg, "conn", "===", "live", 30000)
    assert pg.is_hidden("#down-banner")
    assert "stale" not in (pg.get_attribute("#main", "class") or "")
    assert pg.inner_text("#proc-id") == f"pid {proc2.pid}" != first_pid
    wait_live(pg)  # history restarted from the new process and is drawn again
    # While it was away the browser logged the refused requests; nothing else.
    gone = tuple(
        (code, "/api/memory/") for code in ("ERR_CONNECTION_REFUSED", "ERR_CONNECTION_RESET", "ERR_EMPTY_RESPONSE")
    )
    assert problems(pg, log, *gone) == []


@pytest.mark.slow
def test_narrow_viewport_has_no_page_overflow(served: Served, browser: Any, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(dashboard_url(served.url, served.token))
        wait_live(pg)
        width = pg.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"page is {width}px wide on a 390px screen"
        box = pg.locator("#chart-rss").bounding_box()
        assert box is not None and box["width"] <= 390
        assert pg.is_visible("#cleanup-btn")
        pg.screenshot(path=str(shot_path("narrow", tmp_path)), full_page=True)
        assert errors == []
        assert pg.get_attribute("body", "data-render-errors") is None
    finally:
        context.close()


@pytest.mark.slow
def test_stored_range_cache_fill_and_leaks_above_the_fold(
    served: Served, page: tuple[Any, Console], tmp_path: Path, clean_registry: None
) -> None:
    """At 1280x800 the leak suspects are on screen unscrolled; a stored range (24 h) draws
    rows of the history file from hours ago; a cache bound by its entries fills its bar by
    entries, and its pressure signal's bar runs to the cache's full size."""
    import time

    from memdiag import SharedPromptCache

    from .test_pressure import make_sample

    from memdiag.history import HistoryStore

    assert served.diag.store is not None  # history is on by default
    earlier = HistoryStore(served.diag.store.path, interval=1.0)  # as an earlier run wrote it
    hours_ago = time.time() - 3 * 3600
    for i in range(30):  # three hours ago: only the history file has these
        earlier.add(make_sample(200 + i, t=hours_ago + i * 60))
    earlier.close()
    cache = SharedPromptCache(max_bytes=1 << 30, max_entries=10, name="by-entries")
    for i in range(9):
        cache.set(f"k{i}", "v")  # 9 of 10 entries: 90 %, while its bytes are nearly 0 %
    pg, log = page
    open_dashboard(pg, served)
    wait_live(pg)
    pg.wait_for_selector("#leaks-card:not([hidden])", timeout=PATIENCE_MS)
    box = pg.locator("#leaks-card").bounding_box()
    assert box is not None and box["y"] + 60 <= 800, box  # its heading and first line, unscrolled
    wait_text(pg, "caches", "includes", "% of entries")
    assert re.search(r"90\s?% of entries", pg.inner_text("#caches"))
    assert "9 of 10 entries" in pg.get_attribute("#caches .bar", "title")
    fill_bar = pg.evaluate(
        """() => { for (const tr of document.querySelectorAll('#signals tr')) {
              if (tr.textContent.includes('by-entries')) { return tr.querySelector('.bar span').style.width; } }
            return null; }"""
    )
    assert fill_bar in ("90%", "90.0%"), fill_bar  # 0% before: a warning-only signal had no limit
    pg.click("button[data-source='store'][data-range='86400']")
    wait_text(pg, "history-source", "includes", ".sqlite")
    pg.wait_for_function(
        "() => { const s = document.querySelector('#chart-rss svg'); return !!s && +s.dataset.points >= 10; }",
        timeout=PATIENCE_MS,
    )  # 30 rows a minute apart, merged by the service into 600 points over 24 h (one per 144 s)
    assert any("source=store" in url for _, url, _ in log.requests)
    status, body = served.api(f"/api/memory/history?source=store&columns=rss&since={hours_ago - 60}&points=600")
    assert status == 200 and body["rows"][0][0] < time.time() - 2 * 3600
    pg.screenshot(path=str(shot_path("stored-24h", tmp_path)))
    assert problems(pg, log) == []


@pytest.mark.slow
def test_every_worker_of_a_gunicorn_server_and_switching_to_one(
    page: tuple[Any, Console], tmp_path: Path
) -> None:
    """gunicorn with 2 workers and memdiag mounted in Flask: the page lists the master and
    both workers with the aggregate, and switches the whole view to one worker and back."""
    pytest.importorskip("gunicorn")
    from .test_workers import _shared_token, _workers, server

    argv = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", "127.0.0.1:{port}", "fleet_flask:app"]
    with server(argv, 2) as (master, port):
        workers = sorted(e.pid for e in _workers(master))
        url = f"http://127.0.0.1:{port}"
        pg, log = page
        pg.goto(dashboard_url(url, _shared_token(master)))
        wait_live(pg)
        pg.wait_for_selector("#workers-card:not([hidden])", timeout=PATIENCE_MS)
        wait_text(pg, "h-workers", "===", f"Server {master}")
        listed = pg.eval_on_selector_all("#workers tr[data-pid]", "rows => rows.map(r => +r.dataset.pid)")
        assert sorted(listed) == sorted([master, *workers])
        assert pg.inner_text("#workers tr.total").startswith("total")
        assert "3 processes" in pg.inner_text("#workers tr.total")
        home = int(pg.inner_text("#proc-id").split()[1])  # the worker that answered first, kept
        assert home in workers and "of server" in pg.inner_text("#proc-id")
        other = next(pid for pid in workers if pid != home)
        for pid in (master, *workers):  # every process's RSS is shown
            assert re.search(r"\d+(\.\d+)? (KiB|MiB|GiB)", pg.inner_text(f"#workers tr[data-pid='{pid}']")), pid
        for pid in workers:  # each worker's pressure, cache fill (5 of 10 entries) and top suspect
            # a worker's row shows its report of the last poll: wait for the one after its
            # cache was filled (a full run at load 7-19 read '—' at once)
            pg.wait_for_function(
                "pid => { const td = document.querySelectorAll(`#workers tr[data-pid='${pid}'] td`);"
                " return td.length > 6 && td[6].textContent === '50 %'; }",
                arg=pid, timeout=PATIENCE_MS,
            )  # fmt: skip
            cells = pg.eval_on_selector_all(f"#workers tr[data-pid='{pid}'] td", "tds => tds.map(t => t.textContent)")
            assert cells[5:8] == ["ok", "50 %", "none"], cells

        pg.click(f"#workers button[data-pid='{other}']")
        wait_text(pg, "proc-id", "startsWith", f"pid {other} ")
        wait_live(pg)  # the other worker's own history, drawn again
        assert pg.get_attribute(f"#workers tr[data-pid='{other}']", "aria-current") == "true"
        assert any(f"/api/memory/diagnostics?pid={other}" in u for _, u, _ in log.requests)
        assert pg.is_visible("#workers-back")
        pg.screenshot(path=str(shot_path("server-worker", tmp_path)), full_page=True)

        pg.click("#workers-back")
        wait_text(pg, "proc-id", "startsWith", f"pid {home} ")
        assert pg.is_hidden("#workers-back")
        assert problems(pg, log) == []
