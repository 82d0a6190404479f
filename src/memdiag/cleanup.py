"""The cleanup ladder: coordinated, measured, rate-limited memory release.

Rungs run cheapest first (see :class:`~memdiag.registry.CleanupAction` for the order):
shrink or clear registered caches, ``gc.collect()``, glibc ``malloc_trim(0)``, then what
other parts register (zombie reaping, Node.js GC, owned children) and user handlers.
Each rung is measured: seconds, and RSS before and after it. The accounting is honest
(docs/cleanup.md, "What freed_bytes means"): a rung's ``freed_bytes`` is the RSS this
process returned to the OS across the rung (freed heap is handed back with ``malloc_trim``
inside the rung's window, so the rung that dropped the objects gets the credit, not the
trim after it); what the rung claims itself (a cache's entry bytes) is reported apart as
``released_logical_bytes`` and never added in. The run's ``freed_bytes`` is the measured
process drop (RSS before the first rung minus RSS after the last), plus what rungs acting
on *other* processes measured there (``scope: "children"``: terminated children, Node.js
heaps), never the sum of the rungs' claims.

Only one cleanup runs at a time (single-flight); between cleanups ``cleanup_cooldown``
must pass unless forced. An automatic cleanup re-checks pressure between rungs and stops
once it is resolved. Dry runs report what they would do and change nothing.

The cooldown limits *repetition of the same rungs*; it does not disarm the defence. When
pressure is critical again inside the cooldown, an automatic run *escalates* (at most every
:data:`ESCALATE_INTERVAL` seconds): it runs as an emergency, skipping each rung that ran
within the cooldown and freed less than :data:`REPEAT_MIN_FREED` (a cache that refilled is
emptied again; a ``gc.collect()`` that found nothing is not repeated).

A leak (growth outside the caches, ``CleanupContext.hints``) lowers the priority of
emptying a *healthy* cache (hit rate at least :data:`HEALTHY_HIT_RATE`): the ``caches``
rung leaves it, and the last-resort ``healthy_caches`` rung (order 1000) empties it only
when pressure is still critical after every other rung, the application's included.
Heap a rung freed is returned to the OS (``malloc_trim``) before pressure is re-checked,
so the next rung is judged on real figures.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import registry
from ._logging import get_logger
from ._record import field, mutable_record
from .config import MemoryConfig, active_config
from .pressure import RANK
from .probes.process import read_statm_rss
from .registry import CleanupContext

__all__ = ["ActionResult", "CleanupLadder", "CleanupResult", "install_builtin_actions", "malloc_trim_available"]

log = get_logger("memdiag.cleanup")


@mutable_record
class ActionResult:
    """What one rung did."""

    name: str
    #: Measured release: this process's RSS drop across the rung (>= 0), or, for a rung
    #: acting on other processes (``scope == "children"``), what it measured there.
    #: In a dry run, the rung's estimate.
    freed_bytes: int = 0
    #: RSS before minus RSS after the rung (negative when it grew).
    rss_freed_bytes: int = 0
    #: What the rung itself claims (a cache's entry bytes); reported, never summed.
    released_logical_bytes: int | None = None
    scope: str = "process"
    seconds: float = 0.0
    count: int | None = None
    detail: str = ""
    skipped: str | None = None
    error: str | None = None

    @property
    def reported_bytes(self) -> int | None:
        """The earlier name of :attr:`released_logical_bytes`."""
        return self.released_logical_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "freed_bytes": self.freed_bytes,
            "rss_freed_bytes": self.rss_freed_bytes,
            "released_logical_bytes": self.released_logical_bytes,
            "reported_bytes": self.released_logical_bytes,  # the earlier name
            "scope": self.scope,
            "seconds": round(self.seconds, 6),
            "count": self.count,
            "detail": self.detail,
            "skipped": self.skipped,
            "error": self.error,
        }


@mutable_record
class CleanupResult:
    """The outcome of one cleanup request (performed or skipped)."""

    performed: bool
    reason: str
    dry_run: bool = False
    skipped_reason: str | None = None
    retry_after_seconds: float | None = None
    level_before: str = "ok"
    level_after: str | None = None
    resolved: bool = False
    actions: list[ActionResult] = field(default_factory=list)
    rss_before: int | None = None
    rss_after: int | None = None
    started_at: float = field(default_factory=time.time)
    seconds: float = 0.0

    @property
    def children_freed_bytes(self) -> int:
        """What the rungs acting on other processes measured there."""
        return sum(a.freed_bytes for a in self.actions if a.scope == "children")

    @property
    def process_freed_bytes(self) -> int:
        """This process's measured RSS drop over the run (>= 0); a dry run: the estimates."""
        if self.dry_run:
            return sum(a.freed_bytes for a in self.actions if a.scope != "children")
        if self.rss_before is None or self.rss_after is None:
            return 0
        return max(0, self.rss_before - self.rss_after)

    @property
    def freed_bytes(self) -> int:
        """Measured release: the process drop plus the children's, not the rungs' claims."""
        return self.process_freed_bytes + self.children_freed_bytes

    @property
    def released_logical_bytes(self) -> int:
        """The sum of what the rungs claim (may count the same bytes twice: shown apart)."""
        return sum(a.released_logical_bytes or 0 for a in self.actions)

    def to_dict(self) -> dict[str, Any]:
        rss_freed = None
        if self.rss_before is not None and self.rss_after is not None:
            rss_freed = self.rss_before - self.rss_after
        return {
            "performed": self.performed,
            "reason": self.reason,
            "dry_run": self.dry_run,
            "skipped_reason": self.skipped_reason,
            "retry_after_seconds": None if self.retry_after_seconds is None else round(self.retry_after_seconds, 3),
            "level_before": self.level_before,
            "level_after": self.level_after,
            "resolved": self.resolved,
            "actions": [a.to_dict() for a in self.actions],
            "actions_taken": [a.name for a in self.actions if a.skipped is None and a.error is None],
            "freed_bytes": self.freed_bytes,
            "process_freed_bytes": self.process_freed_bytes,
            "children_freed_bytes": self.children_freed_bytes,
            "released_logical_bytes": self.released_logical_bytes,
            "rss_before": self.rss_before,
            "rss_after": self.rss_after,
            "rss_freed_bytes": rss_freed,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 6),
        }


# A function that returns the current raw pressure rank (0 ok, 1 warning, 2 critical)
# and its level name, from a fresh sample.
Checker = Callable[[], "tuple[int, str]"]

ESCALATE_INTERVAL = 2.0  # seconds between two escalated runs inside the cooldown
REPEAT_MIN_FREED = 1024 * 1024  # a rung that freed less is not repeated inside the cooldown
HEALTHY_HIT_RATE = 0.8  # a cache serving this share of lookups from memory is healthy
HEALTHY_MIN_LOOKUPS = 100
LAST_RESORT = frozenset({"healthy_caches"})  # run only while pressure is still critical
HEALTHY_CACHES_ORDER = 1000  # after every other rung, the application's (100) included


class CleanupLadder:
    """Runs the registered cleanup actions under single-flight and a cooldown.

    Args:
        config_getter: returns the configuration in force (read at each run).
        checker: returns the raw pressure from a fresh sample; used between rungs of
            automatic runs, and for ``level_after``.
        pid: the process whose RSS measures the rungs.
    """

    def __init__(
        self, config_getter: Callable[[], MemoryConfig], checker: Checker | None = None, pid: int | str = "self"
    ) -> None:
        self._config = config_getter
        self._checker = checker
        self._pid = pid
        self._lock = threading.Lock()
        self._last_end: float | None = None  # monotonic
        self._last_result: CleanupResult | None = None
        self.runs = {"performed": 0, "skipped_cooldown": 0, "skipped_in_progress": 0, "dry_run": 0, "errors": 0}
        #: Bytes the performed (not dry-run) cleanups released, measured (``freed_bytes``), since start.
        self.freed_bytes_total = 0
        #: Automatic runs that escalated inside the cooldown (a subset of "performed").
        self.escalations = 0
        self._listeners: list[Callable[[CleanupResult], None]] = []
        self._rung_last: dict[str, tuple[float, int]] = {}  # name -> (monotonic end, freed bytes)
        self.hints: Callable[[], Mapping[str, Any]] | None = None  # set by the monitor

    @property
    def last_result(self) -> CleanupResult | None:
        return self._last_result

    @property
    def running(self) -> bool:
        return self._lock.locked()

    def add_listener(self, fn: Callable[[CleanupResult], None]) -> None:
        self._listeners.append(fn)

    def auto_due(self, level: str, raw_level: str | None = None) -> bool:
        """True when pressure should start an automatic run now: automatic cleanup is on,
        ``level`` (the committed one) reaches ``auto_cleanup_level``, no run is under way,
        and the cooldown is over, or ``raw_level`` (this sample's) is critical again
        inside it (:meth:`escalation_due`)."""
        cfg = self._config()
        if not cfg.enable_auto_cleanup or RANK[level] < RANK[cfg.auto_cleanup_level] or self.running:
            return False
        return self.retry_after() == 0 or self.escalation_due(raw_level or level)

    def escalation_due(self, level: str) -> bool:
        """True when critical pressure inside the cooldown should escalate now."""
        if level != "critical" or self.running or self._last_end is None or self.retry_after() == 0:
            return False
        return time.monotonic() - self._last_end >= ESCALATE_INTERVAL

    def retry_after(self) -> float:
        """Seconds until a non-forced cleanup may run (0 if it may run now)."""
        if self._last_end is None:
            return 0.0
        return max(0.0, self._config().cleanup_cooldown - (time.monotonic() - self._last_end))

    def run(
        self, *, force: bool = False, dry_run: bool | None = None, reason: str = "manual", level: str = "ok"
    ) -> CleanupResult:
        """Run the ladder once, unless another run is under way or the cooldown holds.

        Args:
            force: ignore the cooldown, and run emergency rungs (clear caches, ...).
            dry_run: report only; ``None`` uses the config's ``cleanup_dry_run``.
            reason: "manual" (asked for) or "auto" (pressure); auto runs stop once the
                pressure is resolved.
            level: the pressure level at the time of the request.
        """
        cfg = self._config()
        dry = cfg.cleanup_dry_run if dry_run is None else bool(dry_run)
        if force and reason == "manual":
            reason = "forced"
        escalate = False
        if not dry and not force:
            wait = self.retry_after()
            if wait > 0 and reason == "auto" and self.escalation_due(level):
                escalate = True  # critical again inside the cooldown: other rungs, not none
            elif wait > 0:
                self.runs["skipped_cooldown"] += 1
                return CleanupResult(False, reason, dry, "cooldown", wait, level)
        if not self._lock.acquire(blocking=False):
            self.runs["skipped_in_progress"] += 1
            return CleanupResult(False, reason, dry, "in_progress", 1.0, level)
        try:
            result = self._run_locked(cfg, force=force, dry=dry, reason=reason, level=level, escalate=escalate)
        finally:
            self._lock.release()
        if result.performed and not result.dry_run:
            self.freed_bytes_total += max(0, result.freed_bytes)
        for fn in list(self._listeners):
            try:
                fn(result)
            except Exception as exc:
                log.warning("cleanup listener failed: %r", exc)
        return result

    def _run_locked(
        self, cfg: MemoryConfig, *, force: bool, dry: bool, reason: str, level: str, escalate: bool = False
    ) -> CleanupResult:
        start = time.perf_counter()
        emergency = force or escalate or reason in ("manual", "forced") or level == "critical"
        ctx = CleanupContext(
            level=level, emergency=emergency, dry_run=dry, reason=reason, config=cfg, hints=self._safe_hints()
        )
        result = CleanupResult(True, "escalated" if escalate else reason, dry, level_before=level)
        result.rss_before = read_statm_rss(self._pid)
        for action in registry.cleanup_actions():
            why = self._skip_reason(action, cfg, emergency=emergency, escalate=escalate, auto=reason == "auto")
            if why is not None:
                result.actions.append(ActionResult(action.name, skipped=why))
                continue
            done = self._run_action(action, ctx)
            result.actions.append(done)
            if not dry:
                # "Freed little" judges usefulness: a cache that dropped its entries may free
                # again once refilled, even when RSS did not show it (heap kept mapped).
                useful = max(done.freed_bytes, done.released_logical_bytes or 0)
                self._rung_last[action.name] = (time.monotonic(), useful)
            if reason == "auto" and not dry and self._checker is not None:
                rank, name = self._safe_check()
                if rank == 0:
                    result.resolved = True
                    result.level_after = name
                    break
        result.rss_after = read_statm_rss(self._pid)
        if result.level_after is None and self._checker is not None:
            result.level_after = self._safe_check()[1]
        result.seconds = time.perf_counter() - start
        if dry:
            self.runs["dry_run"] += 1
        else:
            self.runs["performed"] += 1
            self.escalations += escalate
            self._last_end = time.monotonic()
        self._last_result = result
        return result

    def _skip_reason(
        self, action: registry.CleanupAction, cfg: MemoryConfig, *, emergency: bool, escalate: bool, auto: bool
    ) -> str | None:
        """Why this rung does not run in this run, or None."""
        if action.emergency_only and not emergency:
            return "not an emergency"
        if escalate:
            last = self._rung_last.get(action.name)
            if last is not None and time.monotonic() - last[0] < cfg.cleanup_cooldown and last[1] < REPEAT_MIN_FREED:
                return "ran inside the cooldown and freed little; not repeated"
        if action.name in LAST_RESORT and auto and self._checker is not None and self._safe_check()[0] < 2:
            return "last resort: pressure no longer critical"
        return None

    def _safe_hints(self) -> Mapping[str, Any]:
        if self.hints is None:
            return {}
        try:
            return dict(self.hints())
        except Exception as exc:
            log.debug("growth hints failed: %r", exc)
            return {}

    def _safe_check(self) -> tuple[int, str]:
        try:
            return self._checker()  # type: ignore[misc]
        except Exception as exc:
            log.debug("pressure re-check failed: %r", exc)
            return 2, "unknown"

    def _run_action(self, action: registry.CleanupAction, ctx: CleanupContext) -> ActionResult:
        res = ActionResult(action.name)
        before = read_statm_rss(self._pid)
        t0 = time.perf_counter()
        try:
            facts: Mapping[str, Any] | None = action.fn(ctx)
        except Exception as exc:
            self.runs["errors"] += 1
            res.error = f"{type(exc).__name__}: {exc}"[:300]
            facts = None
        if not ctx.dry_run and action.name != "malloc_trim":
            # Heap the rung freed goes back to the OS inside its own window: the rung that
            # dropped the objects is credited, and the next rung is judged on real figures.
            _trim_quietly(_config(ctx))
        res.seconds = time.perf_counter() - t0
        after = read_statm_rss(self._pid)
        if before is not None and after is not None:
            res.rss_freed_bytes = before - after
        if facts:
            reported = facts.get("would_free_bytes" if ctx.dry_run else "freed_bytes")
            if isinstance(reported, (int, float)):
                res.released_logical_bytes = int(reported)
            if isinstance(facts.get("count"), int):
                res.count = facts["count"]
            res.detail = str(facts.get("detail", ""))[:300]
            if facts.get("scope") == "children":
                res.scope = "children"
        if ctx.dry_run or res.scope == "children":
            # An estimate (dry run), or a release measured in other processes by the rung.
            res.freed_bytes = max(0, res.released_logical_bytes or 0)
        else:
            res.freed_bytes = max(0, res.rss_freed_bytes)
        return res


# -- built-in rungs ----------------------------------------------------------------------


def _config(ctx: CleanupContext) -> MemoryConfig:
    """The configuration of the ladder running a rung (the active one when called bare)."""
    return ctx.config or active_config()


def is_healthy_cache(metrics: Mapping[str, Any]) -> bool:
    """A cache that serves at least :data:`HEALTHY_HIT_RATE` of its lookups (enough of them)."""
    rate = metrics.get("hit_rate", metrics.get("hit_ratio"))
    lookups = metrics.get("lookups", HEALTHY_MIN_LOOKUPS)
    return isinstance(rate, (int, float)) and rate >= HEALTHY_HIT_RATE and lookups >= HEALTHY_MIN_LOOKUPS


def _growth_elsewhere(ctx: CleanupContext) -> bool:
    return bool(ctx.hints and ctx.hints.get("growth_elsewhere"))


def shrink_caches(ctx: CleanupContext) -> dict[str, Any]:
    """The ``caches`` rung: shrink every registered cache, or clear it in an emergency.

    While memory grows outside the caches (``ctx.hints``), a healthy cache is left to the
    last-resort ``healthy_caches`` rung."""
    kept = []
    caches = []
    for cache in registry.caches():
        if _growth_elsewhere(ctx) and _healthy(cache):
            kept.append(getattr(cache, "name", "?"))
        else:
            caches.append(cache)
    out = _empty_caches(caches, ctx, 1.0 if ctx.emergency else _config(ctx).cache_shrink_fraction)
    if kept:
        out["detail"] += f"; kept healthy (growth is elsewhere): {', '.join(kept)}"
    return out


def healthy_caches(ctx: CleanupContext) -> dict[str, Any]:
    """The last-resort rung: empty the healthy caches the ``caches`` rung kept."""
    if not _growth_elsewhere(ctx):
        return {"count": 0, "detail": "nothing kept back"}
    return _empty_caches([c for c in registry.caches() if _healthy(c)], ctx, 1.0)


def _healthy(cache: Any) -> bool:
    try:
        return is_healthy_cache(cache.metrics())
    except Exception:
        return False


def _empty_caches(caches: list[Any], ctx: CleanupContext, fraction: float) -> dict[str, Any]:
    freed = 0
    names = []
    for cache in caches:
        try:
            if ctx.dry_run:
                freed += int(int(cache.metrics().get("bytes", 0)) * fraction)
            elif fraction >= 1.0:
                try:
                    freed += int(cache.clear(cause="pressure"))  # type: ignore[call-arg]
                except TypeError:
                    freed += int(cache.clear())
            else:
                freed += int(cache.shrink(fraction))
            names.append(getattr(cache, "name", "?"))
        except Exception as exc:
            log.warning("cache %r failed to shrink: %r", getattr(cache, "name", cache), exc)
    verb = "clear" if fraction >= 1.0 else f"shrink by {fraction:.0%}"
    key = "would_free_bytes" if ctx.dry_run else "freed_bytes"
    return {key: freed, "count": len(names), "detail": f"{verb}: {', '.join(names) or 'no caches'}"}


def _gc_action(ctx: CleanupContext) -> dict[str, Any]:
    if ctx.dry_run:
        return {"detail": "would run gc.collect()"}
    collected = gc.collect()
    return {"count": collected, "detail": f"{collected} unreachable objects collected; {len(gc.garbage)} in gc.garbage"}


def malloc_trim_available() -> bool:
    """True where glibc's ``malloc_trim`` can be called."""
    from ._libc import malloc_trim_available as available  # loaded on first use: importing memdiag stays cheap

    return available()


def _trim(pad: int) -> int:
    from ._libc import malloc_trim as _libc_trim

    return _libc_trim(pad) or 0


def _trim_quietly(cfg: MemoryConfig) -> None:
    if cfg.malloc_trim and malloc_trim_available():
        _trim(0)


def malloc_trim(ctx: CleanupContext) -> dict[str, Any]:
    """The ``malloc_trim`` rung: return freed heap to the OS (glibc), unless configured off."""
    if not _config(ctx).malloc_trim:
        return {"detail": "disabled by config (malloc_trim = false)"}
    if not malloc_trim_available():
        return {"detail": "not available (not glibc)"}
    if ctx.dry_run:
        return {"detail": "would call malloc_trim(0)"}
    released = _trim(0)
    return {"detail": "memory returned to the OS" if released else "nothing to return"}


def install_builtin_actions(config_getter: Callable[[], MemoryConfig] | None = None) -> None:
    """Register the core rungs: caches (10), gc (20), malloc_trim (30), healthy_caches (1000)
    (idempotent).

    Args:
        config_getter: ignored, kept for callers of earlier versions: each rung reads
            the configuration of the ladder that runs it (``CleanupContext.config``).
    """
    registry.register_cleanup("caches", shrink_caches, order=10)
    registry.register_cleanup("gc", _gc_action, order=20)
    registry.register_cleanup("malloc_trim", malloc_trim, order=30)
    registry.register_cleanup("healthy_caches", healthy_caches, order=HEALTHY_CACHES_ORDER, emergency_only=True)
