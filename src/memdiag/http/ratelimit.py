"""A small per-client token bucket for the API's acting endpoints."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

__all__ = ["TokenBucket"]


class TokenBucket:
    """Allow ``burst`` requests at once per client, refilled at ``rate`` per second.

    Buckets are kept for at most ``max_clients`` clients (least recently seen are
    forgotten first), so a flood of distinct addresses cannot grow memory.

    Args:
        rate: tokens added per second.
        burst: the bucket's size (requests allowed back to back).
        max_clients: how many clients are remembered.
    """

    def __init__(self, rate: float = 5.0, burst: int = 20, max_clients: int = 1024) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = int(burst)
        self.max_clients = int(max_clients)
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """Take one token for ``key``: 0.0 if allowed, else the seconds until one is free."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait
