"""GET /metrics: the Prometheus text format, made by prometheus_client from what Parley counts anyway.

One collector reads, at each scrape, the numbers the server keeps as plain ints and bucket
arrays (telemetry/counters.py): the run manager's starts and ends, its live runs, the
store's count of parked runs, the writer's commits and backlog, the open streams by
surface, the requests by route template, the LLM providers' calls.  Nothing on a request's
or an event's path touches prometheus_client.  The registry is the application's own, not
the library's global one, so that many servers in one process (the tests) each say their own.

Guarded: `Authorization: Bearer <--metrics-token>` or the internal key (`X-Internal-Key`,
no user needed), compared in constant time; anything else is 401.  With neither configured
the route does not exist (404): no credential could ever be accepted, so there is nothing to ask for.
"""
from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from tornado import web

from agents.llm import LLMProvider
from auth import Authenticator, bearer_token
from handlers.base import APIHandler, NotFoundHandler
from handlers.errors import ApiError
from handlers.openapi import openapi_path
from handlers.streaming import StreamSlots
from runs.manager import RunManager
from store import Store
from telemetry.counters import Histogram, RequestCounts

UNMATCHED = "unmatched"  # the route of a request no route matched (its path is never a label)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RouteTemplates:
    """The route template of a handled request, as /openapi.json names it: its handler's route (the
    one of several that matched its path); `unmatched` for the routes' 404."""

    def __init__(self, routes: Iterable[Any]) -> None:
        self._by_handler: dict[type, list[tuple[re.Pattern[str], str]]] = {}
        for route in routes:
            pattern, handler = route[0], route[1]
            regex = re.compile(pattern if pattern.endswith("$") else pattern + "$")
            self._by_handler.setdefault(handler, []).append((regex, openapi_path(pattern)))

    @property
    def templates(self) -> set[str]:
        return {template for rules in self._by_handler.values() for _, template in rules}

    def of(self, handler: web.RequestHandler) -> str:
        candidates = self._by_handler.get(type(handler))
        if not candidates or isinstance(handler, NotFoundHandler):
            return UNMATCHED
        if len(candidates) == 1:
            return candidates[0][1]
        path = handler.request.path
        return next((template for regex, template in candidates if regex.match(path)), candidates[0][1])


def method_label(method: str | None) -> str:
    """The request's method, or `other`: a client may send any token as a method, and labels must stay few."""
    return method if method in _METHODS else "other"


@dataclass
class MetricSources:
    """What the collector reads: the parts of the server that keep the numbers."""

    runs: RunManager
    store: Store
    streams: StreamSlots
    requests: RequestCounts
    providers: Mapping[str, LLMProvider]
    version: str


class ParleyCollector(Collector):
    """Every metric of /metrics (the README lists them), read from `MetricSources` at each scrape."""

    def __init__(self, sources: MetricSources) -> None:
        self.sources = sources
        self.parked = 0  # the store's count of parked runs, read by `refresh` before a scrape

    async def refresh(self) -> None:
        """Read what only the store knows (parked runs belong to no instance)."""
        self.parked = await self.sources.runs.parked_count()

    def collect(self) -> Iterator[Metric]:
        yield from self._runs()
        yield from self._store()
        yield from self._http()
        yield from self._llm()
        info = GaugeMetricFamily("parley_build_info", "Parley's version and store (always 1)", labels=["version", "store"])
        info.add_metric([self.sources.version, self.sources.store.dialect], 1)
        yield info

    def _runs(self) -> Iterator[Metric]:
        runs = self.sources.runs
        yield CounterMetricFamily("parley_runs_started", "Runs started on this instance", value=runs.runs_started)
        finished = CounterMetricFamily("parley_runs_finished", "Runs ended by this instance, by status and reason "
                                       "(reason empty for completed runs)", labels=["status", "reason"])
        for (status, reason), count in sorted(runs.runs_finished.items()):
            finished.add_metric([status, reason], count)
        yield finished
        yield GaugeMetricFamily("parley_runs_live", "Runs executing on this instance", value=runs.live_runs)
        yield GaugeMetricFamily("parley_runs_parked", "Runs parked waiting for a signal (all of the store's)",
                                value=self.parked)
        streams = GaugeMetricFamily("parley_streams_open", "Open SSE streams by API surface", labels=["surface"])
        for surface, count in sorted(self.sources.streams.by_surface.items()):
            streams.add_metric([surface], count)
        yield streams

    def _store(self) -> Iterator[Metric]:
        store = self.sources.store
        yield CounterMetricFamily("parley_events_committed", "Events committed by this instance's writer",
                                  value=store.events_written)
        yield _histogram("parley_commit_batch_size", "Writes (events and write jobs) per group commit", store.commit_sizes)
        yield _histogram("parley_commit_seconds", "Latency of a group commit, fsync included", store.commit_seconds)
        yield GaugeMetricFamily("parley_writer_backlog", "Writes queued for the next group commit", value=store.backlog)

    def _http(self) -> Iterator[Metric]:
        counts = self.sources.requests
        requests = CounterMetricFamily("parley_http_requests", "HTTP requests by route template, method and status",
                                       labels=["route", "method", "status"])
        for (route, method, status), count in sorted(counts.requests.items()):
            requests.add_metric([route, method, str(status)], count)
        yield requests
        durations = HistogramMetricFamily("parley_http_request_duration_seconds", "HTTP request durations "
                                          "(a stream's: until it ends)", labels=["route", "method"])
        for (route, method), hist in sorted(counts.seconds.items()):
            durations.add_metric([route, method], hist.cumulative(), hist.sum)
        yield durations

    def _llm(self) -> Iterator[Metric]:
        calls = CounterMetricFamily("parley_llm_calls", "Model calls by provider and outcome (ok, cancelled, "
                                    "or the failure's reason)", labels=["provider", "outcome"])
        seconds = HistogramMetricFamily("parley_llm_call_seconds", "Model call durations, to the end of the stream",
                                        labels=["provider"])
        for name, provider in sorted(self.sources.providers.items()):
            for outcome, count in sorted(provider.calls.items()):
                calls.add_metric([name, outcome], count)
            seconds.add_metric([name], provider.call_seconds.cumulative(), provider.call_seconds.sum)
        yield calls
        yield seconds


def _histogram(name: str, documentation: str, hist: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, buckets=hist.cumulative(), sum_value=hist.sum)


class Metrics:
    """The application's registry and its one collector."""

    def __init__(self, sources: MetricSources) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = ParleyCollector(sources)
        self.registry.register(self.collector)

    async def exposition(self, accept: str) -> tuple[bytes, str]:
        """The scrape's body and content type (the text format, or OpenMetrics when `accept` asks for it)."""
        await self.collector.refresh()
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class MetricsHandler(APIHandler):
    auth = "none"

    @property
    def metrics(self) -> Metrics:
        return cast(Metrics, self.settings["metrics"])

    def authorized(self) -> bool:
        """A Bearer token equal to --metrics-token, or the internal key (constant-time comparisons)."""
        token: str | None = self.settings.get("metrics_token")
        given = bearer_token(self.request.headers.get("Authorization", ""))
        if token and given is not None and hmac.compare_digest(given.encode(), token.encode()):
            return True
        key = self.request.headers.get("X-Internal-Key")
        return key is not None and cast(Authenticator, self.settings["auth"]).internal_key_matches(key)

    async def get(self) -> None:
        if not self.authorized():
            raise ApiError(401, "a metrics token (Authorization: Bearer) or the internal key (X-Internal-Key) "
                           "is required", "UNAUTHORIZED")
        body, content_type = await self.metrics.exposition(self.request.headers.get("Accept", ""))
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="metrics"')
        super().write_error(status_code, **kwargs)


default_handlers = [(r"/metrics", MetricsHandler)]
