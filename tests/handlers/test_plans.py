"""Plans and credits (SPEC section 10): run limits per day, agents per plan, credits for tools,
the retry of a run that failed for insufficient credits, and GET /user/profile."""
from __future__ import annotations

import asyncio
import copy

import pytest

from config import check_file
from runs import plans as plans_module
from runs.plans import DEFAULT_PRICES, FREE, PlanConfig
from server import Config, Parley
from store import accounts as accounts_sql
from store import plans as plans_sql
from tests.handlers.mcp.test_server import mcp_session
from tests.helpers import ENDED, INTERNAL_KEY, Client, body


@pytest.fixture
def plans_extra(request):
    """The config file's tables for one test: `@with_config({...})`."""
    return getattr(request, "param", {})


@pytest.fixture
def parley_config(tmp_path, plans_extra):
    return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=0,
                  extra=copy.deepcopy(plans_extra))


def with_config(extra):
    def mark(test):
        test = pytest.mark.parametrize("plans_extra", [extra], indirect=True, ids=["config"])(test)
        return pytest.mark.usefixtures("plans_extra")(test)
    return mark


def jwt_client(parley, http, user):
    return Client(http, token=parley.auth.issue_jwt(user))


async def profile(client):
    resp = await client.request("GET", "/user/profile")
    assert resp.code == 200, resp.body
    return body(resp)


async def ledger(parley, user):
    return await parley.db.read(lambda c: plans_sql.ledger(c, user))


LIMITED = {"plans": {"default": "basic", "basic": {"runs_per_day": 2, "credits": 5}}}
ONE_AGENT = {"plans": {"default": "basic", "basic": {"agents": ["helper"]}},
             "agents": [{"id": "helper", "type": "demo", "name": "Helper"}]}


# -- the default config -----------------------------------------------------------

async def test_without_plans_config_everyone_is_on_free_with_100_credits(parley, alice, http_server_client):
    assert parley.runs.plans.config == PlanConfig()
    assert FREE.runs_per_day == 0 and FREE.agents == ("*",) and FREE.credits == 100 and FREE.max_running == 10
    assert DEFAULT_PRICES == {"generate_image": 1, "generate_music": 3, "generate_video": 5}
    for n in range(12):  # no limit per day (one at a time: at most 10 may run at once)
        await alice.wait_status(await alice.start_ok(f"t-free-{n}"), *ENDED)
    me = await profile(alice)
    assert me == {"id": "alice", "plan": "free", "credits": 100, "runsToday": 12, "runsPerDay": None}
    resp = await alice.request("POST", "/api/runs", {"workflow_id": "w", "input": {"message": "hi"}})
    assert resp.code == 201


# -- runs per day -----------------------------------------------------------------------

@with_config(LIMITED)
async def test_runs_per_day_on_the_native_surface(alice, bob):
    await alice.start_ok("t-lim-1")
    await alice.start_ok("t-lim-2")
    refused = await alice.start("t-lim-3")
    assert refused.code == 403
    assert set(body(refused)) == {"error"}
    assert "basic plan allows 2 run(s) a day" in body(refused)["error"]
    assert (await bob.start("t-lim-bob")).code == 201  # per user
    assert (await profile(alice))["runsToday"] == 2


@with_config(LIMITED)
async def test_runs_per_day_on_the_job_surface(alice):
    for n in range(2):
        resp = await alice.request("POST", "/api/runs", {"workflow_id": "w", "input": {"message": f"hi {n}"}})
        assert resp.code == 201
    resp = await alice.request("POST", "/api/runs", {"workflow_id": "w", "input": {"message": "one more"}})
    assert resp.code == 403
    err = body(resp)["error"]
    assert set(err) == {"code", "message", "details"}
    assert err["code"] == "PLAN_LIMIT" and "a day" in err["message"]
    assert err["details"] == {"plan": "basic", "runsPerDay": 2, "runsToday": 2}


@with_config(LIMITED)
async def test_the_count_restarts_at_utc_midnight(alice, monkeypatch):
    await alice.start_ok("t-day-1")
    await alice.start_ok("t-day-2")
    assert (await alice.start("t-day-3")).code == 403
    real = plans_module.now_ms
    monkeypatch.setattr(plans_module, "now_ms", lambda: real() + plans_sql.DAY_MS)
    await alice.start_ok("t-day-3")
    assert plans_sql.day_start(plans_sql.DAY_MS * 3 + 5) == plans_sql.DAY_MS * 3


@with_config(LIMITED)
async def test_agent_chats_refusal_names_the_plan(parley, alice, http_server_client):
    jwt_alice = jwt_client(parley, http_server_client, "alice")
    await alice.start_ok("t-chat-1")
    await alice.start_ok("t-chat-2")
    resp = await jwt_alice.request("POST", "/api/v1/agent-chats", {"message": "hi"})
    assert resp.code == 403 and body(resp)["code"] == "PLAN_LIMIT"
    assert resp.headers["Content-Type"] == "application/problem+json"


@with_config({"plans": {"default": "basic", "basic": {"runs_per_day": 5}}})
async def test_100_concurrent_starts_with_5_a_day_start_exactly_5(alice):
    codes = await asyncio.gather(*(alice.start(f"t-many-{n}") for n in range(100)))
    assert sorted(r.code for r in codes) == [201] * 5 + [403] * 95
    assert (await profile(alice))["runsToday"] == 5


# -- agents per plan -------------------------------------------------------------------

@with_config(ONE_AGENT)
async def test_an_agent_outside_the_plan_is_403_on_every_surface(alice):
    refused = await alice.start("t-agent-1", agentId="demo")
    assert refused.code == 403 and "does not include the agent 'demo'" in body(refused)["error"]
    assert (await alice.start("t-agent-1", agentId="helper")).code == 201
    resp = await alice.request("POST", "/api/runs", {"workflow_id": "w", "input": {"agent_id": "demo", "message": "hi"}})
    assert resp.code == 403
    assert body(resp)["error"]["code"] == "PLAN_LIMIT"
    assert body(resp)["error"]["details"] == {"plan": "basic", "agentId": "demo"}
    assert (await alice.start("t-agent-2", agentId="no-such-agent")).code == 422  # 422 before 403


# -- order of checks -------------------------------------------------------------------------

@with_config({"plans": {"default": "basic", "basic": {"runs_per_day": 1}}})
async def test_plan_refusal_comes_before_409_and_after_422(alice, bob):
    live = await alice.start_ok("t-order", "/sleep 5")
    busy = await alice.start("t-order")  # the thread runs AND the day's run is used: 403, no live taskId
    assert busy.code == 403 and live not in busy.body.decode()
    assert (await bob.start("t-order")).code == 403  # another user's thread
    bad = await alice.request("POST", "/task", {"threadId": "t-order", "content": ""})
    assert bad.code == 422
    assert (await alice.request("POST", "/task", raw=b"{not json")).code == 400
    await alice.request("DELETE", f"/task/{live}")


async def test_with_runs_left_a_busy_thread_is_still_409(alice):
    live = await alice.start_ok("t-409", "/sleep 5")
    busy = await alice.start("t-409")
    assert busy.code == 409 and body(busy) == {"taskId": live, "reason": "running"}
    await alice.request("DELETE", f"/task/{live}")


# -- /user/profile ------------------------------------------------------------------------------

@with_config({"plans": {"default": "basic", "basic": {"runs_per_day": 3, "credits": 7}, "pro": {"credits": 1000}}})
async def test_profile_shapes(parley, http_server_client):
    jwt_kira = jwt_client(parley, http_server_client, "kira-user-1")
    assert await profile(jwt_kira) == {"id": "kira-user-1", "plan": "basic", "credits": 7, "runsToday": 0, "runsPerDay": 3}
    await parley.db.write(lambda tx: accounts_sql.insert_user(tx, {
        "id": "local-1", "email": "ann@example.com", "username": "ann", "password_hash": "x"}))
    ann = jwt_client(parley, http_server_client, "local-1")
    await parley.runs.plans.set_plan("local-1", "pro", "test")
    await ann.start_ok("t-ann")
    assert await profile(ann) == {"id": "local-1", "email": "ann@example.com", "username": "ann", "plan": "pro",
                                  "credits": 1000, "runsToday": 1, "runsPerDay": None}
    resp = await Client(http_server_client, token="garbage").request("GET", "/user/profile")
    assert resp.code == 401 and set(body(resp)) == {"message"}


# -- credits ---------------------------------------------------------------------------------------

async def test_image_debits_one_credit_and_the_ledger_says_so(parley, alice):
    task_id = await alice.start_ok("t-img", "/image a cat")
    assert (await alice.wait_status(task_id, *ENDED))["status"] == "completed"
    assert (await profile(alice))["credits"] == 99
    rows = await ledger(parley, "alice")
    assert [(r["reason"], r["delta"], r["balance"]) for r in rows] == [("tool:generate_image", -1, 99), ("initial", 100, 100)]
    assert rows[0]["task_id"] == task_id and rows[0]["actor"] == "run"


async def test_a_failing_paid_tool_is_refunded(parley, alice):
    task_id = await alice.start_ok("t-refund", "/tool generate_image")  # an empty prompt: the tool fails
    assert (await alice.wait_status(task_id, *ENDED))["status"] == "completed"
    assert (await profile(alice))["credits"] == 100
    reasons = [r["reason"] for r in await ledger(parley, "alice")]
    assert reasons == ["refund:generate_image", "tool:generate_image", "initial"]


@with_config({"plans": {"free": {"credits": 0}}, "credits": {"generate_image": 2}})
async def test_without_credits_the_run_fails_insufficient_credits(parley, alice):
    task_id = await alice.start_ok("t-broke", "/image a cat")
    task = await alice.wait_status(task_id, *ENDED)
    assert task["status"] == "failed"
    assert task["error"]["reason"] == "insufficient_credits"
    assert "generate_image costs 2 credits and the balance is 0" in task["error"]["message"]
    code, frames = await alice.stream(task_id)
    assert code == 200 and frames[-1].event == "error" and "credits" in frames[-1].data
    chunks = [c for f in frames if f.id is not None and f.event is None for c in f.chunks]
    assert any(c["type"] == "tool-output-error" for c in chunks)
    assert not any(c["type"] == "file" for c in chunks)
    assert (await profile(alice))["credits"] == 0
    assert (await alice.wait_status(await alice.start_ok("t-broke-2", "still here?"), *ENDED))["status"] == "completed"


@with_config({"plans": {"free": {"credits": 0}}})
async def test_video_submit_retries_once_the_balance_allows(parley, alice, bob, http_server_client):
    jwt_alice = jwt_client(parley, http_server_client, "alice")
    failed_id = await alice.start_ok("t-retry", "/image a red fox")
    assert (await alice.wait_status(failed_id, *ENDED))["status"] == "failed"

    low = await jwt_alice.request("POST", f"/video/submit/{failed_id}", {})
    assert low.code == 400 and "balance is 0" in body(low)["error"]  # the native surface's shape
    assert (await jwt_client(parley, http_server_client, "bob").request("POST", f"/video/submit/{failed_id}", {})).code == 403
    assert (await jwt_alice.request("POST", "/video/submit/no-such-task", {})).code == 404
    assert (await alice.request("POST", f"/video/submit/{failed_id}", {})).code == 401  # JWT only

    await parley.runs.plans.grant("alice", 1, "test")
    ok = await jwt_alice.request("POST", f"/video/submit/{failed_id}", {})
    assert ok.code == 200, ok.body
    assert body(ok)["success"] is True
    new_id = body(ok)["taskId"]
    task = await alice.wait_status(new_id, *ENDED)
    assert task["status"] == "completed" and task["threadId"] == "t-retry"
    assert task["userMessage"]["parts"] == [{"type": "text", "text": "/image a red fox"}]
    _, frames = await alice.stream(new_id)
    assert any(c["type"] == "file" for f in frames if f.id is not None and f.event is None for c in f.chunks)
    assert (await profile(alice))["credits"] == 0
    messages = body(await alice.request("GET", "/messages/t-retry"))["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "assistant"]  # the failed reply, then the new one

    again = await jwt_alice.request("POST", f"/video/submit/{failed_id}", {})
    assert again.code == 400 and "already retried" in body(again)["error"]
    done = await jwt_alice.request("POST", f"/video/submit/{new_id}", {})
    assert done.code == 400 and "not retryable" in body(done)["error"]


@with_config({"plans": {"free": {"credits": 0}}})
async def test_video_submit_while_the_thread_runs_is_409(parley, alice, http_server_client):
    jwt_alice = jwt_client(parley, http_server_client, "alice")
    failed_id = await alice.start_ok("t-retry-busy", "/image a boat")
    await alice.wait_status(failed_id, *ENDED)
    await parley.runs.plans.grant("alice", 5, "test")
    live = await alice.start_ok("t-retry-busy", "/sleep 5")
    busy = await jwt_alice.request("POST", f"/video/submit/{failed_id}", {})
    assert busy.code == 409 and body(busy) == {"taskId": live, "reason": "running"}
    await alice.request("DELETE", f"/task/{live}")
    assert (await jwt_alice.request("POST", f"/video/submit/{failed_id}", {})).code == 200


@with_config({"plans": {"free": {"credits": 1}}})
async def test_mcp_tool_calls_pay_too(app, parley, http_server_client):
    token = parley.auth.issue_jwt("alice")
    async with mcp_session(http_server_client.get_url("/mcp"), {"Authorization": f"Bearer {token}"}) as session:
        await session.initialize()
        paid = await session.call_tool("generate_image", {"prompt": "a cat"})
        assert not paid.is_error
        broke = await session.call_tool("generate_image", {"prompt": "a dog"})
        assert broke.is_error and "balance is 0" in broke.content[0].text
    rows = await ledger(parley, "alice")
    assert rows[0]["actor"] == "mcp" and rows[0]["task_id"] is None


async def test_grant_never_goes_below_zero(parley):
    plans = parley.runs.plans
    assert await plans.grant("u1", 5, "test") == (100, 105)
    assert await plans.grant("u1", -500, "test") == (105, 0)
    rows = await ledger(parley, "u1")
    assert rows[0]["delta"] == -105 and "asked -500" in rows[0]["note"]


# -- config ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, fault", [
    ({"plans": {"default": "gold"}}, "names no plan"),
    ({"credits": {"draw": 1}}, "[credits] draw: unknown tool"),
])
def test_bad_plan_config_fails_at_start(tmp_path, extra, fault):
    with pytest.raises(ValueError) as info:
        Parley(Config(data_dir=tmp_path / "data", extra=extra))
    assert fault in str(info.value)


@pytest.mark.parametrize("extra, problem", [
    ({"plans": {"pro": {"runs_per_dya": 3}}}, "[plans.pro] runs_per_dya: unknown key; did you mean runs_per_day?"),
    ({"plans": {"pro": {"runs_per_day": -1}}}, "[plans.pro] runs_per_day: expected an integer, at least 0, got -1"),
    ({"plans": {"pro": {"credits": True}}}, "[plans.pro] credits: expected an integer, at least 0, got true"),
    ({"plans": {"pro": {"agents": "demo"}}}, '[plans.pro] agents: expected an array, each a non-empty string, got "demo"'),
    ({"plans": {"pro": 3}}, "[plans] pro: expected a table, got 3"),
    ({"plans": "pro"}, 'plans: expected a table, got "pro"'),
    ({"credits": {"generate_image": 1.5}}, "[credits] generate_image: expected an integer, at least 0, got 1.5"),
    ({"default_plan": "pro"}, "default_plan: no longer read: set the default plan as `default` in the [plans] table"),
])
def test_the_shape_of_plans_is_checked_by_the_schema(extra, problem):
    assert check_file(extra)[1] == [problem]


def test_plan_config_reading():
    config = PlanConfig.from_extra({"plans": {"default": "pro", "pro": {"runs_per_day": 3, "agents": ["demo"]}},
                                    "credits": {"calculator": 2}}, {"calculator", "generate_image"})
    assert config.default == "pro" and set(config.plans) == {"free", "pro"}
    assert config.plan(None).name == "pro" and config.plan("gone").name == "pro"  # a removed plan: the default
    assert config.plans["pro"].credits == 100 and config.plans["pro"].allows("demo") and not config.plans["pro"].allows("x")
    assert config.prices == {**DEFAULT_PRICES, "calculator": 2}
