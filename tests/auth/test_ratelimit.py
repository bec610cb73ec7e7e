"""Unit tests of auth/ratelimit.py: one sliding window for requests (`hit`) and for failures (`blocked_for` + `record`)."""
from __future__ import annotations

from auth.ratelimit import SlidingWindow, retry_after


def window(limit: int) -> tuple[SlidingWindow, list[float]]:
    now = [1000.0]
    return SlidingWindow(limit, 60, clock=lambda: now[0]), now


async def test_hit_counts_until_the_limit_then_says_how_long_to_wait():
    w, now = window(2)
    assert await w.hit("a") == 0 and await w.hit("a") == 0
    now[0] += 10
    assert await w.hit("a") == 50  # the first hit leaves the window in 50 s
    assert await w.hit("b") == 0  # keys are counted apart
    now[0] += 50
    assert await w.hit("a") == 0  # a refused hit was not counted


async def test_blocked_for_only_asks_and_record_always_counts():
    w, now = window(2)
    assert await w.blocked_for("ann") == 0
    await w.record("ann")
    assert await w.blocked_for("ann") == 0  # asking counts nothing
    now[0] += 10
    await w.record("ann")
    assert await w.blocked_for("ann") == 50
    now[0] += 10
    await w.record("ann")  # counted although blocked
    now[0] += 40
    assert await w.blocked_for("ann") == 10  # the first left the window, two are still in it
    now[0] += 10
    assert await w.blocked_for("ann") == 0


async def test_the_same_window_serves_both_uses():
    w, _ = window(1)
    assert await w.hit("k") == 0
    assert await w.blocked_for("k") == 60
    assert await w.hit("k") == 60


def test_retry_after_is_whole_seconds_at_least_one():
    assert (retry_after(0.001), retry_after(1.0), retry_after(1.2)) == (1, 1, 2)
