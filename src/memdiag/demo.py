"""``memdiag demo``: a real workload under monitoring, with the embedded defaults.

The demo runs a small "agent service" in this process: worker threads answer prompts,
caching each answer (100-400 KB strings) in a :class:`SharedPromptCache`, do JSON work,
and keep a few real child processes. memdiag monitors it with its defaults, except that
the process threshold is set a little above the demo's starting RSS so that a pressure
transition happens within seconds instead of hours. What you see is all real: the
cache grows, RSS crosses the threshold, pressure goes ok -> warning -> critical with its
reasons, the cleanup ladder runs automatically, and each rung's effect is measured.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from typing import Any, TextIO

from .config import MemoryConfig
from .probes.process import read_statm_rss
from .units import MIB, human_bytes

__all__ = ["main"]

_COLOURS = {"ok": "32", "warning": "33", "critical": "31"}


def _colour(text: str, level: str, enabled: bool) -> str:
    return f"\x1b[{_COLOURS.get(level, '0')}m{text}\x1b[0m" if enabled else text


class _Workload:
    """The demo service: prompt workers with a cache, JSON churn, child processes."""

    def __init__(self, cache: Any, children: int) -> None:
        self.cache = cache
        self.stop = threading.Event()
        self.answered = 0
        self.children: list[subprocess.Popen[bytes]] = []
        self._threads: list[threading.Thread] = []
        self._n_children = children
        self.paused = threading.Event()

    def _answer(self, prompt: str, rng: random.Random) -> str:
        # A stand-in for a model call: costs CPU, produces a large answer.
        words = [f"{prompt}-{rng.randrange(10**6)}" for _ in range(rng.randrange(6000, 24000))]
        return " ".join(words)

    def _worker(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            if self.paused.is_set():
                self.stop.wait(0.1)
                continue
            prompt = f"prompt-{rng.randrange(100000)}"  # mostly new prompts: the cache grows
            self.cache.get_or_set(prompt, lambda p=prompt: self._answer(p, rng))
            json.dumps({"prompt": prompt, "meta": [rng.random() for _ in range(200)]})
            self.answered += 1
            self.stop.wait(0.02)

    def start(self, workers: int = 2) -> None:
        code = "import time\nbuf = bytearray(8 * 1024 * 1024)\nwhile True: time.sleep(1)\n"
        for _ in range(self._n_children):
            self.children.append(subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL))
        for i in range(workers):
            t = threading.Thread(target=self._worker, args=(i,), name=f"demo-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(5)
        for p in self.children:
            p.terminate()
        for p in self.children:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main(duration: float = 30.0, *, http: bool = True, out: TextIO | None = None, colour: bool | None = None) -> int:
    """Run the demo for ``duration`` seconds; returns an exit status.

    Args:
        duration: how long the workload runs (the transition and cleanup happen in the
            first 10-20 s on a typical machine).
        http: also start the API server and print the dashboard URL.
        out: where to print (stdout by default).
        colour: force colour on/off (default: on for a TTY unless ``NO_COLOR`` is set).
    """
    import memdiag
    from memdiag.cache import SharedPromptCache

    out = out or sys.stdout
    if colour is None:
        colour = out.isatty() and not os.environ.get("NO_COLOR")
    logging.getLogger("memdiag").setLevel(logging.ERROR)  # the demo prints its own story

    start_rss = read_statm_rss() or 50 * MIB
    threshold_mb = round(start_rss / MIB + 120)
    cfg = MemoryConfig(
        memory_threshold_mb=threshold_mb,  # the one change: reachable within seconds
        sample_interval=0.5,
        sustain_seconds=1.0,
        recovery_seconds=3.0,
        cleanup_cooldown=10.0,
    )
    cache = SharedPromptCache(max_bytes=400 * MIB, max_entries=10_000, ttl=3600, name="demo-prompts")
    diag = memdiag.start(cfg, http=http and _http_available())
    work = _Workload(cache, children=3)
    story = _Story(work, colour)
    diag.on_pressure_change(story.on_change)
    diag.on_cleanup(story.on_cleanup)
    _print_intro(out, diag, threshold_mb, start_rss, duration)
    work.start()
    try:
        saw_critical, cleaned = _narrate(out, diag, cache, story, threshold_mb, duration)
    finally:
        work.close()
    _print_summary(out, diag, work)
    memdiag.stop()
    return 0 if (saw_critical and cleaned) else 1


class _Story:
    """The monitor's events (pressure changes, cleanups) as lines for the narration."""

    def __init__(self, work: _Workload, colour: bool) -> None:
        self.work = work
        self.colour = colour
        self.events: list[str] = []

    def on_change(self, prev: Any, cur: Any) -> None:
        why = ", ".join(f"{r['signal']} {_fmt(r)}" for r in cur.reasons) or "all signals below their exit levels"
        self.events.append(f"pressure {prev.level} -> {_colour(cur.level, cur.level, self.colour)}: {why}")

    def on_cleanup(self, result: Any) -> None:
        d = result.to_dict()
        if not d["performed"]:
            return
        rungs = ", ".join(
            f"{a['name']} {human_bytes(a['freed_bytes'])} in {a['seconds'] * 1000:.1f} ms"
            for a in d["actions"]
            if not a["skipped"]
        )
        self.events.append(
            f"cleanup ({d['reason']}) freed {human_bytes(d['freed_bytes'])} "
            f"(RSS {human_bytes(d['rss_before'])} -> {human_bytes(d['rss_after'])}) "
            f"in {d['seconds'] * 1000:.0f} ms: {rungs}"
        )
        self.work.paused.set()  # let the story end calm: the service stops caching new prompts


def _print_intro(out: TextIO, diag: Any, threshold_mb: int, start_rss: int, duration: float) -> None:
    print(f"memdiag demo: an agent service caching model answers, pid {os.getpid()}", file=out)
    print(
        f"threshold {human_bytes(threshold_mb * MIB)} (starting RSS {human_bytes(start_rss)} + 120 MiB); "
        f"everything else is memdiag's default configuration",
        file=out,
    )
    if diag.http_server is not None:
        from memdiag.dashboard import dashboard_url

        print(f"API:       {diag.http_server.url}/api/memory/status  (token in {_token_hint()})", file=out)
        print(f"dashboard: {dashboard_url(diag.http_server.url, diag.http_server.token)}", file=out)
        print(
            f"           (served for the whole demo: {duration:.0f} s; --duration S for longer, Ctrl-C to stop)",
            file=out,
        )
    print(file=out)


def _narrate(
    out: TextIO, diag: Any, cache: Any, story: _Story, threshold_mb: int, duration: float
) -> tuple[bool, bool]:
    """One line a second (every 5 s once the story is told) until ``duration`` or Ctrl-C;
    returns whether pressure reached critical and whether a cleanup ran."""
    t0 = time.monotonic()
    saw_critical = cleaned = calm = False
    try:
        while time.monotonic() - t0 < duration:
            # The story is over once a cleanup brought pressure back to ok: the demo (and its
            # dashboard) goes on for the whole --duration, printing less often.
            time.sleep(max(0.0, min(5.0 if calm else 1.0, duration - (time.monotonic() - t0))))
            p = diag.profile()
            level = p["pressure"]["level"]
            saw_critical = saw_critical or level == "critical"
            print(
                _status_line(p, cache.metrics(), time.monotonic() - t0, threshold_mb, story.colour),
                file=out,
                flush=True,
            )
            while story.events:
                msg = story.events.pop(0)
                cleaned = cleaned or msg.startswith("cleanup")
                print(f"        >> {msg}", file=out, flush=True)
            if cleaned and level == "ok" and time.monotonic() - t0 > 8 and not calm:
                calm = True
                left = duration - (time.monotonic() - t0)
                if diag.http_server is not None and left > 1:
                    print(
                        f"        (the story is told; the dashboard stays up {left:.0f} s more)", file=out, flush=True
                    )
    except KeyboardInterrupt:
        pass
    return saw_critical, cleaned


def _status_line(p: dict[str, Any], m: dict[str, Any], elapsed: float, threshold_mb: int, colour: bool) -> str:
    level = p["pressure"]["level"]
    return (
        f"{elapsed:5.1f}s  RSS {human_bytes(p['process']['rss_bytes']):>9} / "
        f"{human_bytes(threshold_mb * MIB)}  "
        f"pressure {_colour(f'{level:<8}', level, colour)}  cache {human_bytes(m['bytes']):>9} "
        f"({m['entries']} entries, hit rate {m['hit_rate']:.0%})  children {p['children']['count']} "
        f"({human_bytes(p['children']['rss_bytes'])})"
    )


def _print_summary(out: TextIO, diag: Any, work: _Workload) -> None:
    print(file=out)
    prof = diag.profile()
    ov = diag.overhead()
    print(
        f"done: {work.answered} prompts answered; pressure now {prof['pressure']['level']}; "
        f"monitor cost {ov['monitor_cpu_seconds'] * 1000:.0f} ms CPU over {ov['ticks']} ticks "
        f"(median tick {1000 * (ov['tick_seconds_median'] or 0):.2f} ms)",
        file=out,
    )
    print("next: `memdiag profile` / `memdiag diagnostics` against your own service (see README)", file=out)


def _fmt(reason: dict[str, Any]) -> str:
    if reason["unit"] == "bytes":
        return f"{human_bytes(reason['value'])} >= {human_bytes(reason['threshold'])}"
    return f"{reason['value']:.3g} >= {reason['threshold']:.3g}"


def _http_available() -> bool:
    try:
        import memdiag.dashboard
        import memdiag.http.server  # noqa: F401
    except ImportError:
        return False
    return True


def _token_hint() -> str:
    from .runtime import runtime_dir

    return str(runtime_dir() / f"{os.getpid()}.token")


if __name__ == "__main__":
    raise SystemExit(main())
