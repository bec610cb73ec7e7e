"""Sliding-window rate limits: hits per key (a user, an address, an email) in the last `window_s` seconds.

Two kinds behind one interface (`RateLimit`, awaited alike): `SlidingWindow` counts in this
process's memory, at no cost, for the store of one process; `StoredWindow` counts in the store
(store/limits.py), so that instances sharing it allow together no more than one would (SPEC
section 14).  `Windows` makes the right kind for the store.
"""
from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from store import Store
from store import limits as limits_sql


class RateLimit(Protocol):
    """At most `limit` hits per `window_s` seconds per key.

    `hit` asks and counts in one step (a request that is let through counts).  `blocked_for`
    and `record` do the same in two, for limits that count only some outcomes (failed logins:
    ask before checking the password, record only when it was wrong).
    """

    limit: int
    window_s: float

    async def hit(self, key: str) -> float:
        """Count a hit; 0 when allowed, else the seconds until one is allowed again (and nothing is counted)."""
        ...

    async def blocked_for(self, key: str) -> float:
        """0 when `key` may have one more hit now, else the seconds until it may; counts nothing."""
        ...

    async def record(self, key: str) -> None:
        """Count a hit of `key` whether or not the limit is reached."""
        ...


class SlidingWindow:
    """A `RateLimit` counted in this process's memory."""

    def __init__(self, limit: int, window_s: float = 60.0, clock: Callable[[], float] | None = None) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}
        self._clock = clock or time.monotonic
        self._last_sweep = 0.0

    async def hit(self, key: str) -> float:
        now = self._clock()
        wait = self._wait(key, now)
        if not wait:
            self._add(key, now)
        return wait

    async def blocked_for(self, key: str) -> float:
        return self._wait(key, self._clock())

    async def record(self, key: str) -> None:
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


class StoredWindow:
    """A `RateLimit` counted in the store, under `name`: every instance sharing the store counts alike.

    A hit is one round trip (store/limits.py).  The clock is the wall clock (epoch), which
    instances on several hosts share closely enough for windows of seconds.
    """

    def __init__(self, db: Store, name: str, limit: int, window_s: float = 60.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.db = db
        self.name = name
        self.limit = limit
        self.window_s = window_s
        self._window_ms = max(1, round(window_s * 1000))
        self._clock = clock or time.time
        self._last_sweep = 0

    def _now(self) -> int:
        return int(self._clock() * 1000)

    def _key(self, key: str) -> str:
        return f"{self.name}:{key}"

    async def hit(self, key: str) -> float:
        now = self._now()
        wait = await limits_sql.hit(self.db, self._key(key), self.limit, self._window_ms, now)
        await self._sweep(now)
        return wait / 1000

    async def blocked_for(self, key: str) -> float:
        return await limits_sql.blocked_for(self.db, self._key(key), self.limit, self._window_ms, self._now()) / 1000

    async def record(self, key: str) -> None:
        now = self._now()
        await limits_sql.record(self.db, self._key(key), self.limit, self._window_ms, now)
        await self._sweep(now)

    async def _sweep(self, now: int) -> None:
        """Once a window, forget the keys without a hit in theirs, so that one-off keys do not pile up."""
        if now - self._last_sweep > self._window_ms:
            self._last_sweep = now
            await limits_sql.sweep(self.db, now)


class Windows:
    """Makes a server's rate limits: in memory for a store of one process, in the store when
    instances share it (`db.shared`).  `Windows()` makes them in memory."""

    def __init__(self, db: Store | None = None) -> None:
        self.db = db if db is not None and db.shared else None

    def window(self, name: str, limit: int, window_s: float = 60.0) -> RateLimit:
        """At most `limit` hits per `window_s` per key; `name` tells this limit's keys from others' in the store."""
        if self.db is None:
            return SlidingWindow(limit, window_s)
        return StoredWindow(self.db, name, limit, window_s)


IN_MEMORY = Windows()


def retry_after(seconds: float) -> int:
    """A Retry-After value: whole seconds, at least 1."""
    return max(1, math.ceil(seconds))
