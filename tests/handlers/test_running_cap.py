"""At most `max_running` runs of a user going at once (SPEC 13: a plan setting, default 10; parked
runs do not count): 429 TOO_MANY_RUNNING with Retry-After on every surface that starts runs."""
from __future__ import annotations

import asyncio
import copy

import pytest

from config import check_file
from runs.plans import FREE
from server import Config
from tests.helpers import INTERNAL_KEY, Client, body


@pytest.fixture
def plans_extra(request):
    return getattr(request, "param", {})


@pytest.fixture
def parley_config(tmp_path, plans_extra):
    return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=0,
                  extra=copy.deepcopy(plans_extra))


def with_config(extra):
    return pytest.mark.parametrize("plans_extra", [extra], indirect=True, ids=["config"])


async def fill(client, n, prefix="t-run"):
    """`n` sleeping runs on `n` threads: their task ids."""
    return [await client.start_ok(f"{prefix}-{i}", "/sleep 30") for i in range(n)]


def assert_too_many(resp):
    assert resp.code == 429, (resp.code, resp.body)
    assert resp.headers["Retry-After"] == "5"


async def test_the_11th_running_run_is_429_until_one_ends(alice, bob):
    assert FREE.max_running == 10
    live = await fill(alice, 10)
    refused = await alice.start("t-run-10", "/sleep 30")
    assert_too_many(refused)
    assert set(body(refused)) == {"error", "retry_after"} and "at most 10 run(s) may run at once" in body(refused)["error"]
    assert body(await alice.request("GET", "/thread/t-run-10/current-task")) == {"task": None}  # nothing stored
    assert (await bob.start("t-bob", "/sleep 30")).code == 201  # per user
    assert (await alice.request("DELETE", f"/task/{live[0]}")).code == 204
    assert (await alice.start("t-run-10", "/sleep 30")).code == 201
    assert_too_many(await alice.start("t-run-11", "/sleep 30"))


async def test_a_busy_thread_is_still_409_at_the_limit(alice):
    live = await fill(alice, 10)
    busy = await alice.start("t-run-3", "again")
    assert busy.code == 409 and body(busy) == {"taskId": live[3], "reason": "running"}


async def test_parked_runs_do_not_count(alice):
    parked = [await alice.start_ok(f"t-park-{i}", "/approve ship it") for i in range(3)]
    for task_id in parked:
        await alice.wait_status(task_id, "parked", timeout=5.0)
    await fill(alice, 10)
    assert_too_many(await alice.start("t-one-more", "/sleep 30"))



async def test_a_signal_that_would_wake_one_run_too_many_is_429_and_not_taken(alice):
    """A woken run runs again, so it counts like a start: parking runs and waking them all at
    once must not pass the bound.  The refused signal is not taken; sent again later, it wakes."""
    parked = await alice.start_ok("t-park", "/approve ship it")
    await alice.wait_status(parked, "parked", timeout=5.0)
    live = await fill(alice, 10)
    key = (await alice.task(parked))["parked"]["correlationKey"]
    signal = {"correlation_key": key, "payload": {"approved": True}}
    refused = await alice.request("POST", f"/api/jobs/{parked}/signal", signal)
    assert_too_many(refused)
    assert body(refused)["error"]["code"] == "TOO_MANY_RUNNING"
    assert (await alice.task(parked))["status"] == "parked"
    assert (await alice.request("DELETE", f"/task/{live[0]}")).code == 204
    resp = await alice.request("POST", f"/api/jobs/{parked}/signal", signal)
    assert resp.code == 200
    assert (await alice.wait_status(parked, "completed", timeout=5.0))["status"] == "completed"


async def test_30_concurrent_starts_start_exactly_10(alice):
    codes = await asyncio.gather(*(alice.start(f"t-crowd-{i}", "/sleep 30") for i in range(30)))
    assert sorted(r.code for r in codes) == [201] * 10 + [429] * 20


async def test_429_on_every_surface(parley, alice, http_server_client):
    await fill(alice, 10)
    jobs = await alice.request("POST", "/api/runs", {"workflow_id": "w", "input": {"message": "hi"}})
    assert_too_many(jobs)
    assert body(jobs)["error"] == {
        "code": "TOO_MANY_RUNNING", "message": body(jobs)["error"]["message"],
        "details": {"plan": "free", "maxRunning": 10, "retry_after": 5},
    }
    v1 = await alice.request("POST", "/api/v1/agent/runs", {
        "threadId": "t-v1", "runId": "r1", "state": {}, "tools": [], "context": [], "forwardedProps": {},
        "messages": [{"id": "u1", "role": "user", "content": "hi"}]})
    assert_too_many(v1)
    assert "detail" in body(v1)
    app = await alice.request("POST", "/agent/task", {"threadId": "t-app", "content": "hi"})
    assert_too_many(app)
    assert "message" in body(app)
    streaming = await alice.request("POST", "/agent/streaming", {
        "id": "t-chat", "trigger": "submit-message",
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]})
    assert_too_many(streaming)
    video = await alice.request("POST", "/video/initialize", {"prompt": "waves"})
    assert_too_many(video)
    jwt_alice = Client(http_server_client, token=parley.auth.issue_jwt("alice"))
    chats = await jwt_alice.request("POST", "/api/v1/agent-chats", {"message": "hi"})
    assert_too_many(chats)
    assert body(chats)["code"] == "TOO_MANY_RUNNING" and chats.headers["Content-Type"] == "application/problem+json"


async def test_a_replay_is_a_start_too(alice):
    done = await alice.start_ok("t-replayed", "hello")
    await alice.wait_status(done, "completed", timeout=5.0)
    await fill(alice, 10)
    resp = await alice.request("POST", f"/api/jobs/{done}/replay")
    assert_too_many(resp)
    assert body(resp)["error"]["code"] == "TOO_MANY_RUNNING"


@with_config({"plans": {"default": "tight", "tight": {"max_running": 2}, "pro": {"max_running": 0}}})
async def test_the_limit_is_a_plan_setting(parley, alice, bob):
    await fill(alice, 2)
    assert_too_many(await alice.start("t-run-2", "/sleep 30"))
    await parley.runs.plans.set_plan("bob", "pro", "test")  # 0: no limit
    await fill(bob, 12, "t-bob")


@pytest.mark.parametrize("value", [-1, "10", 1.5, True])
def test_max_running_must_be_a_whole_number(value):
    problems = check_file({"plans": {"pro": {"max_running": value}}})[1]
    assert len(problems) == 1 and problems[0].startswith("[plans.pro] max_running: expected an integer, at least 0"), problems
