"""A message the client sent with an id keeps that id through submit, regenerate and edit (issue 10),
on the native API (`POST /task` with `message` and `rewindFrom`) and the Agent API (`POST /api/v1/agent/runs`);
the kira-be and AG-UI surfaces are proven with their real clients in tests/protocol."""
from __future__ import annotations

import json


def _message(msg_id: str, text: str) -> dict:
    return {"id": msg_id, "role": "user", "parts": [{"type": "text", "text": text}]}


async def _run(client, path: str, body: dict) -> str:
    resp = await client.request("POST", path, body)
    assert resp.code == 201, (resp.code, resp.body)
    task_id = json.loads(resp.body)["taskId"]
    code, frames = await client.stream(task_id)
    assert code == 200 and frames[-1].event == "done", frames[-1]
    return task_id


async def _messages(client, thread_id: str) -> list[dict]:
    resp = await client.request("GET", f"/messages/{thread_id}")
    return json.loads(resp.body)["messages"]


async def test_native_edit_keeps_the_message_id(alice):
    first = await _run(alice, "/task", {"threadId": "n1", "message": _message("u1", "one")})
    await _run(alice, "/task", {"threadId": "n1", "message": _message("u2", "two")})
    edited = await _run(alice, "/task", {"threadId": "n1", "message": _message("u1", "one, edited"), "rewindFrom": "u1"})
    messages = await _messages(alice, "n1")
    assert [(m["id"], m["role"]) for m in messages] == [("u1", "user"), (messages[1]["id"], "assistant")]
    assert messages[0]["parts"] == [{"type": "text", "text": "one, edited"}]
    # each task still shows the user message it ran on
    assert (await alice.task(first))["userMessage"]["parts"] == [{"type": "text", "text": "one"}]
    assert (await alice.task(edited))["userMessage"]["parts"] == [{"type": "text", "text": "one, edited"}]
    # and again, from the same id
    await _run(alice, "/task", {"threadId": "n1", "message": _message("u1", "one, third"), "rewindFrom": "u1"})
    assert [m["id"] for m in await _messages(alice, "n1")][:1] == ["u1"]


async def test_native_id_of_a_live_message_without_a_rewind_is_422(alice):
    await _run(alice, "/task", {"threadId": "n2", "message": _message("u1", "one")})
    resp = await alice.request("POST", "/task", {"threadId": "n2", "message": _message("u1", "again")})
    assert resp.code == 422


async def test_agent_api_run_again_from_a_message_keeps_its_id(alice):
    def body(*messages: dict, run: str) -> dict:
        return {"threadId": "a1", "runId": run, "messages": list(messages)}

    u1 = {"id": "u1", "role": "user", "content": "one"}
    await _run(alice, "/api/v1/agent/runs", body(u1, run="r1"))
    first = await _messages(alice, "a1")
    u2 = {"id": "u2", "role": "user", "content": "two"}
    assistant = {"id": first[1]["id"], "role": "assistant", "content": "…"}
    await _run(alice, "/api/v1/agent/runs", body(u1, assistant, u2, run="r2"))
    assert [m["id"] for m in await _messages(alice, "a1")][::2] == ["u1", "u2"]
    # the client drops everything after u1 and sends u1 edited: the thread is rewound to it
    await _run(alice, "/api/v1/agent/runs", body({**u1, "content": "one, edited"}, run="r3"))
    messages = await _messages(alice, "a1")
    assert [(m["id"], m["role"]) for m in messages] == [("u1", "user"), (messages[1]["id"], "assistant")]
    assert messages[0]["parts"] == [{"type": "text", "text": "one, edited"}]
