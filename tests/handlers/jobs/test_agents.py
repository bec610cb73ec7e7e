"""The agents API (seed 003): definitions, their state and jobs, per user."""
import asyncio

import pytest

from server import Parley
from tests.helpers import body


async def test_demo_agent_is_listed(alice):
    agents = body(await alice.request("GET", "/api/agents"))["agents"]
    demo = next(a for a in agents if a["id"] == "demo")
    assert demo["type"] == "demo" and "clock" in demo["tools"]


async def test_create_a_demo_agent_and_run_it(alice, bob):
    resp = await alice.request("POST", "/api/agents", {"name": "Helper", "type": "demo", "tools": ["clock", "wait_approval"]})
    assert resp.code == 201, resp.body
    agent = body(resp)
    assert agent["id"].startswith("agent_") and agent["name"] == "Helper" and agent["tools"] == ["clock", "wait_approval"]
    assert any(a["id"] == agent["id"] for a in body(await alice.request("GET", "/api/agents"))["agents"])
    assert all(a["id"] != agent["id"] for a in body(await bob.request("GET", "/api/agents"))["agents"])

    task_id = await alice.start_ok("agent-thread", "/approve go", agentId=agent["id"])
    for _ in range(200):
        state = body(await alice.request("GET", f"/api/agents/{agent['id']}/state"))
        if state["parked"]:
            break
        await asyncio.sleep(0.01)
    assert [j["job_id"] for j in state["parked"]] == [task_id] and state["parked"][0]["correlation_key"]
    assert state["counts"] == {"parked": 1}
    jobs = body(await alice.request("GET", f"/api/agents/{agent['id']}/jobs?status=parked"))["jobs"]
    assert [j["job_id"] for j in jobs] == [task_id]
    assert body(await alice.request("GET", f"/api/agents/{agent['id']}/jobs?status=completed"))["jobs"] == []

    # Another user can neither see its state nor run it.
    assert (await bob.request("GET", f"/api/agents/{agent['id']}/state")).code == 403
    assert (await bob.request("GET", f"/api/agents/{agent['id']}/jobs")).code == 403
    assert (await bob.start("bob-thread", "hi", agentId=agent["id"])).code == 403
    await alice.request("DELETE", f"/task/{task_id}")


async def test_agent_validation(alice):
    cases = [
        ({"type": "demo"}, 422),
        ({"name": "x", "type": "robot"}, 422),
        ({"name": "x", "type": "react", "llm": "nowhere"}, 422),
        ({"name": "x", "type": "demo", "tools": ["nope"]}, 422),
        ({"name": "x", "type": "demo", "tools": "clock"}, 422),
        ({"id": "i" * 129, "name": "x", "type": "demo"}, 422),
    ]
    for payload, code in cases:
        resp = await alice.request("POST", "/api/agents", payload)
        assert resp.code == code, (payload, resp.body)
        assert body(resp)["error"]["code"] == "VALIDATION_ERROR"
    ok = await alice.request("POST", "/api/agents", {"id": "mine", "name": "Mine", "type": "demo"})
    assert ok.code == 201
    again = await alice.request("POST", "/api/agents", {"id": "mine", "name": "Mine", "type": "demo"})
    assert again.code == 409
    missing = await alice.request("GET", "/api/agents/ghost/state")
    assert missing.code == 404 and body(missing)["error"]["code"] == "AGENT_NOT_FOUND"


@pytest.mark.parametrize("status", ["bogus"])
async def test_bad_status_filter(alice, status):
    resp = await alice.request("GET", f"/api/agents/demo/jobs?status={status}")
    assert resp.code == 422


async def test_created_agents_survive_a_restart(parley_config, alice):
    resp = await alice.request("POST", "/api/agents", {"id": "kept", "name": "Kept", "type": "demo", "tools": ["clock"]})
    assert resp.code == 201
    other = Parley(parley_config)
    other.data_dir = parley_config.data_dir.resolve()
    await other.db.open()
    await other.runs.load_agents()
    kept = other.agents.get("kept")
    assert kept is not None and kept.tools == ("clock",) and kept.extra["owner"] == "alice"
    await other.db.close()
