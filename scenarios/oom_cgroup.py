"""OOM averted, proven: a service in a 150 MiB memory cgroup, with and without memdiag.

Run (root, Linux; cgroup v2 where its memory controller is available, else v1):

    python scenarios/oom_cgroup.py            # the full scenario (~2 x 90 s)
    python scenarios/oom_cgroup.py --short    # the CI form (~2 x 30 s; tests/test_oom_scenario.py)

The service (this file with ``--service``, started inside a new memory cgroup whose limit
is ``--limit-mib``) does what agent services do: a *healthy* cache of model answers (hit
ratio ~95 %, bounded), a *cold* cache of rarely-read blobs (hit ratio ~10 %, unbounded)
and a *leak*: sessions that are never expired. Its memory grows toward the limit.

* ``without``: memdiag is not started. The service is OOM-killed (SIGKILL, the cgroup's
  ``oom_kill`` counter rises).
* ``with``: memdiag runs with its defaults except ``act_ahead_seconds`` and a short leak
  window; the application registered one cleanup rung of its own (``expire_sessions``,
  what it would run anyway under pressure). memdiag sees the limit coming from the trend,
  empties the cold cache, runs the application's rung, escalates when critical recurs
  inside the cooldown, and leaves the healthy cache alone while the growth is elsewhere.
  The service survives to the end.
* ``doomed`` (``--mode doomed``): as ``with`` but the application registered no rung
  that can free the leak: the OOM cannot be averted, and the flight recorder names the
  cause (the growth outside the caches, with the leak suspect) before the kill.

Prints one JSON document with each run's outcome (and a line per second with ``-v``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
CHUNK = 64 * 1024  # entries below glibc's mmap threshold: freed heap needs malloc_trim


# -- the cgroup ------------------------------------------------------------------------


class MemoryCgroup:
    """A new memory cgroup with a hard limit and no swap; removed by :meth:`remove`."""

    def __init__(self, name: str, limit_bytes: int) -> None:
        self.version, parent = _cgroup_root()
        self.path = parent / name
        self.path.mkdir()
        if self.version == 2:
            (self.path / "memory.max").write_text(str(limit_bytes))
            for f, v in (("memory.swap.max", "0"),):
                if (self.path / f).exists():
                    (self.path / f).write_text(v)
        else:
            (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            if (self.path / "memory.memsw.limit_in_bytes").exists():
                try:
                    (self.path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
                except OSError:
                    pass  # no swap accounting: there is no swap to escape to anyway
            for f, v in (("memory.move_charge_at_immigrate", "3"), ("memory.swappiness", "0")):
                try:  # deprecated on recent kernels; the limit is what matters
                    (self.path / f).write_text(v)
                except OSError:
                    pass

    def oom_kills(self) -> int:
        if self.version == 2:
            text = (self.path / "memory.events").read_text()
        else:
            text = (self.path / "memory.oom_control").read_text()
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k == "oom_kill":
                return int(v)
        return 0

    def peak(self) -> int | None:
        f = self.path / ("memory.peak" if self.version == 2 else "memory.max_usage_in_bytes")
        try:
            return int(f.read_text())
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def _cgroup_root() -> tuple[int, Path]:
    """(version, parent directory): v2 if its memory controller is usable, else v1."""
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        ctl = root / "cgroup.controllers"
        if ctl.exists() and "memory" in ctl.read_text().split():
            return 2, root
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "memory.limit_in_bytes").exists():
        return 1, v1
    raise SystemExit("no writable memory cgroup (v2 memory controller or v1 memory hierarchy) here")


# -- the service -------------------------------------------------------------------------


class BlobCache:
    """A plain application cache that memdiag can watch and shrink (a ManagedCache)."""

    def __init__(self, name: str, max_bytes: int) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self._data: dict[int, bytes] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self.cleared = 0

    def put(self, key: int) -> None:
        with self._lock:
            self._data[key] = os.urandom(16) * (CHUNK // 16)
            while len(self._data) * CHUNK > self.max_bytes:
                del self._data[next(iter(self._data))]

    def get(self, key: int) -> bool:
        with self._lock:
            hit = key in self._data
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        return hit

    def metrics(self) -> dict[str, Any]:
        n = len(self._data)
        lookups = self.hits + self.misses
        return {
            "entries": n,
            "bytes": n * CHUNK,
            "max_bytes": self.max_bytes,
            "fill_ratio": n * CHUNK / self.max_bytes,
            "hit_rate": self.hits / lookups if lookups else 0.0,
            "lookups": lookups,
        }

    def shrink(self, fraction: float) -> int:
        with self._lock:
            drop = int(len(self._data) * fraction)
            for k in list(self._data)[:drop]:
                del self._data[k]
        return drop * CHUNK

    def clear(self, cause: str = "") -> int:
        with self._lock:
            n = len(self._data)
            self._data.clear()
        self.cleared += 1
        return n * CHUNK


def _service(args: argparse.Namespace) -> None:
    # Into the cgroup first, before the heap grows (v1 moves the charges along).
    Path(args.cgroup_procs).write_text(str(os.getpid()))
    rate = args.rate_mib * MIB  # bytes per second, split between the three growers
    healthy = BlobCache("answers", max_bytes=int(args.limit_mib * 0.30) * MIB)
    cold = BlobCache("blobs", max_bytes=10 * 1024 * MIB)
    sessions: dict[int, tuple[float, bytes]] = {}
    expired = [0]
    diag = None
    if args.mode != "without":
        import memdiag

        memdiag.register_cache(healthy)
        memdiag.register_cache(cold)
        if args.mode == "with":

            def expire_sessions(ctx: Any) -> dict[str, Any]:
                """The application's own rung: drop sessions idle for over 5 s."""
                cutoff = time.monotonic() - 5.0
                idle = [k for k, (t, _) in list(sessions.items()) if t < cutoff]
                if not ctx.dry_run:
                    for k in idle:
                        sessions.pop(k, None)
                    expired[0] += len(idle)
                return {"freed_bytes": len(idle) * CHUNK, "count": len(idle), "detail": "idle sessions expired"}

            memdiag.register_cleanup("expire_sessions", expire_sessions, order=100)
        diag = memdiag.start(
            sample_interval=0.25,
            act_ahead_seconds=args.act_ahead,
            leak_window_seconds=max(10.0, args.seconds / 6),
            flight_recorder_path=args.flight,
        )
    t0 = time.monotonic()
    key = 0
    tick = 0.05
    next_report = t0
    while time.monotonic() - t0 < args.seconds:
        start = time.monotonic()
        for _ in range(max(1, int(rate * tick / CHUNK / 3))):
            key += 1
            healthy.put(key)
            cold.put(key)
            sessions[key] = (time.monotonic(), os.urandom(16) * (CHUNK // 16))
        for i in range(40):  # the answer cache serves recent keys; the blob cache rarely
            healthy.get(key - (i % 20))
            cold.get(key - 5000 - i if i % 10 else key)
        if time.monotonic() >= next_report and args.verbose:
            next_report += 1.0
            line = {
                "t": round(time.monotonic() - t0, 1),
                "rss_mib": round(_rss() / MIB, 1),
                "healthy_mib": healthy.metrics()["bytes"] // MIB,
                "cold_mib": cold.metrics()["bytes"] // MIB,
                "sessions_mib": len(sessions) * CHUNK // MIB,
            }
            if diag is not None:
                st = diag.status()
                line.update(level=st["status"], cleanups=diag.ladder.runs["performed"])
            print(json.dumps(line), flush=True)
        time.sleep(max(0.0, tick - (time.monotonic() - start)))
    summary = {
        "survived": True,
        "healthy_cache_cleared": healthy.cleared,
        "healthy_hit_rate": round(healthy.metrics()["hit_rate"], 3),
        "cold_cache_cleared": cold.cleared,
        "sessions_expired": expired[0],
    }
    if diag is not None:
        summary["cleanups"] = diag.ladder.runs["performed"]
        summary["events"] = [f"{e['from']}->{e['to']}" for e in diag.events][-10:]
        last = diag.ladder.last_result
        summary["last_cleanup"] = last.to_dict() if last is not None else None
    print("SUMMARY " + json.dumps(summary, default=str), flush=True)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- the runner ----------------------------------------------------------------------------


def run_once(mode: str, *, seconds: float, rate_mib: float, limit_mib: int, act_ahead: float, verbose: bool) -> dict:
    """Run the service once in a fresh cgroup; its outcome."""
    cg = MemoryCgroup(f"memdiag-oom-{os.getpid()}-{mode}", limit_mib * MIB)
    flight = Path(tempfile.mkdtemp(prefix="memdiag-oom-")) / "flight.json"
    cmd = [
        sys.executable,
        __file__,
        "--service",
        "--mode",
        mode,
        "--seconds",
        str(seconds),
        "--rate-mib",
        str(rate_mib),
        "--limit-mib",
        str(limit_mib),
        "--act-ahead",
        str(act_ahead),
        "--cgroup-procs",
        str(cg.path / "cgroup.procs"),
        "--flight",
        str(flight),
    ] + (["-v"] if verbose else [])
    env = {**os.environ, "MEMDIAG_HISTORY_PERSIST": "false"}
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds * 4 + 60)
        elapsed = time.monotonic() - started
        summary = None
        for line in proc.stdout.splitlines():
            if verbose:
                print(f"  [{mode}] {line}", file=sys.stderr)
            if line.startswith("SUMMARY "):
                summary = json.loads(line[8:])
        flight_doc = json.loads(flight.read_text()) if flight.exists() else None
        return {
            "mode": mode,
            "cgroup": f"v{cg.version}",
            "limit_mib": limit_mib,
            "returncode": proc.returncode,
            "oom_killed": proc.returncode == -signal.SIGKILL and cg.oom_kills() > 0,
            "oom_kills": cg.oom_kills(),
            "survived": proc.returncode == 0 and bool(summary and summary.get("survived")),
            "seconds": round(elapsed, 1),
            "peak_mib": round((cg.peak() or 0) / MIB, 1),
            "summary": summary,
            "flight_record": {"reason": flight_doc["reason"], "written_at": flight_doc["written_at"]}
            if flight_doc
            else None,
            "stderr_tail": proc.stderr[-800:],
        }
    finally:
        cg.remove()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--service", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="both", choices=("both", "with", "without", "doomed", "all"))
    p.add_argument("--short", action="store_true", help="the CI form: faster growth, shorter run")
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--rate-mib", type=float, default=None, help="growth in MiB/s across caches and leak")
    p.add_argument("--limit-mib", type=int, default=150)
    p.add_argument("--act-ahead", type=float, default=20.0)
    p.add_argument("--cgroup-procs", help=argparse.SUPPRESS)
    p.add_argument("--flight", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.service:
        _service(args)
        return 0
    seconds = args.seconds or (30.0 if args.short else 90.0)
    rate = args.rate_mib or (9.0 if args.short else 3.0)
    modes = {"both": ["without", "with"], "all": ["without", "with", "doomed"]}.get(args.mode, [args.mode])
    results = [
        run_once(
            m,
            # Doomed runs until the leak alone must exceed the limit.
            seconds=seconds * 2.5 if m == "doomed" else seconds,
            rate_mib=rate,
            limit_mib=args.limit_mib,
            act_ahead=args.act_ahead,
            verbose=args.verbose,
        )
        for m in modes
    ]
    print(json.dumps({"seconds": seconds, "rate_mib_per_s": rate, "runs": results}, indent=1))
    _bars(results)
    return 0


def _bars(results: list[dict[str, Any]]) -> None:
    """The bar lines benchmarks/run_all.py composes the summary of docs/benchmarks.md from."""
    print()
    for r in results:
        met = "met" if r["survived"] == (r["mode"] == "with") else "NOT met"
        summary = r.get("summary") or {}
        if r["mode"] == "without":
            what = "without memdiag the service is OOM-killed (the control)"
        elif r["mode"] == "with":
            what = "with memdiag the service survives, its healthy cache never emptied"
            met = met if not summary.get("healthy_cache_cleared") else "NOT met"
        else:
            what = "a doomed service's cause is on record before the kill"
            met = met if r.get("flight_record") else "NOT met"
        print(f"- bar: {what}: {met} ({'survived' if r['survived'] else 'killed'} after {r['seconds']} s, "
              f"cgroup peak {r['peak_mib']} MiB)")


if __name__ == "__main__":
    sys.exit(main())
