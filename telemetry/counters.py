"""Counters and histograms as plain numbers, read by the Prometheus collectors (handlers/metrics.py).

Whatever counts pays an integer increment (a histogram: a bisect and two additions) and
takes no lock: everything that counts runs on the event loop's thread, and a scrape reads
the numbers on that thread too.  prometheus_client's own Counter takes a lock on every
`inc()`, a price the per-event paths do not pay.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

# Bucket bounds (upper, inclusive), in the metric's unit.
COMMIT_BATCH_WRITES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
COMMIT_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
HTTP_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LLM_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Histogram:
    """Observations counted into buckets: `counts[i]` holds those <= `bounds[i]` and above the
    bound before it; the last count holds those above every bound."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """The buckets as Prometheus has them: (`le`, observations <= le), the last one `+Inf`."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, count in zip((*map(_le, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


class RequestCounts:
    """HTTP requests by (route template, method, status), and their durations by (route, method)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.seconds: dict[tuple[str, str], Histogram] = {}

    def count(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.seconds.get((route, method))
        if hist is None:
            hist = self.seconds[(route, method)] = Histogram(HTTP_SECONDS)
        hist.observe(seconds)
