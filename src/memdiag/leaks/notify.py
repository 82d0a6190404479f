"""Leak notifications: callbacks, log records and an optional webhook, without storms.

Each suspect has a key (its ``id``). The first time it appears, one ``new`` alert goes
out; after that only an ``update`` when its verdict changed materially: a new kind or
site (at most every 30 s), or the growth rate by 2x or the confidence by 0.2 (at most
once per ``update_interval`` per key);
when it goes away, one ``resolved``. Across all keys at most ``max_per_minute`` alerts
go out (the rest are counted as suppressed).

Every alert is a log record on logger ``memdiag.leaks`` (WARNING for ``new``, INFO
otherwise, with the payload in ``record.memdiag_leak``), a call to every callback
registered with :func:`on_leak`, and, if ``leak_webhook_url`` is set, a JSON POST made
by a background thread. Its timeout is a total deadline for the whole request (connect,
send, and reading the status line): a server that drips its answer a byte at a time is
cut off when it passes, where a per-read timeout would wait forever. Only the status line
is read; the connection is then closed. (Name resolution happens before the deadline
starts; proxies from the environment are not used: the webhook is contacted directly.)
A failing callback or webhook is counted and remembered, never raised: the service is
never harmed by its alerting.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from typing import Any

from .._logging import get_logger

__all__ = ["Notifier", "notifier", "on_leak", "remove_leak_callback"]

log = get_logger("memdiag.leaks")

SITE_CHANGE_INTERVAL = 30.0
LeakCallback = Callable[[dict[str, Any]], None]
_callbacks: list[LeakCallback] = []
_callbacks_lock = threading.Lock()


def on_leak(fn: LeakCallback) -> LeakCallback:
    """Call ``fn(alert)`` for every leak alert (usable as a decorator).

    ``alert`` is ``{"event": "new" | "update" | "resolved", "key", "time", "pid",
    "suspect": {...}}``. It runs on memdiag's monitor thread: keep it short; exceptions
    are logged at debug level and swallowed.
    """
    if not callable(fn):
        raise TypeError("on_leak needs a callable")
    with _callbacks_lock:
        if fn not in _callbacks:
            _callbacks.append(fn)
    return fn


def remove_leak_callback(fn: LeakCallback) -> None:
    """Stop calling ``fn``; unknown callbacks are ignored."""
    with _callbacks_lock:
        if fn in _callbacks:
            _callbacks.remove(fn)


def _fingerprint(s: dict[str, Any]) -> tuple[Any, ...]:
    rate = s.get("growth_bytes_per_min") or s.get("growth_per_min") or 0.0
    return (
        s.get("kind"),
        s.get("file"),
        s.get("line"),
        round(math.log2(rate)) if rate and rate > 0 else 0,
        round((s.get("confidence") or 0.0) * 5),
    )


class Notifier:
    """De-duplicates, rate-limits and delivers alerts.

    Args:
        update_interval: seconds between two ``update`` alerts of one key.
        max_per_minute: alerts per minute across all keys.
        timeout: webhook request deadline (seconds, for the whole request).
    """

    def __init__(self, update_interval: float = 300.0, max_per_minute: int = 10, timeout: float = 5.0) -> None:
        self.update_interval = update_interval
        self.max_per_minute = max_per_minute
        self.timeout = timeout
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, Any]] = {}
        self._sent_times: deque[float] = deque()
        self._queue: deque[tuple[str, bytes]] = deque(maxlen=50)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._inflight = 0
        self._failing = False  # the last post failed (logged once, until one succeeds)
        self.stats: dict[str, Any] = {
            "alerts": 0,
            "suppressed": 0,
            "callback_errors": 0,
            "webhook_sent": 0,
            "webhook_failed": 0,
            "webhook_dropped": 0,
            "webhook_last_status": None,
            "webhook_last_error": None,
        }

    def _allow(self, now: float) -> bool:
        while self._sent_times and now - self._sent_times[0] > 60.0:
            self._sent_times.popleft()
        if len(self._sent_times) >= self.max_per_minute:
            return False
        self._sent_times.append(now)
        return True

    def suspect(self, s: dict[str, Any], webhook_url: str | None) -> str | None:
        """Report the current verdict of a suspect; returns the event sent, if any."""
        key = str(s.get("id"))
        now = time.monotonic()
        fp = _fingerprint(s)
        with self._lock:
            st = self._keys.get(key)
            if st is None:
                event = "new"
            else:
                # A new kind or site is news (but not more than every SITE_CHANGE_INTERVAL);
                # a changed rate or confidence waits for update_interval.
                moved = st["fingerprint"][:3] != fp[:3]
                wait = min(self.update_interval, SITE_CHANGE_INTERVAL) if moved else self.update_interval
                if st["fingerprint"] == fp or now - st["sent"] < wait:
                    return None  # same verdict, or too soon: the existing alert stands
                event = "update"
            if not self._allow(now):
                self.stats["suppressed"] += 1
                return None
            self._keys[key] = {"fingerprint": fp, "sent": now}
        self._deliver(event, key, s, webhook_url)
        return event

    def resolved(self, s: dict[str, Any], webhook_url: str | None) -> bool:
        """A suspect went away: one ``resolved`` alert if a ``new`` one was sent."""
        key = str(s.get("id"))
        with self._lock:
            if self._keys.pop(key, None) is None:
                return False
            if not self._allow(time.monotonic()):
                self.stats["suppressed"] += 1
                return False
        self._deliver("resolved", key, s, webhook_url)
        return True

    def _deliver(self, event: str, key: str, s: dict[str, Any], webhook_url: str | None) -> None:
        alert = {"event": event, "key": key, "time": time.time(), "pid": os.getpid(), "suspect": s}
        self.stats["alerts"] += 1
        where = f" at {s['file']}:{s['line']}" if s.get("file") else ""
        rate = s.get("growth_bytes_per_min")
        speed = (
            f", {rate / 1024:.0f} KiB/min"
            if rate
            else (f", {s['growth_per_min']}/min" if s.get("growth_per_min") else "")
        )
        (log.warning if event == "new" else log.info)(
            "memory leak suspect %s: %s%s%s (confidence %.2f)",
            event,
            s.get("kind"),
            where,
            speed,
            s.get("confidence") or 0.0,
            extra={"memdiag_leak": alert},
        )
        with _callbacks_lock:
            callbacks = list(_callbacks)
        for fn in callbacks:
            try:
                fn(alert)
            except Exception as exc:
                self.stats["callback_errors"] += 1
                log.debug("leak callback %r failed: %r", fn, exc)
        if webhook_url:
            self._post(webhook_url, alert)

    # -- webhook -------------------------------------------------------------------------
    def _post(self, url: str, alert: dict[str, Any]) -> None:
        try:
            body = json.dumps(alert, default=str).encode()
        except (TypeError, ValueError) as exc:
            self.stats["webhook_last_error"] = f"cannot encode alert: {exc}"
            return
        with self._lock:
            if len(self._queue) == self._queue.maxlen:
                self.stats["webhook_dropped"] += 1
            self._queue.append((url, body))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._sender, name="memdiag-webhook", daemon=True)
                self._thread.start()
        self._wake.set()

    def _sender(self) -> None:
        while True:
            with self._lock:
                item = self._queue.popleft() if self._queue else None
                self._inflight = 1 if item is not None else 0
            if item is None:
                self._wake.clear()
                if not self._wake.wait(30.0):
                    with self._lock:
                        if not self._queue:
                            self._thread = None
                            return
                continue
            url, body = item
            error = None
            try:
                status = post_json(url, body, self.timeout)
                self.stats["webhook_last_status"] = status
                if 200 <= status < 400:
                    self.stats["webhook_sent"] += 1
                else:
                    error = f"HTTP {status}"
            except Exception as exc:  # refused, deadline, DNS, TLS: never the service's problem
                error = f"{type(exc).__name__}: {exc}".replace(url, "***")[:200]
            finally:
                self._outcome(error)
                with self._lock:
                    self._inflight = 0

    def _outcome(self, error: str | None) -> None:
        """Count a webhook post's outcome; a failing webhook is logged once (WARNING) until
        it answers again (INFO), never once per alert. The URL is a secret: never logged."""
        if error is None:
            if self._failing:
                self._failing = False
                log.info("leak webhook answers again")
            return
        self.stats["webhook_failed"] += 1
        self.stats["webhook_last_error"] = error
        if not self._failing:
            self._failing = True
            log.warning("leak webhook failed (%s); further failures are counted in webhook_failed", error)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until queued webhook posts are sent (tests, shutdown); True if drained."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if not self._queue and not self._inflight:
                    return True
            time.sleep(0.02)
        return False

    def report(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self.stats,
                "active_keys": sorted(self._keys),
                "queued": len(self._queue),
                "update_interval_seconds": self.update_interval,
                "max_per_minute": self.max_per_minute,
            }

    def reset(self) -> None:
        """Forget which keys were alerted (a new process after fork, or tests)."""
        with self._lock:
            self._keys.clear()
            self._sent_times.clear()
            self._queue.clear()
            self._thread = None
            self._failing = False


def post_json(url: str, body: bytes, timeout: float) -> int:
    """POST ``body`` as JSON to an http(s) ``url``; the response's status code.

    ``timeout`` is one deadline for connecting, sending and reading the status line, each
    step getting only what is left of it.

    Raises:
        TimeoutError: the deadline passed ("webhook deadline of Ns passed").
        OSError, ssl.SSLError, ValueError: refused, TLS failure, not an http(s) URL, a
            malformed answer.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {parts.scheme}://...")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    deadline = time.monotonic() + timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"webhook deadline of {timeout:g}s passed")
        return remaining

    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"User-Agent: memdiag-leaks\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    try:
        sock: socket.socket = socket.create_connection((parts.hostname, port), timeout=left())
    except TimeoutError:
        raise TimeoutError(f"webhook deadline of {timeout:g}s passed") from None
    try:
        if parts.scheme == "https":
            import ssl  # on first https delivery only: ~1.6 MB a monitor would hold for nothing

            sock.settimeout(left())
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        sock.settimeout(left())
        sock.sendall(head + body)
        buf = b""
        while b"\n" not in buf:
            if len(buf) > 8192:
                raise ValueError("no HTTP status line in the first 8 KiB")
            sock.settimeout(left())
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                raise TimeoutError(f"webhook deadline of {timeout:g}s passed") from None
            if not chunk:
                raise ConnectionError("the webhook closed the connection before answering")
            buf += chunk
        fields = buf.split(b"\n", 1)[0].split()
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
            raise ValueError("malformed HTTP status line")
        return int(fields[1])
    finally:
        sock.close()


_notifier = Notifier()


def notifier() -> Notifier:
    """The process's :class:`Notifier`."""
    return _notifier


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _notifier.__init__())  # type: ignore[misc]
