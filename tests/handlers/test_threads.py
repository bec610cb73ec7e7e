"""kira-be thread routes (seed 001): create, list newest first, delete."""
import asyncio
import json


def body(resp):
    return json.loads(resp.body)


async def test_create_list_delete(alice, bob):
    resp = await alice.request("POST", "/thread/", {"message": "Plan a trip to   Kyoto in spring"})
    assert resp.code == 201
    first = body(resp)["thread"]
    assert first["title"] == "Plan a trip to Kyoto in spring" and first["id"]
    await asyncio.sleep(0.002)
    second = body(await alice.request("POST", "/thread/", {"threadId": "named", "title": "Named"}))["thread"]
    assert (first["titleSource"], second["titleSource"]) == ("message", "given")
    task_id = await alice.start_ok("by-task", "hello from a run")
    await alice.stream(task_id)
    threads = body(await alice.request("GET", "/thread/threads"))["threads"]
    assert [t["id"] for t in threads] == ["by-task", second["id"], first["id"]]
    assert threads[0]["title"] == "hello from a run"
    assert body(await bob.request("GET", "/thread/threads"))["threads"] == []

    assert (await alice.request("POST", "/thread/", {"threadId": "named"})).code == 409
    forbidden = await bob.request("DELETE", "/thread/named")
    assert forbidden.code == 403 and "message" in body(forbidden)
    assert body(await alice.request("DELETE", "/thread/named")) == {"success": True}
    assert (await alice.request("DELETE", "/thread/named")).code == 404
    assert "named" not in [t["id"] for t in body(await alice.request("GET", "/thread/threads"))["threads"]]


async def test_delete_stops_the_live_run(alice):
    task_id = await alice.start_ok("busy-thread", "/sleep 30")
    assert (await alice.request("DELETE", "/thread/busy-thread")).code == 200
    assert (await alice.task(task_id))["status"] == "cancelled"
    assert body(await alice.request("GET", "/messages/busy-thread")) == {"messages": []}


async def test_a_deleted_threads_messages_are_gone(alice):
    await alice.stream(await alice.start_ok("old-thread", "first words"))
    assert len(body(await alice.request("GET", "/messages/old-thread"))["messages"]) == 2
    assert (await alice.request("DELETE", "/thread/old-thread")).code == 200
    assert body(await alice.request("GET", "/messages/old-thread")) == {"messages": []}
    # the id may be used again: it starts with an empty history
    await alice.stream(await alice.start_ok("old-thread", "second words"))
    messages = body(await alice.request("GET", "/messages/old-thread"))["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["parts"][0]["text"] == "second words"
    threads = body(await alice.request("GET", "/thread/threads"))["threads"]
    assert [t["title"] for t in threads if t["id"] == "old-thread"] == ["second words"]


async def test_bad_bodies(alice):
    assert (await alice.request("POST", "/thread/", {"title": 5})).code == 422
    assert (await alice.request("POST", "/thread/", {"threadId": "x" * 129})).code == 422
    resp = await alice.request("POST", "/thread/", raw=b"not json")
    assert resp.code == 400 and "message" in body(resp)
    empty = await alice.request("POST", "/thread/")
    assert empty.code == 201 and body(empty)["thread"]["title"] is None
