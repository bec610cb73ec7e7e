"""Sliding-window rate limits: hits per key (a user, an address, an email) in the last `window_s` seconds."""
from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class SlidingWindow:
    """At most `limit` hits per `window_s` seconds per key.

    `hit` asks and counts in one step (a request that is let through counts).  `blocked_for`
    and `record` do the same in two, for limits that count only some outcomes (failed logins:
    ask before checking the password, record only when it was wrong).
    """

    def __init__(self, limit: int, window_s: float = 60.0, clock: Callable[[], float] | None = None) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}
        self._clock = clock or time.monotonic
        self._last_sweep = 0.0

    def hit(self, key: str) -> float:
        """Count a hit; 0 when allowed, else the seconds until one is allowed again (and nothing is counted)."""
        now = self._clock()
        wait = self._wait(key, now)
        if not wait:
            self._add(key, now)
        return wait

    def blocked_for(self, key: str) -> float:
        """0 when `key` may have one more hit now, else the seconds until it may; counts nothing."""
        return self._wait(key, self._clock())

    def record(self, key: str) -> None:
        """Count a hit of `key` whether or not the limit is reached."""
        self._add(key, self._clock())

    def _wait(self, key: str, now: float) -> float:
        hits = self._hits.get(key)
        if hits is None:
            return 0.0
        self._drop_old(hits, now)
        if not hits:  # asking leaves no trace of a key without hits
            del self._hits[key]
        elif len(hits) >= self.limit:
            return max(0.001, hits[0] + self.window_s - now)
        return 0.0

    def _add(self, key: str, now: float) -> None:
        hits = self._hits.setdefault(key, deque())
        self._drop_old(hits, now)
        hits.append(now)
        if now - self._last_sweep > self.window_s:
            self._sweep(now)

    def _drop_old(self, hits: deque[float], now: float) -> None:
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()

    def _sweep(self, now: float) -> None:
        """Forget keys without a hit in the window, so that one-off keys do not pile up."""
        self._last_sweep = now
        for key in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window_s]:
            del self._hits[key]


def retry_after(seconds: float) -> int:
    """A Retry-After value: whole seconds, at least 1."""
    return max(1, math.ceil(seconds))
