"""Sliding-window rate limits (per user, per route family)."""
from __future__ import annotations

import math
import time
from collections import deque


class SlidingWindow:
    """At most `limit` hits per `window_s` seconds per key."""

    def __init__(self, limit: int, window_s: float = 60.0, clock: object = None) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}
        self._clock = clock or time.monotonic
        self._last_sweep = 0.0

    def hit(self, key: str) -> float:
        """Count a hit; 0 when allowed, else the seconds until one is allowed again."""
        now = self._clock()  # type: ignore[operator]
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return max(0.001, hits[0] + self.window_s - now)
        hits.append(now)
        if now - self._last_sweep > self.window_s:
            self._sweep(now)
        return 0.0

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        for key in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window_s]:
            del self._hits[key]


def retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))
