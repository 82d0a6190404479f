"""Human renderings of the reports (``--json`` prints the reports themselves).

Every function takes the plain dict a service's API returns (or the outside/machine
views, which share its keys) and returns text; none does I/O. Missing figures show as
``-``: a renderer never fails on a report from an older or newer memdiag.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from ._format import human_bytes, human_duration, level_text, percent, style, table

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "render_cleanup",
    "render_config",
    "render_diagnostics",
    "render_leaks",
    "render_profile",
    "render_ps",
    "render_server",
]


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


def _clock(ts: float | None) -> str:
    return "-" if not ts else time.strftime("%H:%M:%S", time.localtime(ts))


def _signal_value(value: Any, unit: str | None) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    if unit == "bytes":
        return human_bytes(value)
    if unit == "ratio":
        return percent(100.0 * value)
    if unit == "percent":
        return percent(value, 2)
    return f"{value:g}{' ' + unit if unit else ''}"


def reason_text(r: Mapping[str, Any]) -> str:
    """``"process_rss 612.0 MiB >= 500.0 MiB (critical)"``."""
    unit = r.get("unit")
    detail = f" [{r['detail']}]" if r.get("detail") else ""
    value, threshold = _signal_value(r.get("value"), unit), _signal_value(r.get("threshold"), unit)
    return f"{r.get('signal')} {value} >= {threshold} ({r.get('level')}){detail}"


def _heading(text: str) -> str:
    return style(text, bold=True)


def _pressure_lines(p: Mapping[str, Any] | None) -> list[list[str]]:
    if not p:
        return [["Pressure", "-"]]
    level = p.get("level")
    head = level_text(level)
    if p.get("instant"):
        head += " (judged from this one reading, with the local thresholds)"
    elif p.get("since") and level != "ok":
        head += f" since {_clock(p.get('since'))}"
    rows = [["Pressure", head]]
    for r in p.get("reasons") or []:
        rows.append(["", reason_text(r)])
    return rows


def _system_cell(s: Mapping[str, Any] | None) -> str:
    if not s:
        return "-"
    return (
        f"{percent(s.get('percent'))} used: {human_bytes(s.get('used_bytes'))} of {human_bytes(s.get('total_bytes'))}, "
        f"{human_bytes(s.get('available_bytes'))} available"
    )


def _cgroup_cell(c: Mapping[str, Any] | None) -> str:
    if not c:
        return "none found"
    limit = c.get("limit_bytes")
    head = f"v{c.get('version')} {c.get('path')}: working set {human_bytes(c.get('working_set_bytes'))}"
    if limit:
        head += f" of limit {human_bytes(limit)} ({percent(100.0 * (c.get('usage_ratio') or 0))})"
    else:
        head += ", no limit"
    events = c.get("events") or {}
    if events.get("oom_kill"):
        head += f", {events['oom_kill']} OOM kills"
    return head


def _psi_cell(p: Mapping[str, Any] | None) -> str:
    if not p:
        return "not available"
    full = p.get("full_avg10")
    text = f"some {percent(p.get('some_avg10'), 2)} (avg10), {percent(p.get('some_avg60'), 2)} (avg60)"
    if full is not None:
        text += f"; full {percent(full, 2)} (avg10)"
    return text


def _caches_table(caches: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for c in caches:
        hit = c.get("hit_rate", c.get("hit_ratio"))
        fill = c.get("fill_ratio")
        evictions = c.get("evictions_total", c.get("evictions"))
        rows.append(
            [
                c.get("name"),
                c.get("entries"),
                human_bytes(c.get("bytes")),
                human_bytes(c.get("max_bytes")),
                percent(100.0 * fill) if isinstance(fill, (int, float)) else "-",
                percent(100.0 * hit) if isinstance(hit, (int, float)) else "-",
                evictions if not isinstance(evictions, dict) else sum(evictions.values()),
                style("PRESSURE", "yellow") if c.get("memory_pressure") else "",
            ]
        )
    return table(
        rows, ["CACHE", "ENTRIES", "SIZE", "MAX", "FILL", "HIT RATE", "EVICTIONS", ""], right=(1, 2, 3, 4, 5, 6)
    )


def _children_table(procs: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for c in procs:
        cmd = c.get("cmdline")
        cmd_text = " ".join(cmd) if isinstance(cmd, list) else (c.get("name") or "")
        if len(cmd_text) > 60:
            cmd_text = cmd_text[:57] + "..."
        rows.append(
            [
                c.get("pid"),
                c.get("ppid"),
                style("zombie", "red") if c.get("zombie") else c.get("state"),
                human_bytes(c.get("rss_bytes")),
                human_bytes(c.get("uss_bytes")),
                human_bytes(c.get("pss_bytes")),
                ("  " * max(0, int(c.get("depth") or 1) - 1)) + cmd_text,
            ]
        )
    return table(rows, ["PID", "PPID", "STATE", "RSS", "USS", "PSS", "COMMAND"], right=(0, 1, 3, 4, 5))


def _top_table(procs: Sequence[Mapping[str, Any]]) -> str:
    rows = [[p.get("pid"), human_bytes(p.get("rss_bytes")), p.get("user"), p.get("name")] for p in procs]
    return table(rows, ["PID", "RSS", "USER", "NAME"], right=(0, 1))


def _profile_heading(d: Mapping[str, Any], view: str, source: str) -> str:
    if view == "machine":
        return _heading("Machine memory (no memdiag service registered; --pid N shows one process)")
    name = (d.get("process") or {}).get("name") or ""
    who = f"PID {d.get('pid')}" + (f" ({name})" if name else "")
    if view == "outside":
        return _heading(f"{who}, seen from outside: no memdiag agent in the process")
    return _heading(f"memdiag profile of {who}{(' at ' + source) if source else ''}")


def _process_lines(proc: Mapping[str, Any]) -> list[list[str]]:
    """RSS against the threshold; USS, PSS, swap; threads and open files."""
    rss, threshold = proc.get("rss_bytes"), proc.get("threshold_bytes")
    share = percent(proc.get("percent_of_threshold"))
    kv = [["Process", f"RSS {human_bytes(rss)} of {human_bytes(threshold)} threshold ({share})"]]
    extras = [
        f"{label} {human_bytes(proc.get(key))}"
        for label, key in (("USS", "uss_bytes"), ("PSS", "pss_bytes"), ("swap", "swap_bytes"))
        if proc.get(key) is not None
    ]
    if extras:
        when = f" (profiled at {_clock(proc.get('profiled_at'))})" if proc.get("profiled_at") else ""
        kv.append(["", ", ".join(extras) + when])
    if proc.get("threads") is not None or proc.get("fds") is not None:
        kv.append(["", f"{proc.get('threads', '-')} threads, {proc.get('fds', '-')} open files"])
    return kv


def _agent_lines(d: Mapping[str, Any], view: str) -> list[list[str]]:
    """What only an agent (or the machine view's children) knows: Python, children, monitor."""
    kv: list[list[str]] = []
    py = d.get("python")
    if view == "service" and py:
        objects = py.get("objects")
        text = f"{py.get('allocated_blocks', '-')} allocated blocks" + (
            f", {objects} objects" if objects is not None else ""
        )
        kv.append(["Python", text + f", gc counts {py.get('gc_counts', '-')}, {py.get('threads', '-')} threads"])
    ch = d.get("children")
    if ch:
        text = (
            f"{ch.get('count', 0)} processes, {human_bytes(ch.get('rss_bytes'))} "
            f"of {human_bytes(ch.get('threshold_bytes'))} threshold"
        )
        zombies = ch.get("zombies") or 0
        text += f", {style(str(zombies) + ' zombies', 'red') if zombies else '0 zombies'}"
        kv.append(["Children", text])
    mon = d.get("monitor")
    if mon:
        state = "running" if mon.get("running") else style("stopped", "red")
        every = human_duration(mon.get("sample_interval"))
        kv.append(["Monitor", f"{state}, a sample every {every}, {mon.get('ticks', 0)} samples"])
        if mon.get("last_error"):
            kv.append(["", style(f"last error: {mon['last_error']}", "red")])
    return kv


def render_profile(d: Mapping[str, Any], *, source: str = "") -> str:
    """The profile (a service's, the outside view of a PID, or the machine view)."""
    view = d.get("view", "service")
    out = [_profile_heading(d, view, source)]
    kv = _pressure_lines(d.get("pressure"))
    if view != "machine":
        kv += _process_lines(d.get("process") or {})
    kv.append(["System", _system_cell(d.get("system"))])
    kv.append(["Cgroup", _cgroup_cell(d.get("cgroup"))])
    kv.append(["PSI", _psi_cell(d.get("psi"))])
    kv += _agent_lines(d, view)
    out.append(table(kv))
    caches = d.get("caches")
    if view == "service":
        out.append("")
        out.append(_caches_table(caches) if caches else "No caches registered.")
    procs = _get(d, "children", "processes")
    if procs:
        out += ["", _children_table(procs)]
    if view == "machine" and d.get("top_processes"):
        out += ["", _heading("Largest processes"), _top_table(d["top_processes"])]
    unavailable = d.get("unavailable")
    if unavailable and view == "outside":
        out += ["", "Not visible from outside:"]
        out += [f"  - {text}" for text in unavailable.values()]
    return "\n".join(out)


_CONFIG_KEYS = (
    "memory_threshold_mb",
    "subprocess_threshold_mb",
    "cache_pressure_threshold",
    "system_memory_threshold",
    "psi_threshold",
    "enable_auto_cleanup",
    "cleanup_cooldown",
    "sample_interval",
    "profile_interval",
    "enable_profiling",
)


def _trends_section(trends: Mapping[str, Any]) -> list[str]:
    rows = []
    for key, t in trends.items():
        if not isinstance(t, Mapping):
            continue
        slope = t.get("slope_per_second")
        unit_bytes = key != "heap_blocks"
        per_min = slope * 60 if isinstance(slope, (int, float)) else None
        rate = (
            (human_bytes(per_min, signed=True) if unit_bytes else f"{per_min:+.0f} blocks")
            if per_min is not None
            else "-"
        )
        eta = t.get("seconds_to_threshold")
        shape = "growing" if t.get("growing") else "plateau" if t.get("plateau") else "flat"
        rows.append(
            [key, f"{rate}/min", shape, t.get("points", "-"), human_duration(eta) if eta is not None else "never"]
        )
    out = ["", _heading(f"Trends (last {human_duration(trends.get('window_seconds'))})")]
    out.append(
        table(rows, ["SERIES", "RATE", "TREND", "POINTS", "TO THRESHOLD"], right=(1, 3))
        if rows
        else "Not enough history yet."
    )
    return out


def _events_section(events: Sequence[Mapping[str, Any]]) -> list[str]:
    if not events:
        return []
    rows = [
        [
            _clock(e.get("time")),
            f"{e.get('from')} -> {e.get('to')}",
            "; ".join(reason_text(r) for r in e.get("reasons") or []),
        ]
        for e in events[-10:]
    ]
    return ["", _heading("Pressure events"), table(rows)]


def _cleanup_section(cleanup: Mapping[str, Any]) -> list[str]:
    last = cleanup.get("last")
    runs = cleanup.get("runs") or {}
    line = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in runs.items()) or "no runs"
    if last:
        line += f"; last at {_clock(last.get('started_at'))} freed {human_bytes(last.get('freed_bytes'))}"
    if cleanup.get("retry_after_seconds"):
        line += f"; next allowed in {human_duration(cleanup['retry_after_seconds'])}"
    return ["", _heading("Cleanup"), line]


def render_diagnostics(d: Mapping[str, Any], *, source: str = "") -> str:
    """The spec's diagnostics: thresholds, subprocesses, allocations, leaks, trends."""
    if d.get("view") in ("outside", "machine"):
        return render_profile(d, source=source)
    out = [render_profile(d.get("profile") or {}, source=source), ""]
    cfg = d.get("config") or {}
    out.append(_heading("Configuration"))
    out.append(table([[k, cfg.get(k)] for k in _CONFIG_KEYS if k in cfg]))
    subs = d.get("subprocesses")
    out += ["", _heading(f"Subprocesses ({len(subs or [])})")]
    out.append(_children_table(subs) if subs else "None.")
    leaks = d.get("leaks")
    if isinstance(leaks, Mapping):
        out += ["", render_leaks(leaks)]
    out += _trends_section(d.get("trends") or {})
    out += _events_section(d.get("pressure_events") or [])
    out += _cleanup_section(d.get("cleanup") or {})
    ov = d.get("overhead") or {}
    if ov:
        out += [
            "",
            f"Monitor overhead: {percent(ov.get('monitor_cpu_percent'), 3)} CPU, "
            f"{human_duration(ov.get('tick_seconds_median'))} per sample (median), "
            f"{human_bytes(ov.get('memory_bytes'))} held",
        ]
        cost = ov.get("own_cost") or {}
        for name, part in (cost.get("components") or {}).items():
            bound = part.get("bound_bytes")
            limit = f"at most {human_bytes(bound)}" if bound is not None else "bounded by count"
            out.append(f"  {name}: {human_bytes(part.get('bytes'))} ({limit}: {part.get('bound')})")
        if cost:
            out.append(f"  not counted here: {cost.get('not_counted')}")
    return "\n".join(out)


def render_cleanup(d: Mapping[str, Any]) -> str:
    """What a cleanup did: actions, bytes freed, RSS before and after; or why it was skipped."""
    if not d.get("performed"):
        reason = d.get("skipped_reason") or "skipped"
        text = f"Cleanup skipped: {reason.replace('_', ' ')}"
        wait = d.get("retry_after_seconds")
        if wait:
            at = time.strftime("%H:%M:%S", time.localtime(time.time() + wait))
            text += f"; it may run again in {human_duration(wait)} (at {at}), or now with --force"
        return text
    head = "Dry run: nothing was changed." if d.get("dry_run") else "Cleanup done."
    rows = []
    for a in d.get("actions") or []:
        status = (
            "skipped: " + a["skipped"] if a.get("skipped") else ("error: " + a["error"] if a.get("error") else "done")
        )
        rows.append(
            [
                a.get("name"),
                status,
                human_bytes(a.get("freed_bytes")),
                human_bytes(a.get("rss_freed_bytes")),
                human_duration(a.get("seconds")),
                a.get("detail") or "",
            ]
        )
    summary = (
        f"Freed {human_bytes(d.get('freed_bytes'))} (measured; the rungs claimed "
        f"{human_bytes(d.get('released_logical_bytes'))}); RSS {human_bytes(d.get('rss_before'))} -> "
        f"{human_bytes(d.get('rss_after'))} ({human_bytes(d.get('rss_freed_bytes'))} returned to the OS) "
        f"in {human_duration(d.get('seconds'))}; "
        f"pressure {level_text(d.get('level_before'))} -> {level_text(d.get('level_after'))}"
    )
    return "\n".join(
        [head, table(rows, ["ACTION", "STATUS", "FREED", "RSS FREED", "TIME", "DETAIL"], right=(2, 3, 4)), summary]
    )


def render_config(config: Mapping[str, Any], *, changed: Sequence[str] = (), source: str = "") -> str:
    """The configuration as a table; ``changed`` fields are marked."""
    rows = [[("* " if k in changed else "  ") + k, "none" if v is None else v] for k, v in config.items()]
    head = f"Configuration{(' of ' + source) if source else ''}:"
    return "\n".join([head, table(rows)])


def render_ps(rows: Sequence[Mapping[str, Any]]) -> str:
    """``memdiag ps``: one line per service."""
    if not rows:
        return "No memdiag services are running for this user."
    body = []
    for r in rows:
        role = r.get("role")
        if role == "worker":
            role = f"worker {r.get('slot')} of {r.get('server_pid')}"
        body.append(
            [
                r.get("pid"),
                r.get("name") or "-",
                role or "-",
                human_bytes(r.get("rss_bytes")),
                level_text(r.get("pressure")) if r.get("pressure") else style(r.get("error") or "-", "red"),
                human_duration(time.time() - r["started_at"]) if r.get("started_at") else "-",
                r.get("url") or ("local" if r.get("socket") else "-"),
                r.get("version") or "-",
            ]
        )
    return table(body, ["PID", "NAME", "ROLE", "RSS", "PRESSURE", "UPTIME", "API", "VERSION"], right=(0, 3))


def render_server(d: Mapping[str, Any]) -> str:
    """``memdiag profile --server PID``: every process of a pre-fork server and the sum."""
    server = d.get("server") or {}
    head = _heading(f"Server {server.get('pid', '?')} ({server.get('id', 'not a pre-fork server')})")
    rows = []
    for m in d.get("members") or []:
        role = m.get("role") or "-"
        if role == "worker":
            role = f"worker {m.get('slot')}"
        rows.append(
            [
                m.get("pid"),
                role,
                human_bytes(m.get("rss_bytes")),
                human_bytes(m.get("pss_bytes")),
                m.get("children") if m.get("children") is not None else "-",
                level_text(m.get("pressure")) if m.get("pressure") else style(m.get("error") or "no agent", "yellow"),
            ]
        )
    t = d.get("total") or {}
    rows.append(
        [
            "total",
            f"{t.get('processes', 0)} processes",
            human_bytes(t.get("rss_bytes")),
            human_bytes(t.get("pss_bytes")),
            t.get("children") if t.get("children") is not None else "-",
            level_text(d.get("pressure")) if d.get("pressure") else "-",
        ]
    )
    return "\n".join([head, table(rows, ["PID", "ROLE", "RSS", "PSS", "CHILDREN", "PRESSURE"], right=(0, 2, 3, 4))])


def _site(s: Mapping[str, Any]) -> str:
    if s.get("file"):
        return f"{s['file']}:{s.get('line', '?')}"
    tb = s.get("traceback")
    return str(tb[-1]) if isinstance(tb, list) and tb else "-"


def render_leaks(d: Mapping[str, Any]) -> str:
    """The leak report (``GET /api/memory/leaks``): suspects, tracing, allocation sites."""
    out = [_heading("Leaks")]
    if d.get("enabled") is False:
        out.append("Leak detection is off (leak_detection = false).")
    suspects = d.get("suspects") or []
    checked = f"{d.get('checks', 0)} checks over {human_duration(d.get('window_seconds'))} windows"
    if not suspects:
        out.append(f"No leak suspects ({checked}).")
    else:
        out.append(f"{len(suspects)} suspects ({checked}):")
        rows = []
        for sp in suspects[:10]:
            rate = sp.get("growth_bytes_per_min")
            count = sp.get("growth_per_min")
            growth = (
                f"{human_bytes(rate, signed=True)}/min"
                if isinstance(rate, (int, float))
                else f"+{count:g}/min"
                if isinstance(count, (int, float))
                else "-"
            )
            rows.append(
                [
                    sp.get("kind"),
                    _site(sp),
                    growth,
                    percent(100.0 * sp["confidence"], 0) if isinstance(sp.get("confidence"), (int, float)) else "-",
                    sp.get("classified_by") or "-",
                ]
            )
        out.append(table(rows, ["KIND", "WHERE", "GROWTH", "CONFIDENCE", "BY"], right=(2, 3)))
        for sp in suspects[:3]:
            if sp.get("suggestion"):
                out.append(f"  {sp.get('kind')} at {_site(sp)}: {sp['suggestion']}")
            tb = sp.get("traceback")
            if isinstance(tb, list) and len(tb) > 1:
                out += [f"      {frame}" for frame in tb[:8]]
    tracing = d.get("tracing") or {}
    window = tracing.get("window")
    if tracing.get("running") and isinstance(window, Mapping):
        out.append(f"Tracing allocations now: {human_duration(window.get('remaining_seconds'))} left.")
    last = tracing.get("last")
    if isinstance(last, Mapping):
        out.append(
            f"Last tracing window: #{last.get('id')} ({last.get('reason')}), {human_duration(last.get('seconds'))}, "
            f"traced growth {human_bytes(last.get('traced_growth_bytes_per_min'), signed=True)}/min"
        )
    live = d.get("top_live_sites")
    if isinstance(live, list) and live:
        backend = (d.get("live_heap") or {}).get("backend")
        rows = [[f"{x.get('file')}:{x.get('line')}", human_bytes(x.get("live_bytes")), x.get("live_blocks"), x.get("domain")]
                for x in live[:10] if isinstance(x, Mapping)]
        out += ["", _heading(f"Live heap, top sites ({backend})"), table(rows, ["WHERE", "LIVE", "BLOCKS", "DOMAIN"], right=(1, 2))]
    for key, title in (("growing_sites", "Growing allocation sites"), ("top_allocations", "Top allocation sites")):
        sites = d.get(key)
        if isinstance(sites, list) and sites:
            out += ["", _heading(f"{title} (last tracing window)"), render_sites(sites)]
    return "\n".join(out)


def allocation_sites(d: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The allocation sites of the last tracing window: growing ones, else the largest."""
    for key in ("growing_sites", "top_allocations"):
        v = d.get(key)
        if isinstance(v, list) and v:
            return list(v)
    return []


def render_sites(sites: Sequence[Mapping[str, Any]], limit: int = 15) -> str:
    """A table of allocation sites: size (and growth, for growing sites), blocks, where."""
    growing = any("growth_bytes" in s for s in sites)
    rows = []
    for s in sites[:limit]:
        row = [human_bytes(s.get("size_bytes")), s.get("count")]
        if growing:
            per_min = s.get("growth_bytes_per_min")
            row += [
                human_bytes(s.get("growth_bytes"), signed=True),
                f"{human_bytes(per_min, signed=True)}/min" if isinstance(per_min, (int, float)) else "-",
            ]
        rows.append([*row, _site(s)])
    headers = ["SIZE", "BLOCKS", *(["GROWTH", "RATE"] if growing else []), "ALLOCATION SITE"]
    return table(rows, headers, right=tuple(range(len(headers) - 1)))
