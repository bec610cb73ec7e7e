"""Seed 004's Agent Chat and Infra routes: POST /api/v1/agent-chats, GET /api/v1/infra/health."""
import json
import uuid

import pytest

from handlers import openapi
from handlers.accounts import agent_chats
from handlers.openapi import OPERATIONS, route_paths
from tests.helpers import Client

CHAT = "/api/v1/agent-chats"
HEALTH = "/api/v1/infra/health"


@pytest.fixture
def app(parley):
    """The app with this module's routes, unless server.py already serves them."""
    served = {getattr(r.matcher, "regex", None) and r.matcher.regex.pattern for r in parley.app.wildcard_router.rules}
    if r"/api/v1/agent-chats$" not in served:
        parley.app.wildcard_router.add_rules(agent_chats.default_handlers)
    for path, ops in agent_chats.OPENAPI.items():
        openapi.OPERATIONS.setdefault(path, ops)
    return parley.app


def problem(resp, status):
    assert resp.code == status, (resp.code, resp.body)
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body = json.loads(resp.body)
    assert {"type", "title", "status", "detail", "code", "instance"} <= set(body)
    assert body["status"] == status
    return body


async def chat(client, message, session_id=None):
    body = {"message": message} if session_id is None else {"message": message, "session_id": session_id}
    return await client.request("POST", CHAT, body)


async def test_chat_runs_to_the_end_with_a_new_session(alice):
    resp = await chat(alice, "/count 3")
    assert resp.code == 200, resp.body
    out = json.loads(resp.body)
    uuid.UUID(out["session_id"])
    assert out["status"] == "completed"
    assert out["output"]
    events = out["events"]
    assert events[-1] == {"type": "done", "run_id": out["run_id"], "message_id": events[-1]["message_id"],
                          "output": out["output"]}
    deltas = [e for e in events if e["type"] == "text_delta"]
    assert deltas and "".join(e["delta"] for e in deltas) == out["output"]
    for e in events:
        assert e["run_id"] == out["run_id"]
        assert all(v is not None for v in e.values())
        assert all(isinstance(v, str) for v in e.values())
    # The same run on the native surface.
    task = await alice.task(out["run_id"])
    assert task["threadId"] == out["session_id"] and task["status"] == "completed"
    msgs = json.loads((await alice.request("GET", f"/messages/{out['session_id']}")).body)["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert msgs[1]["id"] == events[-1]["message_id"]
    text = "".join(p.get("text", "") for p in msgs[1]["parts"] if p["type"] == "text")
    assert text == out["output"]


async def test_chat_continues_a_session_with_a_jwt(parley, http_server_client):
    jwt_alice = Client(http_server_client, token=parley.auth.issue_jwt("alice"))
    first = json.loads((await chat(jwt_alice, "hello")).body)
    second = await chat(jwt_alice, "/count 2", first["session_id"])
    assert second.code == 200, second.body
    out = json.loads(second.body)
    assert out["session_id"] == first["session_id"] and out["run_id"] != first["run_id"]
    msgs = json.loads((await jwt_alice.request("GET", f"/messages/{out['session_id']}")).body)["messages"]
    assert len(msgs) == 4
    # Any valid id is a session id; the thread is created on first use.
    named = json.loads((await chat(jwt_alice, "hi", "my-session")).body)
    assert named["session_id"] == "my-session"


async def test_chat_tool_events(alice):
    out = json.loads((await chat(alice, "/tool calculator 2+3")).body)
    assert out["status"] == "completed", out
    types = [e["type"] for e in out["events"]]
    call = next(e for e in out["events"] if e["type"] == "tool_call")
    result = next(e for e in out["events"] if e["type"] == "tool_result")
    assert types.index("tool_call") < types.index("tool_result") < types.index("done")
    assert call["tool_name"] == result["tool_name"] == "calculator"
    assert json.loads(call["input"]) == {"expression": "2+3"}
    assert isinstance(result["result"], str) and "5" in result["result"]


async def test_failed_run_is_a_200_with_an_error_event(alice):
    resp = await chat(alice, "/fail")
    assert resp.code == 200, resp.body
    out = json.loads(resp.body)
    assert out["status"] == "failed"
    assert out["events"][-1]["type"] == "error" and "fail" in out["events"][-1]["error"]
    assert (await alice.task(out["run_id"]))["status"] == "failed"


async def test_parked_run_answers_at_once_and_can_be_woken(alice):
    resp = await chat(alice, "/approve ship it")
    assert resp.code == 200, resp.body
    out = json.loads(resp.body)
    assert out["status"] == "parked"
    parked = out["events"][-1]
    assert parked["type"] == "parked" and parked["prompt"] == "ship it" and parked["correlation_key"]
    assert (await alice.task(out["run_id"]))["status"] == "parked"
    # While parked the session is busy: 409, naming the user's own run.
    busy = problem(await chat(alice, "again", out["session_id"]), 409)
    assert busy["code"] == "SESSION_BUSY" and busy["run_id"] == out["run_id"]
    # Woken through the job surface, the run ends.
    ok = await alice.request("POST", f"/api/jobs/{out['run_id']}/signal",
                             {"correlation_key": parked["correlation_key"], "payload": {"approved": True}})
    assert ok.code == 200, ok.body
    await alice.stream(out["run_id"])
    assert (await alice.task(out["run_id"]))["status"] == "completed"


async def test_server_bound_answers_with_what_there_is(alice, app):
    app.settings["agent_chat_timeout_s"] = 0.3
    resp = await chat(alice, "/sleep 5")
    assert resp.code == 200, resp.body
    out = json.loads(resp.body)
    assert out["status"] == "running"
    assert (await alice.task(out["run_id"]))["status"] in ("pending", "running")
    await alice.request("DELETE", f"/task/{out['run_id']}")


async def test_another_users_session_is_403(alice, bob):
    out = json.loads((await chat(alice, "hello")).body)
    body = problem(await chat(bob, "hi", out["session_id"]), 403)
    assert out["run_id"] not in body["detail"]
    assert body["instance"] == CHAT


@pytest.mark.parametrize("body", [
    {}, {"message": ""}, {"message": "   "}, {"message": 5}, {"message": "x" * 8001},
    {"message": "hi", "session_id": ""}, {"message": "hi", "session_id": "x" * 129}, {"message": "hi", "session_id": 7},
    [1, 2],
])
async def test_invalid_bodies_are_422(alice, body):
    problem(await alice.request("POST", CHAT, body), 422)


async def test_longest_message_is_accepted(alice):
    assert (await chat(alice, "x" * 8000)).code == 200


async def test_auth_and_draining(parley, http_server_client):
    anon = await http_server_client.fetch(CHAT, method="POST", body=b'{"message": "hi"}', raise_error=False)
    problem(anon, 401)
    parley.runs.draining = True
    try:
        problem(await chat(Client(http_server_client, "alice"), "hi"), 503)
    finally:
        parley.runs.draining = False


async def test_infra_health(http_server_client):
    resp = await http_server_client.fetch(HEALTH)
    assert resp.code == 200
    out = json.loads(resp.body)
    assert out["status"] == "healthy"
    db = out["services"]["database"]
    assert out["services"]["sqlite"] == db
    assert db["status"] == "healthy"
    assert isinstance(db["latency_ms"], float | int) and db["latency_ms"] >= 0
    assert db["latency_ms"] == max(db["read_latency_ms"], db["write_latency_ms"])


async def test_infra_health_unhealthy_database(parley, http_server_client, monkeypatch):
    async def broken(fn):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(parley.runs.db, "write", broken)
    resp = await http_server_client.fetch(HEALTH, raise_error=False)
    assert resp.code == 503
    out = json.loads(resp.body)
    assert out["status"] == "unhealthy"
    assert out["services"]["database"]["status"] == "unhealthy"
    assert "fire" not in resp.body.decode()


async def test_routes_are_documented(app, http_server_client):
    doc = json.loads((await http_server_client.fetch("/openapi.json")).body)
    for path in (CHAT, HEALTH):
        assert path in route_paths(app) and path in OPERATIONS
        assert all(op["responses"] for op in doc["paths"][path].values())
    assert doc["paths"][HEALTH]["get"]["security"] == []
