"""The native API's status codes and stream semantics (SPEC section 4)."""
import asyncio

import pytest

from tests.helpers import Client, body, parse_frames, text_of


async def test_post_task_returns_201_and_taskinfo(alice):
    resp = await alice.start("th-1", "/count 3")
    assert resp.code == 201
    task_id = body(resp)["taskId"]
    await alice.stream(task_id)
    info = await alice.task(task_id)
    assert info["taskId"] == task_id and info["threadId"] == "th-1" and info["agentId"] == "demo"
    assert info["status"] == "completed" and info["error"] is None and info["parked"] is None
    assert info["userMessage"]["role"] == "user"
    assert info["userMessage"]["parts"] == [{"type": "text", "text": "/count 3"}]
    for key in ("createdAt", "startedAt", "finishedAt"):
        assert isinstance(info[key], int) and info[key] > 1_600_000_000_000  # epoch ms
    assert info["createdAt"] <= info["startedAt"] <= info["finishedAt"]
    assert isinstance(info["streamToken"], str)


async def test_post_task_with_ui_message_and_server_thread(alice):
    msg = {"id": "client-msg-1", "role": "user", "parts": [{"type": "text", "text": "hi there"}]}
    resp = await alice.request("POST", "/task", {"message": msg})
    assert resp.code == 201
    thread_id = body(resp)["threadId"]
    await alice.stream(body(resp)["taskId"])
    messages = body(await alice.request("GET", f"/messages/{thread_id}"))["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["id"] == "client-msg-1"
    assert messages[1]["parts"][-1] == {"type": "text", "text": 'You said: "hi there"', "state": "done"}


async def test_second_start_on_live_thread_is_409_with_live_task(alice):
    task_id = await alice.start_ok("busy", "/sleep 30")
    resp = await alice.start("busy", "again")
    assert resp.code == 409
    assert body(resp) == {"taskId": task_id, "reason": "running"}
    current = body(await alice.request("GET", "/thread/busy/current-task"))
    assert current["task"]["taskId"] == task_id
    resp = await alice.request("DELETE", f"/task/{task_id}")
    assert resp.code == 204
    assert (await alice.task(task_id))["status"] == "cancelled"
    assert body(await alice.request("GET", "/thread/busy/current-task")) == {"task": None}
    assert (await alice.start("busy", "again")).code == 201


async def test_dedup_holds_under_100_concurrent_starts(alice):
    responses = await asyncio.gather(*(alice.start("crowd", "/sleep 5") for i in range(100)))
    codes = [r.code for r in responses]
    assert codes.count(201) == 1 and codes.count(409) == 99
    winner = next(body(r)["taskId"] for r in responses if r.code == 201)
    assert all(body(r) == {"taskId": winner, "reason": "running"} for r in responses if r.code == 409)
    await alice.request("DELETE", f"/task/{winner}")


async def test_delete_is_idempotent_and_stream_ends_with_error(alice):
    task_id = await alice.start_ok("stop-me", "/sleep 30")
    assert (await alice.request("DELETE", f"/task/{task_id}")).code == 204
    assert (await alice.request("DELETE", f"/task/{task_id}")).code == 204
    _, frames = await alice.stream(task_id)
    assert frames[-1].event == "error"
    assert frames[-1].data == "The run was cancelled."
    info = await alice.task(task_id)
    assert info["status"] == "cancelled" and info["error"]["reason"] == "cancelled"


async def test_unknown_task_is_404(alice):
    for method, path in (("GET", "/task/nope"), ("DELETE", "/task/nope"), ("GET", "/stream/nope")):
        resp = await alice.request(method, path)
        assert resp.code == 404, (method, path)
        assert "error" in body(resp)


async def test_unknown_thread_has_no_messages_and_no_task(alice):
    assert body(await alice.request("GET", "/messages/never")) == {"messages": []}
    assert body(await alice.request("GET", "/thread/never/current-task")) == {"task": None}


async def test_failed_run_reports_reason(alice):
    task_id = await alice.start_ok("fails", "/fail")
    _, frames = await alice.stream(task_id)
    assert frames[-1].event == "error" and "failed on purpose" in frames[-1].data
    info = await alice.task(task_id)
    assert info["status"] == "failed" and info["error"]["reason"] == "demo_failure"


async def test_parked_run_holds_lock_and_shows_parked(alice, parley):
    task_id = await alice.start_ok("park", "/approve refund order 7")
    info = await alice.wait_status(task_id, "parked")
    assert info["status"] == "parked" and info["currentNode"] == "wait_approval"
    assert info["parked"]["prompt"] == "refund order 7" and info["parked"]["correlationKey"]
    resp = await alice.start("park", "next")
    assert resp.code == 409 and body(resp)["taskId"] == task_id
    _, frames = await alice.stream(task_id, cut_after=1)
    chunks = [c for f in frames if f.id is not None for c in f.chunks]
    assert chunks[-1]["type"] == "data-parked"
    assert chunks[-1]["data"]["correlationKey"] == info["parked"]["correlationKey"]
    # The signal (its HTTP route comes with the job surface) resumes the same task.
    await parley.runs.signal(task_id, info["parked"]["correlationKey"], {"approved": True})
    _, frames = await alice.stream(task_id)
    assert frames[-1].event == "done"
    assert "Approved: refund order 7" in text_of(frames)
    assert (await alice.task(task_id))["status"] == "completed"


async def test_rewind_supersedes_and_history_is_ascending(alice):
    first = await alice.start_ok("rw", "one")
    await alice.stream(first)
    second = await alice.start_ok("rw", "two")
    await alice.stream(second)
    messages = body(await alice.request("GET", "/messages/rw"))["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    rewind_point = messages[2]["id"]
    third = await alice.start_ok("rw", "three", rewindFrom=rewind_point)
    await alice.stream(third)
    messages = body(await alice.request("GET", "/messages/rw"))["messages"]
    texts = [m["parts"][0]["text"] for m in messages if m["role"] == "user"]
    assert texts == ["one", "three"]
    assert [m["metadata"]["createdAt"] for m in messages] == sorted(m["metadata"]["createdAt"] for m in messages)


async def test_tool_call_streams_input_and_output_chunks(alice):
    task_id = await alice.start_ok("tools", "/tool calculator (2+3)*4")
    _, frames = await alice.stream(task_id)
    chunks = [c for f in frames if f.id is not None and f.event is None for c in f.chunks]
    types = [c["type"] for c in chunks]
    assert types.index("tool-input-start") < types.index("tool-input-delta") < types.index("tool-input-available") < types.index("tool-output-available")
    out = next(c for c in chunks if c["type"] == "tool-output-available")
    assert out["output"] == {"expression": "(2+3)*4", "result": 20}
    assert text_of(frames) == "(2+3)*4 = 20"


async def test_count_streams_exactly_n_deltas(alice):
    task_id = await alice.start_ok("count", "/count 300")
    _, frames = await alice.stream(task_id)
    deltas = [c["delta"] for f in frames if f.id is not None and f.event is None for c in f.chunks if c["type"] == "text-delta"]
    assert deltas == [f"{k} " for k in range(1, 301)]
    texts = [c for f in frames if f.id is not None and f.event is None for c in f.chunks if c["type"].startswith("text-")]
    assert texts[0]["type"] == "text-start" and texts[-1]["type"] == "text-end"


async def test_stream_framing_headers_and_retry(alice):
    task_id = await alice.start_ok("frame", "hi")
    resp = await alice.request("GET", f"/stream/{task_id}")
    assert resp.code == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Accel-Buffering"] == "no"
    assert "Content-Encoding" not in resp.headers
    frames = parse_frames(resp.body)
    assert frames[0].retry is not None
    data_frames = [f for f in frames if f.retry is None]
    assert all(f.id is not None for f in data_frames)
    assert [f.id for f in data_frames] == sorted(f.id for f in data_frames)
    assert resp.body.endswith(b"event: done\ndata: \n\n")


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 8, 13])
async def test_resume_after_every_cut_point_finished_run(alice, cut):
    task_id = await alice.start_ok(f"resume-{cut}", "/count 40")
    _, full = await alice.stream(task_id)
    full_chunks = [c for f in full if f.id is not None and f.event is None for c in f.chunks]
    data_frames = [f for f in full if f.id is not None]
    # Resume after the id of each frame: the rest arrives exactly once.
    for frame in data_frames:
        _, rest = await alice.stream(task_id, last_event_id=frame.id)
        # Only the terminal frame may come again (a cursor at the end gets it once more).
        assert all(f.id > frame.id or f.event == "done" for f in rest if f.id is not None)
        assert rest[-1].event == "done"
    # A replay from 0 regroups chunks but carries the same ones.
    _, again = await alice.stream(task_id, last_event_id=0)
    assert [c for f in again if f.id is not None and f.event is None for c in f.chunks] == full_chunks


async def test_resume_live_at_many_cut_points(parley, alice):
    parley.runs.demo_delay_s = 0.002
    task_id = await alice.start_ok("live-resume", "/count 150")
    seen: list[str] = []
    cursor = 0
    rounds = 0
    while True:
        rounds += 1
        _, frames = await alice.stream(task_id, last_event_id=cursor, cut_after=3)
        frames = [f for f in frames if f.id is not None]
        for f in frames:
            assert f.id > cursor or (f.event == "done" and f.id == cursor)
            cursor = f.id
            if f.event is None:
                seen.extend(c["delta"] for c in f.chunks if c["type"] == "text-delta")
        if frames and frames[-1].event == "done":
            break
        assert rounds < 500
    assert seen == [f"{k} " for k in range(1, 151)]
    assert rounds > 2


async def test_cursor_at_terminal_gets_only_terminal_frame(alice):
    task_id = await alice.start_ok("term", "hi")
    _, frames = await alice.stream(task_id)
    last = frames[-1]
    _, again = await alice.stream(task_id, last_event_id=last.id)
    assert [(f.id, f.event) for f in again if f.retry is None] == [(last.id, "done")]
    _, beyond = await alice.stream(task_id, last_event_id=last.id + 1000)
    assert [(f.id, f.event) for f in beyond if f.retry is None] == [(last.id, "done")]
    _, by_query = await alice.stream(task_id, query=f"?lastEventId={last.id}")
    assert [(f.id, f.event) for f in by_query if f.retry is None] == [(last.id, "done")]


async def test_stream_token_query_gets_204_after_end(alice, http_server_client):
    task_id = await alice.start_ok("token-204", "hi")
    _, frames = await alice.stream(task_id)
    token = (await alice.task(task_id))["streamToken"]
    anon = Client(http_server_client, user="")
    anon.extra_headers = {}
    resp = await http_server_client.fetch(f"/stream/{task_id}?token={token}&lastEventId={frames[-1].id}", raise_error=False)
    assert resp.code == 204
    resp = await http_server_client.fetch(f"/stream/{task_id}?token={token}", raise_error=False)
    assert resp.code == 200 and resp.body.endswith(b"event: done\ndata: \n\n")


async def test_client_disconnect_never_stops_the_run(parley, alice):
    parley.runs.demo_delay_s = 0.001
    task_id = await alice.start_ok("leave", "/count 100")
    await alice.stream(task_id, cut_after=1)
    _, frames = await alice.stream(task_id)
    assert frames[-1].event == "done"
    assert text_of(frames) == "".join(f"{k} " for k in range(1, 101))


async def test_event_committed_between_replay_and_subscribe_is_not_lost(parley, alice, monkeypatch):
    """Subscribe first, then read the log: an event committed in between arrives once."""
    parley.runs.demo_delay_s = 0.0
    task_id = await alice.start_ok("race", "/sleep 0.2")
    original = parley.runs.events_after
    calls = []

    async def slow_events_after(tid, after, limit):
        page = await original(tid, after, limit)
        if not calls:
            calls.append(after)
            await asyncio.sleep(0.4)  # the run finishes and commits while this replay is "in flight"
        return page

    monkeypatch.setattr(parley.runs, "events_after", slow_events_after)
    monkeypatch.setattr(parley.hub.recent, "after", lambda task_id, cursor: None)  # force the store path
    _, frames = await alice.stream(task_id)
    ids = [f.id for f in frames if f.id is not None and f.event is None]
    assert len(ids) == len(set(ids))
    assert frames[-1].event == "done"
    assert text_of(frames) == "I slept 0.2 seconds."


@pytest.mark.parametrize("in_memory", [True, False])
async def test_long_run_past_the_in_memory_log_streams_whole(parley, alice, monkeypatch, in_memory):
    """A log longer than the in-memory window is served from the store, live and resumed."""
    if not in_memory:
        monkeypatch.setattr(parley.hub.recent, "after", lambda task_id, cursor: None)
    parley.runs.demo_delay_s = 0.0
    n = parley.hub.recent.per_task + 500
    task_id = await alice.start_ok(f"long-{in_memory}", f"/count {n}")
    _, first = await alice.stream(task_id, cut_after=1)
    cursor = first[-1].id
    _, rest = await alice.stream(task_id, last_event_id=cursor)
    deltas = [c["delta"] for f in first + rest if f.id is not None and f.event is None for c in f.chunks if c["type"] == "text-delta"]
    assert deltas == [f"{k} " for k in range(1, n + 1)]
    assert rest[-1].event == "done"
