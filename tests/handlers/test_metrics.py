"""GET /metrics: scraped after real runs and parsed with prometheus_client's own text parser."""
from __future__ import annotations

import asyncio
import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from handlers.metrics import RouteTemplates
from server import VERSION, Config
from tests.agents import fake_openai as fo
from tests.agents.test_react import fake  # noqa: F401  (fixture)
from tests.helpers import ENDED, INTERNAL_KEY, wait_until

TOKEN = "metrics-token-7f3a"


@pytest.fixture
def parley_config(tmp_path, fake):  # noqa: F811
    extra = {
        "llm": {"fake": {"base_url": fake.base_url, "model": "m", "timeout_s": 10}},
        "agents": [{"id": "assistant", "name": "Assistant", "type": "react", "llm": "fake", "tools": ["clock"],
                    "instructions": "Be brief."}],
    }
    return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, metrics_token=TOKEN, demo_delay_ms=0,
                  extra=extra)


class Scrape:
    """One scrape's samples: `value(name, **labels)` (0 for a sample that is not there)."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {(s.name, frozenset(s.labels.items())): s.value
                        for f in self.families.values() for s in f.samples}

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def labels(self, name: str, label: str) -> set[str]:
        return {dict(labels)[label] for sample, labels in self.samples if sample == name}


async def scrape(http, **headers: str) -> Scrape:
    resp = await http.fetch("/metrics", headers=headers or {"Authorization": f"Bearer {TOKEN}"}, raise_error=False)
    assert resp.code == 200, (resp.code, resp.body)
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    return Scrape(resp.body.decode())


async def test_runs_events_commits_and_requests_move_by_what_happened(http_server_client, alice, parley):
    before = await scrape(http_server_client)
    assert before.value("parley_runs_started_total") == 0
    assert before.value("parley_build_info", version=VERSION, store=parley.db.dialect) == 1
    assert before.families["parley_commit_batch_size"].type == "histogram"

    first = await alice.start_ok("m1", "hello there")
    second = await alice.start_ok("m2", "/fail")
    await alice.wait_status(first, *ENDED)
    await alice.wait_status(second, *ENDED)
    missing = await alice.request("GET", "/no/such/route/123")
    assert missing.code == 404
    unknown_music = await alice.request("GET", "/music/task/no-such-task")  # one handler class serves /video and /music
    assert unknown_music.code == 404

    after = await scrape(http_server_client)
    assert after.value("parley_runs_started_total") == 2
    assert after.value("parley_runs_finished_total", status="completed", reason="") == 1
    assert after.value("parley_runs_finished_total", status="failed", reason="demo_failure") == 1
    assert after.value("parley_events_committed_total") >= 8  # each run: started, a step, text, its end
    assert after.value("parley_events_committed_total") == parley.db.events_written
    commits = after.value("parley_commit_batch_size_count")
    assert commits == parley.db.commits > before.value("parley_commit_batch_size_count")
    assert after.value("parley_commit_seconds_count") == commits
    assert after.value("parley_commit_batch_size_bucket", le="+Inf") == commits
    assert after.value("parley_commit_batch_size_sum") >= after.value("parley_events_committed_total")
    assert after.value("parley_runs_live") == 0
    assert after.value("parley_writer_backlog") >= 0

    # Requests are counted under their route template, never their path; a path no route has is "unmatched".
    assert after.value("parley_http_requests_total", route="/task", method="POST", status="201") == 2
    assert after.value("parley_http_requests_total", route="/task/{taskId}", method="GET", status="200") >= 2
    assert after.value("parley_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert after.value("parley_http_requests_total", route="/music/task/{taskId}", method="GET", status="404") == 1
    assert after.value("parley_http_requests_total", route="/metrics", method="GET", status="200") == 1
    assert after.value("parley_http_request_duration_seconds_count", route="/task", method="POST") == 2
    routes = after.labels("parley_http_requests_total", "route")
    assert not any(first in r or second in r or "no/such" in r or "no-such" in r for r in routes), routes


async def test_open_streams_live_and_parked_runs(http_server_client, alice):
    sleeper = await alice.start_ok("s1", "/sleep 30")
    stream = asyncio.ensure_future(alice.stream(sleeper))
    live = await wait_until(lambda: scrape(http_server_client),
                            lambda s: s.value("parley_streams_open", surface="native") == 1, what="an open native stream")
    assert live.value("parley_runs_live") == 1
    assert live.value("parley_streams_open", surface="jobs") == 0  # every surface that streams, from the start
    assert {"native", "app", "agent_api", "jobs"} <= live.labels("parley_streams_open", "surface")

    parked = await alice.start_ok("p1", "/approve refund order-1")
    await alice.wait_status(parked, "parked")
    assert (await alice.request("DELETE", f"/task/{sleeper}")).code == 204
    code, _ = await stream
    assert code == 200

    after = await scrape(http_server_client)
    assert after.value("parley_streams_open", surface="native") == 0
    assert after.value("parley_runs_parked") == 1
    assert after.value("parley_runs_live") == 0
    assert after.value("parley_runs_finished_total", status="cancelled", reason="cancelled") == 1
    assert after.value("parley_http_requests_total", route="/stream/{taskId}", method="GET", status="200") == 1


async def test_llm_calls_by_provider_and_outcome(http_server_client, alice, fake):  # noqa: F811
    fake.script(fo.text("Hello from the model."), fo.http_error(500))
    ok = await alice.start_ok("l1", "hi", agentId="assistant")
    assert (await alice.wait_status(ok, *ENDED))["status"] == "completed"
    failed = await alice.start_ok("l2", "hi again", agentId="assistant")
    assert (await alice.wait_status(failed, *ENDED))["status"] == "failed"

    s = await scrape(http_server_client)
    assert s.value("parley_llm_calls_total", provider="fake", outcome="ok") == 1
    assert s.value("parley_llm_calls_total", provider="fake", outcome="llm_http_error") == 1
    assert s.value("parley_llm_call_seconds_count", provider="fake") == 2
    assert s.value("parley_llm_call_seconds_bucket", provider="fake", le="+Inf") == 2
    assert s.value("parley_runs_finished_total", status="failed", reason="llm_http_error") == 1


async def test_guarded_by_the_token_or_the_internal_key(http_server_client, caplog):
    caplog.set_level(logging.DEBUG)

    async def status(**headers: str) -> int:
        resp = await http_server_client.fetch("/metrics", headers=headers, raise_error=False)
        if resp.code == 401:
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert "error" in json.loads(resp.body)
        return int(resp.code)

    assert await status() == 401
    assert await status(Authorization="Bearer wrong-token") == 401
    assert await status(Authorization=f"Basic {TOKEN}") == 401
    assert await status(Authorization=f"Bearer {TOKEN}x") == 401
    assert await status(**{"X-Internal-Key": "wrong-key"}) == 401
    assert await status(Authorization=f"Bearer {TOKEN}") == 200
    assert await status(**{"X-Internal-Key": INTERNAL_KEY}) == 200  # no X-User-Id needed: no user is acting
    assert all(TOKEN not in r.getMessage() and INTERNAL_KEY not in r.getMessage() for r in caplog.records)


class TestWithoutCredentials:
    @pytest.fixture
    def parley_config(self, tmp_path):
        return Config(data_dir=tmp_path / "data", demo_delay_ms=0)

    async def test_no_route_without_a_token_or_internal_key(self, http_server_client):
        resp = await http_server_client.fetch("/metrics", raise_error=False)
        assert resp.code == 404


class TestTokenAlone:
    @pytest.fixture
    def parley_config(self, tmp_path):
        return Config(data_dir=tmp_path / "data", demo_delay_ms=0, metrics_token=TOKEN)

    async def test_the_token_alone_opens_it(self, http_server_client):
        await scrape(http_server_client)
        resp = await http_server_client.fetch("/metrics", headers={"X-Internal-Key": ""}, raise_error=False)
        assert resp.code == 401


async def test_every_route_has_its_openapi_path_as_template(app):
    templates = RouteTemplates([(r.matcher.regex.pattern, r.target) for r in app.wildcard_router.rules]).templates
    assert {"/api/jobs/{jobId}/trace", "/api/v1/agent/runs/{threadId}/events", "/agent/rewind/{threadId}/{messageId}",
            "/video/task/{taskId}", "/music/task/{taskId}", "/metrics", "/ui/{param}"} <= templates
    assert not [t for t in templates if any(c in t for c in "()[]\\^$+?|")], templates


async def test_openmetrics_when_the_scraper_asks_for_it(http_server_client, alice):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

    await alice.wait_status(await alice.start_ok("om", "hello"), *ENDED)
    resp = await http_server_client.fetch("/metrics", headers={
        "Authorization": f"Bearer {TOKEN}",
        "Accept": "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5",  # what Prometheus sends
    })
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics_families(resp.body.decode())}
    assert families["parley_runs_started"].samples[0].value == 1
    assert families["parley_commit_seconds"].type == "histogram"
