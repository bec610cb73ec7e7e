"""kira-be thread routes (seed 001): create, list newest first, delete."""
import asyncio

from tests.helpers import body


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


async def test_timelines_pages_of_five_with_their_last_messages(alice, bob):
    for n in range(7):
        await alice.stream(await alice.start_ok(f"tl-{n}", f"message {n}"))
        await asyncio.sleep(0.002)  # distinct activity times
    await alice.request("POST", "/thread/", {"threadId": "tl-empty", "title": "Empty"})
    first = body(await alice.request("GET", "/thread/timelines"))
    assert first["page"] == 1 and first["hasMore"] is True
    assert [t["id"] for t in first["threads"]] == ["tl-empty", "tl-6", "tl-5", "tl-4", "tl-3"]
    assert first["threads"][0]["lastMessages"] == []
    six = first["threads"][1]
    assert six["title"] == "message 6"
    assert [(m["role"], m["text"], m["files"]) for m in six["lastMessages"]] == [
        ("user", "message 6", []), ("assistant", 'You said: "message 6"', [])]
    assert all(isinstance(m["createdAt"], int) and m["id"] for m in six["lastMessages"])
    second = body(await alice.request("GET", "/thread/timelines?page=2"))
    assert [t["id"] for t in second["threads"]] == ["tl-2", "tl-1", "tl-0"]
    assert (second["page"], second["hasMore"]) == (2, False)
    assert body(await alice.request("GET", "/thread/timelines?page=3")) == {"threads": [], "page": 3, "hasMore": False}
    assert body(await bob.request("GET", "/thread/timelines")) == {"threads": [], "page": 1, "hasMore": False}
    for bad in ("0", "-1", "x", "1.5", "%C2%B2", "100001"):
        resp = await alice.request("GET", f"/thread/timelines?page={bad}")
        assert resp.code == 400 and set(body(resp)) == {"message"}


async def test_timelines_summarise_the_last_messages(alice):
    await alice.stream(await alice.start_ok("tl-long", "word " * 100))
    (thread,) = body(await alice.request("GET", "/thread/timelines"))["threads"]
    user = thread["lastMessages"][0]
    assert len(user["text"]) == 200 and user["text"].endswith("…") and user["text"].startswith("word word")
    await alice.stream(await alice.start_ok("tl-long", "/image a red fox"))
    (thread,) = body(await alice.request("GET", "/thread/timelines"))["threads"]
    user, assistant = thread["lastMessages"]
    assert user["text"] == "/image a red fox"
    assert [f["mediaType"].split("/")[0] for f in assistant["files"]] == ["image"]


async def test_threads_named_like_the_fixed_routes_can_be_deleted(alice, bob):
    for name in ("threads", "timelines"):
        await alice.stream(await alice.start_ok(name, f"a thread called {name}"))
        assert (await bob.request("DELETE", f"/thread/{name}")).code == 403
        assert body(await alice.request("DELETE", f"/thread/{name}")) == {"success": True}
        assert (await alice.request("DELETE", f"/thread/{name}")).code == 404
    assert body(await alice.request("GET", "/thread/threads"))["threads"] == []
