"""Resume cursors on every stream route (SPEC 13): beyond the log → 400, a terminal task's stream always ends,
and the query spellings of seed 002 (`?Last-Event-ID=`) and the common one (`?lastEventId=`)."""
from __future__ import annotations

import asyncio
import json

import pytest

from tests.helpers import INTERNAL_KEY, parse_frames

# Each stream route, its surface's error shape, and whether a thread (rather than a task) is streamed.
ROUTES = {
    "native": "/stream/{task}",
    "jobs": "/api/jobs/{task}/events",
    "agent_api": "/api/v1/agent/runs/{thread}/events?idle_limit=1",
}
H = {"X-Internal-Key": INTERNAL_KEY, "X-User-Id": "alice"}
TIMEOUT = 10  # a stream that should have ended fails the test quickly instead of at the suite's timeout


async def _get(http, path, headers=None):
    return await http.fetch(path, headers={**H, **(headers or {})}, raise_error=False, request_timeout=TIMEOUT)


async def _finished(alice, thread, content="/count 3"):
    task = await alice.start_ok(thread, content)
    code, frames = await alice.stream(task)
    assert code == 200 and frames[-1].event == "done"
    return task


def _route(name, task, thread):
    return ROUTES[name].format(task=task, thread=thread)


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("cursor", ["9223372036854775808", str(10**30), "99999999"])
async def test_cursor_beyond_the_log_is_400(http_server_client, alice, route, cursor):
    task = await _finished(alice, "t1")
    path = _route(route, task, "t1")
    answers = [await _get(http_server_client, path, {"Last-Event-ID": cursor})]
    # The same through the query, under both names.
    for name in ("Last-Event-ID", "lastEventId"):
        answers.append(await _get(http_server_client, f"{path}{'&' if '?' in path else '?'}{name}={cursor}"))
    for resp in answers:
        if route == "native":  # an ended run answers a later cursor with its terminal frame (as a cursor at its end)
            assert resp.code == 200, (resp.code, resp.body)
            assert [f.event for f in parse_frames(resp.body)] == ["done"]
        else:
            assert resp.code == 400, (resp.code, resp.body)
            assert "Last-Event-ID" in resp.body.decode()


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_cursor_beyond_the_log_of_a_running_task_is_400(http_server_client, alice, route):
    task = await alice.start_ok("t2", "/sleep 30")
    try:
        resp = await _get(http_server_client, _route(route, task, "t2"), {"Last-Event-ID": str(10**12)})
        assert resp.code == 400, (resp.code, resp.body)
    finally:
        await alice.request("DELETE", f"/task/{task}")


async def test_stream_resumed_at_the_tip_of_a_running_task_ends_with_it(http_server_client, alice, parley):
    """A cursor at the last id (valid) on a running task: the stream goes on and ends with the run."""
    task = await alice.start_ok("t3", "/sleep 30")
    tip = parley.runs.last_event_id
    reader = asyncio.ensure_future(alice.stream(task, last_event_id=tip))
    await asyncio.sleep(0.2)
    assert not reader.done()
    assert (await alice.request("DELETE", f"/task/{task}")).code == 204
    code, frames = await asyncio.wait_for(reader, TIMEOUT)
    assert code == 200
    assert frames[-1].event == "error"
    assert all(f.id is None or f.id > tip for f in frames)


async def test_jobs_stream_of_a_terminal_task_resumed_at_its_end_ends(http_server_client, alice):
    task = await _finished(alice, "t4")
    timeline = await _get(http_server_client, f"/api/jobs/{task}/events")
    frames = [f for f in parse_frames(timeline.body) if f.id is not None]
    assert frames, timeline.body
    last = frames[-1].id
    resp = await _get(http_server_client, f"/api/jobs/{task}/events", {"Last-Event-ID": str(last)})
    assert resp.code == 200
    assert [f for f in parse_frames(resp.body) if f.id is not None] == []
    # A cursor after the task's end but inside the log (another task's event) ends too.
    await _finished(alice, "t5")
    resp = await _get(http_server_client, f"/api/jobs/{task}/events", {"Last-Event-ID": str(last + 3)})
    assert resp.code == 200


async def test_native_stream_resumed_after_the_end_gets_the_terminal_frame(http_server_client, alice):
    task = await _finished(alice, "t6")
    await _finished(alice, "t7")
    code, frames = await alice.stream(task, last_event_id=await _last_id(alice, task) + 2)
    assert code == 200
    assert [f.event for f in frames] == ["done"]


async def _last_id(alice, task):
    _, frames = await alice.stream(task)
    return max(f.id for f in frames if f.id is not None)


@pytest.mark.parametrize("name", ["Last-Event-ID", "lastEventId"])
async def test_query_cursor_spellings_resume(http_server_client, alice, parley, name):
    """Seed 002 documents `?Last-Event-ID=` on the Agent API's stream; every stream route takes both spellings."""
    task = await _finished(alice, "t8", "/count 5")
    ids = [e.id for e in await parley.runs.task_events(task)]
    middle = ids[len(ids) // 2]
    # native
    code, resumed = await alice.stream(task, query=f"?{name}={middle}")
    assert code == 200 and all(f.id > middle for f in resumed if f.id is not None and f.event is None)
    assert resumed[-1].event == "done"
    # agent API: from the cursor, not from the start of the latest run
    resp = await _get(http_server_client, f"/api/v1/agent/runs/t8/events?idle_limit=1&{name}={middle}")
    agent_ids = [f.id for f in parse_frames(resp.body) if f.id is not None]
    assert agent_ids and min(agent_ids) > middle, (middle, agent_ids)
    first = await _get(http_server_client, "/api/v1/agent/runs/t8/events?idle_limit=1")
    all_ids = [f.id for f in parse_frames(first.body) if f.id is not None]
    assert min(all_ids) <= middle  # without a cursor it starts before; so the query was honoured
    # jobs
    resp = await _get(http_server_client, f"/api/jobs/{task}/events?{name}={middle}")
    job_ids = [f.id for f in parse_frames(resp.body) if f.id is not None]
    assert all(i > middle for i in job_ids)


async def test_malformed_cursor_keeps_each_surface_status(http_server_client, alice):
    task = await _finished(alice, "t9")
    assert (await _get(http_server_client, f"/stream/{task}", {"Last-Event-ID": "abc"})).code == 400
    resp = await _get(http_server_client, "/api/v1/agent/runs/t9/events", {"Last-Event-ID": "abc"})
    assert resp.code == 422
    assert json.loads(resp.body)
