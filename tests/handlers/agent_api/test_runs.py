"""The Agent API (seed 002) at /api/v1/agent: runs from a RunAgentInput, the per-thread
event stream, day snapshots of history, the AG-UI endpoint's framing; errors `{detail}`."""
from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from tests.helpers import ENDED, Client, Cut, Frame, body, complete_frames, parse_frames

RUNS = "/api/v1/agent/runs"
AG_UI = "/api/v1/agent/ag-ui"
EVENT_KEYS = {"type", "taskId", "threadId", "runId", "data"}
AT_REST = (*ENDED, "parked")  # a run over, or waiting for a signal


def run_input(thread_id: str, text: str = "hello", *, msg_id: str | None = None, run_id: str = "run-1",
              history: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    user = {"id": msg_id or f"u-{thread_id}-{run_id}", "role": "user", "content": text}
    return {"threadId": thread_id, "runId": run_id, "state": {}, "messages": [*(history or []), user],
            "tools": [], "context": [], "forwardedProps": {}, **extra}


async def start(client: Client, thread_id: str, text: str = "hello", **kw: Any) -> dict[str, Any]:
    resp = await client.request("POST", RUNS, run_input(thread_id, text, **kw))
    assert resp.code == 201, (resp.code, resp.body)
    return body(resp)


async def read_events(client: Client, thread_id: str, query: str = "", headers: dict[str, str] | None = None,
                      stop: Any = None, on_event: Any = None) -> tuple[int, list[Frame], bytes]:
    """Read the thread's event stream to its end, or until `stop(events)` holds (then drop it).

    `on_event(events)` is awaited-free and called after every complete frame (to start
    a second run mid-stream, say).  Returns (status, the event frames, the raw body).
    """
    buf = bytearray()
    cut = [False]

    def events() -> list[Frame]:
        return [f for f in complete_frames(buf) if f.event is not None]

    def on_chunk(data: bytes) -> None:
        if cut[0]:
            return
        buf.extend(data)
        evs = events()
        if on_event is not None:
            on_event(evs)
        if stop is not None and stop(evs):
            cut[0] = True
            raise Cut()

    try:
        resp = await client.http.fetch(f"/api/v1/agent/runs/{thread_id}/events{query}", headers=client.headers(**(headers or {})),
                                       raise_error=False, streaming_callback=on_chunk, request_timeout=30)
        code = resp.code
        if code != 200:
            return code, [], resp.body or bytes(buf)
    except (Cut, HTTPClientError):
        if not cut[0]:
            raise
        code = 200
    return code, events(), bytes(buf)


async def test_a_stream_with_nothing_to_send_yet_sends_its_headers_and_retry_at_once(alice):
    """The `retry:` frame waits for the first batch only when the log has one at once: a stream
    resumed after the thread's last event still gets its headers and `retry:` at once, long
    before its idle end (2 s)."""
    done = await start(alice, "t-quiet", "hi", run_id="r-quiet")
    await alice.wait_status(done["taskId"], *AT_REST)
    code, frames, _ = await read_events(alice, "t-quiet", "?idle_limit=1")
    assert code == 200 and frames
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    first_chunk: list[float] = []
    code, frames, raw = await read_events(alice, "t-quiet", f"?idle_limit=2&lastEventId={frames[-1].id}",
                                          on_event=lambda evs: first_chunk or first_chunk.append(loop.time() - t0))
    assert code == 200 and raw.startswith(b"retry: ") and frames == []
    assert first_chunk and first_chunk[0] < 1.0 < loop.time() - t0


def payloads(frames: list[Frame]) -> list[dict[str, Any]]:
    return [json.loads(f.data) for f in frames]


# -- POST /runs ---------------------------------------------------------------------------

async def test_start_run_answers_201_with_the_seed_shape(alice):
    out = await start(alice, "t-start", "hi there", run_id="run-001", msg_id="msg-001")
    assert set(out) == {"taskId", "threadId", "runId", "created"}
    assert out["threadId"] == "t-start" and out["runId"] == "run-001"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", out["created"]), out
    info = await alice.wait_status(out["taskId"], *AT_REST)
    assert info["status"] == "completed" and info["userMessage"]["id"] == "msg-001"
    messages = body(await alice.request("GET", "/messages/t-start"))["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["id"] == "msg-001" and messages[0]["parts"] == [{"type": "text", "text": "hi there"}]


async def test_the_whole_history_is_merged_by_message_id(alice):
    first = await start(alice, "t-merge", "one", msg_id="m1", run_id="r1")
    await alice.wait_status(first["taskId"], *AT_REST)
    stored = body(await alice.request("GET", "/messages/t-merge"))["messages"]
    # The client's view of the history: what it sent, the reply, and a message the server never held.
    history = [{"id": "m1", "role": "user", "content": "one"},
               {"id": stored[1]["id"], "role": "assistant", "content": "You said: \"one\""},
               {"id": "client-only", "role": "system", "content": "be brief"}]
    second = await start(alice, "t-merge", "two", msg_id="m2", run_id="r2", history=history)
    await alice.wait_status(second["taskId"], *AT_REST)
    messages = body(await alice.request("GET", "/messages/t-merge"))["messages"]
    assert [(m["id"], m["role"]) for m in messages][:3] == [("m1", "user"), (stored[1]["id"], "assistant"), ("m2", "user")]
    assert len(messages) == 4
    # Sending m2 again as the last user message runs again from it: the reply is made anew, m2 keeps its id.
    again = await alice.request("POST", RUNS, run_input("t-merge", "two, again", msg_id="m2", run_id="r3"))
    assert again.code == 201, again.body
    await alice.wait_status(body(again)["taskId"], *AT_REST)
    messages = body(await alice.request("GET", "/messages/t-merge"))["messages"]
    assert [(m["id"], m["role"]) for m in messages][:3] == [("m1", "user"), (stored[1]["id"], "assistant"), ("m2", "user")]
    assert len(messages) == 4 and messages[2]["parts"] == [{"type": "text", "text": "two, again"}]


async def test_content_parts_become_ui_message_parts(alice):
    content = [{"type": "text", "text": "look"},
               {"type": "image", "source": {"type": "url", "value": "https://example.com/a.png", "mimeType": "image/png"}}]
    out = await start(alice, "t-parts", "x", msg_id="mp")
    await alice.wait_status(out["taskId"], *AT_REST)
    resp = await alice.request("POST", RUNS, {**run_input("t-parts", msg_id="mp2"), "messages": [
        {"id": "mp2", "role": "user", "content": content}]})
    assert resp.code == 201, resp.body
    await alice.wait_status(body(resp)["taskId"], *AT_REST)
    user = body(await alice.request("GET", "/messages/t-parts"))["messages"][2]
    assert user["parts"] == [{"type": "text", "text": "look"},
                             {"type": "file", "mediaType": "image/png", "url": "https://example.com/a.png"}]


async def test_409_while_the_thread_runs_and_403_for_another_user(alice, bob):
    out = await start(alice, "t-busy", "/approve wait here")
    assert (await alice.wait_status(out["taskId"], *AT_REST))["status"] == "parked"
    resp = await alice.request("POST", RUNS, run_input("t-busy", "again", run_id="run-2"))
    assert resp.code == 409
    assert body(resp) == {"detail": "the thread already has a live run", "taskId": out["taskId"]}
    theirs = await bob.request("POST", RUNS, run_input("t-busy", "mine?", run_id="run-3"))
    assert theirs.code == 403 and set(body(theirs)) == {"detail"}
    assert out["taskId"] not in theirs.body.decode()
    await alice.request("DELETE", f"/task/{out['taskId']}")


async def test_503_while_draining(alice, parley):
    parley.runs.draining = True
    try:
        for path in (RUNS, AG_UI):
            resp = await alice.request("POST", path, run_input("t-drain"))
            assert resp.code == 503 and set(body(resp)) == {"detail"}
            assert resp.headers["Content-Type"].startswith("application/json")
    finally:
        parley.runs.draining = False


async def test_401_without_credentials(http_server_client):
    resp = await http_server_client.fetch(RUNS, method="POST", body=json.dumps(run_input("t-anon")), raise_error=False)
    assert resp.code == 401 and set(body(resp)) == {"detail"}


BAD_BODIES = {
    "not json": b"{nope",
    "not an object": b"[1]",
    "no messages": json.dumps({"threadId": "t-bad", "runId": "r"}).encode(),
    "empty messages": json.dumps({"threadId": "t-bad", "runId": "r", "messages": []}).encode(),
    "no user message": json.dumps({"threadId": "t-bad", "messages": [{"id": "a", "role": "assistant", "content": "x"}]}).encode(),
    "unknown role": json.dumps({"threadId": "t-bad", "messages": [{"id": "a", "role": "robot", "content": "x"}]}).encode(),
    "message without id": json.dumps({"threadId": "t-bad", "messages": [{"role": "user", "content": "x"}]}).encode(),
    "content of a number": json.dumps({"threadId": "t-bad", "messages": [{"id": "a", "role": "user", "content": 5}]}).encode(),
    "blank content": json.dumps({"threadId": "t-bad", "messages": [{"id": "a", "role": "user", "content": "  "}]}).encode(),
    "unknown part": json.dumps({"threadId": "t-bad", "messages": [{"id": "a", "role": "user", "content": [{"type": "x"}]}]}).encode(),
    "tools not a list": json.dumps(run_input("t-bad", tools={})).encode(),
    "thread id too long": json.dumps(run_input("x" * 129)).encode(),
    "unknown agent": json.dumps(run_input("t-bad", forwardedProps={"agentId": "nobody"})).encode(),
}


@pytest.mark.parametrize("path", [RUNS, AG_UI])
@pytest.mark.parametrize("case", sorted(BAD_BODIES))
async def test_bad_bodies_are_422_with_detail(alice, path, case):
    resp = await alice.request("POST", path, raw=BAD_BODIES[case], headers={"Content-Type": "application/json"})
    assert resp.code == 422, (case, resp.code, resp.body)
    assert set(body(resp)) == {"detail"} and body(resp)["detail"]
    assert resp.headers["Content-Type"].startswith("application/json")


# -- GET /runs/:threadId/events ----------------------------------------------------------

async def test_events_of_the_latest_run_with_canonical_names_and_the_seed_shape(alice):
    first = await start(alice, "t-ev", "/count 2", run_id="r-one")
    await alice.wait_status(first["taskId"], *AT_REST)
    second = await start(alice, "t-ev", "/tool calculator 6*7", msg_id="u2", run_id="r-two")
    await alice.wait_status(second["taskId"], *AT_REST)
    code, frames, raw = await read_events(alice, "t-ev", "?idle_limit=1")
    assert code == 200 and b"\r" not in raw and raw.startswith(b"retry: ")
    events = payloads(frames)
    assert [e["type"] for e in events] == [f.event for f in frames]
    assert events[0]["type"] == "run.started" and events[-1]["type"] == "run.finished"
    assert all(set(e) == EVENT_KEYS for e in events)
    assert {(e["taskId"], e["threadId"], e["runId"]) for e in events} == {(second["taskId"], "t-ev", "r-two")}
    ids = [f.id or 0 for f in frames]
    assert all(ids) and ids == sorted(set(ids))
    types = [e["type"] for e in events]
    assert {"step.started", "tool.call.start", "tool.call.args", "tool.call.end", "tool.result", "text.delta"} <= set(types)
    (result,) = [e for e in events if e["type"] == "tool.result"]
    assert result["data"]["output"] == {"expression": "6*7", "result": 42}
    text = "".join(e["data"]["delta"] for e in events if e["type"] == "text.delta")
    assert text == "6*7 = 42"
    # An explicit cursor of 0: every run of the thread.
    _, everything, _ = await read_events(alice, "t-ev", "?idle_limit=1", headers={"Last-Event-ID": "0"})
    assert {e["runId"] for e in payloads(everything)} == {"r-one", "r-two"}
    assert [f.id for f in everything][-len(frames):] == ids


async def test_resume_by_last_event_id_loses_and_repeats_nothing(alice):
    out = await start(alice, "t-resume", "/count 40")
    await alice.wait_status(out["taskId"], *AT_REST)
    _, full, _ = await read_events(alice, "t-resume", "?idle_limit=1")
    assert len(full) > 40
    for cut in (1, 7, len(full) // 2, len(full) - 1):
        _, head, _ = await read_events(alice, "t-resume", "?idle_limit=1", stop=lambda evs, n=cut: len(evs) >= n)
        head = head[:cut]
        last = head[-1].id
        for query, headers in (("?idle_limit=1", {"Last-Event-ID": str(last)}), (f"?idle_limit=1&lastEventId={last}", {})):
            _, tail, _ = await read_events(alice, "t-resume", query, headers)
            assert [f.id for f in head + tail] == [f.id for f in full], query
            assert [f.data for f in head + tail] == [f.data for f in full]


async def test_resume_of_a_live_run(alice):
    out = await start(alice, "t-live", "/sleep 0.3")
    _, head, _ = await read_events(alice, "t-live", stop=lambda evs: len(evs) >= 2)
    _, tail, _ = await read_events(alice, "t-live", "?idle_limit=1", headers={"Last-Event-ID": str(head[1].id)})
    events = payloads(head[:2] + tail)
    assert [e["type"] for e in events][:2] == ["run.started", "step.started"]
    assert events[-1]["type"] == "run.finished" and events[-1]["taskId"] == out["taskId"]
    assert len({f.id for f in head[:2] + tail}) == len(events)


async def test_the_stream_spans_consecutive_runs_and_closes_when_idle(alice):
    first = await start(alice, "t-span", "/count 3", run_id="r-a")
    started: list[asyncio.Future[Any]] = []

    def on_event(evs: list[Frame]) -> None:
        # After the first run ends, start the second on the same thread, from inside the stream.
        if not started and any(f.event == "run.finished" for f in evs):
            started.append(asyncio.ensure_future(start(alice, "t-span", "/count 2", msg_id="u-b", run_id="r-b")))

    t0 = time.monotonic()
    code, frames, _ = await read_events(alice, "t-span", "?idle_limit=1", on_event=on_event)
    elapsed = time.monotonic() - t0
    assert code == 200 and started
    second = await started[0]
    events = payloads(frames)
    runs = [(e["runId"], e["type"]) for e in events if e["type"] in ("run.started", "run.finished")]
    assert runs == [("r-a", "run.started"), ("r-a", "run.finished"), ("r-b", "run.started"), ("r-b", "run.finished")]
    assert {e["taskId"] for e in events} == {first["taskId"], second["taskId"]}
    deltas = [e["data"]["delta"] for e in events if e["type"] == "text.delta"]
    assert deltas == ["1 ", "2 ", "3 ", "1 ", "2 "]
    assert 1.0 <= elapsed < 10


async def test_idle_limit_closes_a_stream_with_nothing_running(alice):
    out = await start(alice, "t-idle", "hi")
    await alice.wait_status(out["taskId"], *AT_REST)
    t0 = time.monotonic()
    code, frames, _ = await read_events(alice, "t-idle", "?idle_limit=1")
    assert code == 200 and frames[-1].event == "run.finished"
    assert 0.9 <= time.monotonic() - t0 < 5
    # A parked run waits for a person: idle too.
    parked = await start(alice, "t-idle", "/approve later", msg_id="u-park", run_id="r-park")
    assert (await alice.wait_status(parked["taskId"], *AT_REST))["status"] == "parked"
    t0 = time.monotonic()
    code, frames, _ = await read_events(alice, "t-idle", "?idle_limit=1")
    assert code == 200 and frames[-1].event == "job.parked"
    assert 0.9 <= time.monotonic() - t0 < 5
    await alice.request("DELETE", f"/task/{parked['taskId']}")


async def test_a_running_task_keeps_the_stream_open_past_the_idle_limit(alice):
    out = await start(alice, "t-busy-stream", "/sleep 1.5")
    t0 = time.monotonic()
    _, frames, _ = await read_events(alice, "t-busy-stream", "?idle_limit=1")
    assert frames[-1].event == "run.finished" and frames[-1].id is not None
    assert json.loads(frames[-1].data)["taskId"] == out["taskId"]
    assert time.monotonic() - t0 >= 2.4  # 1.5 s of run, then 1 s idle


@pytest.mark.parametrize("value", ["0", "3601", "-5", "abc", "1.5"])
async def test_idle_limit_out_of_range_is_422(alice, value):
    out = await start(alice, "t-limit", "hi")
    await alice.wait_status(out["taskId"], *AT_REST)
    code, _, raw = await read_events(alice, "t-limit", f"?idle_limit={value}")
    assert code == 422 and set(json.loads(raw)) == {"detail"}


async def test_bad_last_event_id_is_422(alice):
    out = await start(alice, "t-cursor", "hi")
    await alice.wait_status(out["taskId"], *AT_REST)
    code, _, raw = await read_events(alice, "t-cursor", headers={"Last-Event-ID": "later"})
    assert code == 422 and "detail" in json.loads(raw)


async def test_streams_and_history_are_the_owners_only(alice, bob):
    out = await start(alice, "t-private", "secret words")
    await alice.wait_status(out["taskId"], *AT_REST)
    code, frames, raw = await read_events(bob, "t-private", "?idle_limit=1", headers={"Last-Event-ID": "0"})
    assert code == 403 and frames == [] and set(json.loads(raw)) == {"detail"}
    assert b"secret" not in raw and out["taskId"].encode() not in raw
    resp = await bob.request("GET", "/api/v1/agent/history?threadId=t-private")
    assert resp.code == 403 and b"secret" not in resp.body
    # bob's own latest thread is not alice's
    mine = body(await bob.request("GET", "/api/v1/agent/history"))
    assert mine == {"scope": "history_day", "threadId": None, "day": None, "hasMore": False, "messages": []}
    code, _, raw = await read_events(alice, "t-nobody", "?idle_limit=1")
    assert code == 404 and set(json.loads(raw)) == {"detail"}


async def test_a_thread_stream_sees_no_other_thread(alice, bob):
    mine = await start(alice, "t-mine", "/sleep 0.5")
    theirs = await start(bob, "t-theirs", "/count 5")
    _, frames, _ = await read_events(alice, "t-mine", "?idle_limit=1")
    assert {e["taskId"] for e in payloads(frames)} == {mine["taskId"]}
    assert theirs["taskId"] not in str(payloads(frames))


# -- GET /history -------------------------------------------------------------------------

DAY_MS = 86_400_000


async def test_history_day_snapshots(alice, parley):
    for n, text in enumerate(("first day", "second day", "third day")):
        out = await start(alice, "t-hist", text, msg_id=f"h{n}", run_id=f"r{n}")
        await alice.wait_status(out["taskId"], *AT_REST)
    # Move the runs to 2026-03-13, -14 and -15 (UTC), 10:00 and 10:00:05.
    base = 1773396000000  # 2026-03-13T10:00:00Z

    def backdate(tx: Any) -> None:
        rows = tx.fetchall("SELECT id, seq FROM messages WHERE thread_id = 't-hist' ORDER BY seq")
        for id_, seq in rows:
            day, second = divmod(seq - 1, 2)
            tx.execute("UPDATE messages SET created_at = ? WHERE thread_id = 't-hist' AND id = ?",
                       (base + day * DAY_MS + second * 5000, id_))

    await parley.db.write(backdate)

    latest = body(await alice.request("GET", "/api/v1/agent/history?threadId=t-hist"))
    assert latest["scope"] == "history_day" and latest["threadId"] == "t-hist"
    assert latest["day"] == "2026-03-15" and latest["hasMore"] is True
    user, reply = latest["messages"]
    assert user == {"id": "h2", "seq": 5, "role": "user", "content": "third day", "url": None,
                    "timestamp": "2026-03-15T10:00:00.000Z", "parts": [{"type": "text", "text": "third day"}]}
    assert reply["role"] == "assistant" and reply["seq"] == 6 and reply["content"] == 'You said: "third day"'
    assert reply["timestamp"] == "2026-03-15T10:00:05.000Z"

    before = body(await alice.request("GET", "/api/v1/agent/history?threadId=t-hist&before=2026-03-15"))
    assert before["day"] == "2026-03-14" and before["hasMore"] is True
    assert before["messages"][0]["id"] == "h1"
    oldest = body(await alice.request("GET", "/api/v1/agent/history?threadId=t-hist&before=2026-03-14"))
    assert oldest["day"] == "2026-03-13" and oldest["hasMore"] is False and oldest["messages"][0]["content"] == "first day"
    none = body(await alice.request("GET", "/api/v1/agent/history?threadId=t-hist&before=2026-03-13"))
    assert none == {"scope": "history_day", "threadId": "t-hist", "day": None, "hasMore": False, "messages": []}
    # Without threadId: the user's latest thread.
    assert body(await alice.request("GET", "/api/v1/agent/history"))["threadId"] == "t-hist"


@pytest.mark.parametrize("value", ["2026-3-15", "15.03.2026", "2026-02-30", "yesterday", ""])
async def test_history_bad_date_is_422(alice, value):
    resp = await alice.request("GET", f"/api/v1/agent/history?threadId=t-x&before={value}")
    assert resp.code == 422 and set(body(resp)) == {"detail"}


# -- POST /ag-ui: framing (the real client's proof is tests/protocol/test_ag_ui.py) ------------

def ag_ui_events(raw: bytes) -> list[dict[str, Any]]:
    """The events of an AG-UI body; asserts that every frame but a comment is `data:` lines only."""
    assert b"\r" not in raw
    out = []
    for frame in parse_frames(raw):
        if frame.raw.startswith(b":"):
            continue
        lines = frame.raw.removesuffix(b"\n\n").split(b"\n")
        assert all(line.startswith(b"data: ") for line in lines), frame.raw
        out.append(json.loads(frame.data))
    return out


def has_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(has_null(v) for v in value)
    return False


async def test_ag_ui_stream_is_data_frames_of_typed_objects(alice):
    resp = await alice.request("POST", AG_UI, run_input("t-agui", "/tool calculator 6*7", run_id="agui-1"))
    assert resp.code == 200 and resp.headers["Content-Type"] == "text/event-stream"
    events = ag_ui_events(resp.body)
    assert all(isinstance(e, dict) and isinstance(e.get("type"), str) for e in events)
    assert not any(has_null(e) for e in events)
    assert events[0] == {"type": "RUN_STARTED", "threadId": "t-agui", "runId": "agui-1"}
    assert events[-1] == {"type": "RUN_FINISHED", "threadId": "t-agui", "runId": "agui-1"}
    types = [e["type"] for e in events]
    for kind in ("TEXT_MESSAGE", "TOOL_CALL"):
        assert types.index(f"{kind}_START") < types.index(f"{kind}_END")
    assert types.count("STEP_STARTED") == types.count("STEP_FINISHED")
    (result,) = [e for e in events if e["type"] == "TOOL_CALL_RESULT"]
    assert json.loads(result["content"]) == {"expression": "6*7", "result": 42}


async def test_ag_ui_refusals_are_json_before_any_event(alice):
    out = await start(alice, "t-agui-busy", "/approve hold")
    assert (await alice.wait_status(out["taskId"], *AT_REST))["status"] == "parked"
    resp = await alice.request("POST", AG_UI, run_input("t-agui-busy", "more", run_id="agui-2"))
    assert resp.code == 409 and resp.headers["Content-Type"].startswith("application/json")
    assert body(resp)["detail"] and b"data:" not in resp.body
    await alice.request("DELETE", f"/task/{out['taskId']}")


async def test_ag_ui_failed_run_ends_with_run_error(alice):
    resp = await alice.request("POST", AG_UI, run_input("t-agui-fail", "/fail", run_id="agui-3"))
    events = ag_ui_events(resp.body)
    assert events[-1] == {"type": "RUN_ERROR", "message": "The demo agent failed on purpose (/fail).", "code": "demo_failure"}
    assert not any(e["type"] == "RUN_FINISHED" for e in events)
