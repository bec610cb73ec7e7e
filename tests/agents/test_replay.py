"""Replay (seed 003): a job runs again from its record, calling no model and no tool,
and produces the same event sequence."""
from __future__ import annotations

import json
import re

from agents import tools as tools_module
from tests.agents import fake_openai as fo
from tests.agents.test_react import fake, parley, parley_config, refused_url  # noqa: F401  (fixtures)
from tests.helpers import ENDED, body

_GENERATED = re.compile(r"(call_|txt_|rsn_|msg_)[0-9a-f]{16,32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def sequence(record):
    """The events with what a run generates afresh (ids, times) blanked out."""
    out = []
    for ev in record["events"]:
        data = {k: v for k, v in ev["data"].items() if k != "messageId"}
        out.append((ev["type"], _GENERATED.sub("<id>", json.dumps(data, sort_keys=True))))
    return out


async def replay_and_compare(client, job_id):
    resp = await client.request("POST", f"/api/jobs/{job_id}/replay", {})
    assert resp.code == 201, resp.body
    replayed = body(resp)
    assert replayed["replay_of"] == job_id and replayed["job_id"] != job_id
    done = await client.wait_job(replayed["job_id"], *ENDED)
    assert done["status"] == "completed", body(await client.request("GET", f"/api/jobs/{replayed['job_id']}/replay"))
    original = body(await client.request("GET", f"/api/jobs/{job_id}/replay"))
    again = body(await client.request("GET", f"/api/jobs/{replayed['job_id']}/replay"))
    assert again["replay_of"] == job_id
    assert sequence(again) == sequence(original)
    return original, again


async def test_demo_tool_job_replays_without_calling_the_tool(alice, parley, monkeypatch):  # noqa: F811
    resp = await alice.request("POST", "/api/runs", {"workflow_id": "w", "input": {"agent_id": "demo", "message": "/tool clock"}})
    job_id = body(resp)["job_id"]
    assert (await alice.wait_job(job_id, *ENDED))["status"] == "completed"

    calls = []

    async def counting_clock(args, env):
        calls.append(args)
        return {"iso": "never", "timezone": "UTC", "epochMs": 0}

    monkeypatch.setitem(parley.agents.tools, "clock", tools_module.Tool("clock", "", {}, counting_clock))
    original, again = await replay_and_compare(alice, job_id)
    assert calls == []
    step = next(s for s in again["steps"] if s["tool_calls"])
    assert step["tool_calls"][0]["output"] == next(s for s in original["steps"] if s["tool_calls"])["tool_calls"][0]["output"]


async def test_parked_job_replays_with_its_recorded_signal(alice):
    resp = await alice.request("POST", "/api/runs", {"workflow_id": "w", "input": {"agent_id": "demo", "message": "/approve refund 9"}})
    job_id = body(resp)["job_id"]
    await alice.wait_job(job_id, "parked")
    info = await alice.task(job_id)
    key = info["parked"]["correlationKey"]
    await alice.request("POST", f"/api/jobs/{job_id}/signal", {"correlation_key": key, "payload": {"approved": False, "reason": "duplicate"}})
    assert (await alice.wait_job(job_id, *ENDED))["status"] == "completed"
    original, again = await replay_and_compare(alice, job_id)
    assert [s.get("signal", {}).get("payload") for s in again["steps"] if "signal" in s] == [{"approved": False, "reason": "duplicate"}]
    assert original["record"]["signals"] == 1


async def test_react_job_replays_without_calling_the_model(alice, fake):  # noqa: F811
    fake.script(
        fo.tool_calls(("call_1", "calculator", ['{"expr', 'ession": "6*7"}']), content="Let me compute."),
        fo.text("The answer is 42.", pieces=3),
    )
    resp = await alice.request("POST", "/api/runs", {"workflow_id": "w", "input": {"agent_id": "assistant", "message": "what is 6*7?"}})
    job_id = body(resp)["job_id"]
    assert (await alice.wait_job(job_id, *ENDED))["status"] == "completed"
    asked = len(fake.requests)
    assert asked == 2
    original, again = await replay_and_compare(alice, job_id)
    assert len(fake.requests) == asked  # the replay asked the model nothing
    assert original["record"] == {"llm_calls": 2, "tool_outcomes": 1, "signals": 0}
    llm_steps = [s for s in again["steps"] if s["node"] == "llm"]
    assert [s["text"] for s in llm_steps] == ["Let me compute.", "The answer is 42."]


async def test_replay_refuses_live_and_foreign_jobs(alice, bob):
    resp = await alice.request("POST", "/api/runs", {"workflow_id": "w", "input": {"agent_id": "demo", "message": "/sleep 30"}})
    job_id = body(resp)["job_id"]
    live = await alice.request("POST", f"/api/jobs/{job_id}/replay", {})
    assert live.code == 409
    assert (await bob.request("POST", f"/api/jobs/{job_id}/replay", {})).code == 403
    assert (await bob.request("GET", f"/api/jobs/{job_id}/replay")).code == 403
    assert (await alice.request("POST", "/api/jobs/nope/replay", {})).code == 404
    await alice.request("POST", f"/api/jobs/{job_id}/stop", {})
