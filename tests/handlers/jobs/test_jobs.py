"""The job surface (seed 003): jobs are tasks; signals wake parked jobs; trace and events."""
import json
import re

from auth.ratelimit import SlidingWindow
from runs.manager import StartRequest
from tests.helpers import body, parse_frames, text_of

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def submit(client, message, **inp):
    resp = await client.request("POST", "/api/runs", {"workflow_id": "agent_message", "input": {"agent_id": "demo", "message": message, **inp}})
    assert resp.code == 201, (resp.code, resp.body)
    return body(resp)


async def test_submit_then_read_job_and_trace(alice):
    created = await submit(alice, "hello jobs")
    assert created["status"] == "pending" and ISO.match(created["created_at"])
    job = await alice.wait_job(created["job_id"], "completed")
    assert job["status"] == "completed" and job["agent_id"] == "demo" and job["thread_id"]
    assert set(job) == {"job_id", "status", "agent_id", "current_node", "thread_id", "created_at"}
    trace = body(await alice.request("GET", f"/api/jobs/{created['job_id']}/trace"))
    events = [e["event"] for e in trace["timeline"]]
    assert trace["job_id"] == created["job_id"]
    assert events[0] == "JobCreated" and events[-1] == "JobCompleted" and "StepStarted" in events
    assert all(ISO.match(e["time"]) for e in trace["timeline"])


async def test_parked_job_signal_flow(alice):
    created = await submit(alice, "/approve refund order-123")
    job_id = created["job_id"]
    job = await alice.wait_job(job_id, "parked")
    assert job["status"] == "parked" and job["current_node"] == "wait_approval"
    trace = body(await alice.request("GET", f"/api/jobs/{job_id}/trace"))
    parked = next(e for e in trace["timeline"] if e["event"] == "JobParked")
    key = parked["correlation_key"]
    assert parked["node"] == "wait_approval" and key

    wrong = await alice.request("POST", f"/api/jobs/{job_id}/signal", {"correlation_key": "nope", "payload": {}})
    assert wrong.code == 400 and body(wrong)["error"]["code"] == "INVALID_SIGNAL_KEY"
    assert set(body(wrong)["error"]) == {"code", "message", "details"}

    ok = await alice.request("POST", f"/api/jobs/{job_id}/signal", {"correlation_key": key, "payload": {"approved": True, "reason": "fair"}})
    assert ok.code == 200 and body(ok)["job_id"] == job_id
    again = await alice.request("POST", f"/api/jobs/{job_id}/signal", {"correlation_key": key, "payload": {"approved": False}})
    assert again.code == 200
    await alice.wait_job(job_id, "completed")
    trace = body(await alice.request("GET", f"/api/jobs/{job_id}/trace"))
    signals = [e for e in trace["timeline"] if e["event"] == "SignalReceived"]
    assert len(signals) == 1 and signals[0]["payload"] == {"approved": True, "reason": "fair"}
    assert trace["timeline"][-1]["event"] == "JobCompleted"
    # The same run on the native surface.
    info = await alice.task(job_id)
    messages = body(await alice.request("GET", f"/messages/{info['threadId']}"))["messages"]
    assert "Approved: refund order-123 (reason: fair)" in messages[-1]["parts"][-1]["text"]

    late = await alice.request("POST", f"/api/jobs/{job_id}/signal", {"correlation_key": "other", "payload": {}})
    assert late.code == 400 and body(late)["error"]["code"] == "JOB_NOT_PARKED"


async def test_signal_before_the_park_is_kept(parley, alice):
    msg = {"id": "m-early", "role": "user", "parts": [{"type": "text", "text": "/approve early bird"}]}
    task = await parley.runs.start_run(StartRequest("alice", "early-thread", msg))
    # The runner has not run yet: this signal reaches the store before the park.
    early = await parley.runs.signal(task.id, f"approval-{task.id}-1", {"approved": False, "reason": "too soon"})
    assert early.status in ("pending", "running")
    job = await alice.wait_job(task.id, "completed")
    assert job["status"] == "completed"
    _, frames = await alice.stream(task.id)
    assert "Rejected: early bird (reason: too soon)" in text_of(frames)


async def test_unknown_and_foreign_jobs(alice, bob):
    resp = await alice.request("GET", "/api/jobs/nope")
    assert resp.code == 404 and body(resp)["error"]["code"] == "JOB_NOT_FOUND"
    resp = await alice.request("POST", "/api/jobs/nope/signal", {"correlation_key": "k"})
    assert resp.code == 404 and body(resp)["error"]["code"] == "JOB_NOT_FOUND"
    created = await submit(alice, "/sleep 5")
    for method, path in (("GET", ""), ("GET", "/trace"), ("GET", "/events"), ("POST", "/stop")):
        resp = await bob.request(method, f"/api/jobs/{created['job_id']}{path}", body={} if method == "POST" else None)
        assert resp.code == 403, (method, path)
        assert created["job_id"] not in resp.body.decode()
    resp = await bob.request("POST", f"/api/jobs/{created['job_id']}/signal", {"correlation_key": "k"})
    assert resp.code == 403
    await alice.request("POST", f"/api/jobs/{created['job_id']}/stop", {})


async def test_stop_cancels_and_trace_ends_cancelled(alice):
    created = await submit(alice, "/sleep 30")
    resp = await alice.request("POST", f"/api/jobs/{created['job_id']}/stop", {})
    assert resp.code == 200 and body(resp)["status"] == "cancelled"
    trace = body(await alice.request("GET", f"/api/jobs/{created['job_id']}/trace"))
    assert trace["timeline"][-1]["event"] == "JobCancelled"


async def test_bad_submissions(alice):
    cases = [
        ({"input": {"message": "x"}}, 422),
        ({"workflow_id": "w"}, 422),
        ({"workflow_id": "w", "input": {"message": ""}}, 422),
        ({"workflow_id": "w", "input": {"message": "x", "agent_id": "ghost"}}, 404),
        ({"workflow_id": "w", "input": {"message": "x", "thread_id": "t" * 129}}, 422),
    ]
    for payload, code in cases:
        resp = await alice.request("POST", "/api/runs", payload)
        assert resp.code == code, (payload, resp.body)
        assert set(body(resp)["error"]) == {"code", "message", "details"}
    resp = await alice.request("POST", "/api/runs", raw=b"{nope")
    assert resp.code == 400 and body(resp)["error"]["code"] == "BAD_REQUEST"


async def test_busy_thread_is_409_naming_the_live_job(alice):
    first = await submit(alice, "/sleep 30", thread_id="job-thread")
    resp = await alice.request("POST", "/api/runs", {"workflow_id": "w", "input": {"message": "again", "thread_id": "job-thread"}})
    assert resp.code == 409 and body(resp)["error"]["details"]["job_id"] == first["job_id"]
    await alice.request("POST", f"/api/jobs/{first['job_id']}/stop", {})


async def test_events_stream_timeline_and_resume(alice):
    created = await submit(alice, "/tool calculator 6*7")
    await alice.wait_job(created["job_id"], "completed")
    resp = await alice.request("GET", f"/api/jobs/{created['job_id']}/events")
    assert resp.code == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    frames = [f for f in parse_frames(resp.body) if f.id is not None]
    entries = [json.loads(f.data) for f in frames]
    assert entries[0]["event"] == "JobCreated" and entries[-1]["event"] == "JobCompleted"
    assert {"event": "ToolCompleted", "node": "calculator"}.items() <= next(e for e in entries if e["event"] == "ToolCompleted").items()
    cut = frames[2].id
    resp = await alice.request("GET", f"/api/jobs/{created['job_id']}/events", headers={"Last-Event-ID": str(cut)})
    rest = [json.loads(f.data) for f in parse_frames(resp.body) if f.id is not None]
    assert rest == entries[3:]


async def test_native_run_reads_on_job_surface(alice):
    task_id = await alice.start_ok("cross", "/count 3")
    await alice.stream(task_id)
    job = body(await alice.request("GET", f"/api/jobs/{task_id}"))
    assert job["job_id"] == task_id and job["status"] == "completed" and job["thread_id"] == "cross"


async def test_job_run_reads_on_native_surface(alice):
    created = await submit(alice, "/count 4", thread_id="cross-2")
    _, frames = await alice.stream(created["job_id"])
    assert text_of(frames) == "1 2 3 4 " and frames[-1].event == "done"
    info = await alice.task(created["job_id"])
    assert info["threadId"] == "cross-2" and info["status"] == "completed"


async def test_rate_limits_answer_429_with_retry_after(parley, alice, bob):
    parley.app.settings["job_limits"]["reads"] = SlidingWindow(3)
    created = await submit(alice, "hi")
    codes = [(await alice.request("GET", f"/api/jobs/{created['job_id']}")).code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    resp = await alice.request("GET", f"/api/jobs/{created['job_id']}")
    assert body(resp)["error"]["code"] == "RATE_LIMITED" and int(resp.headers["Retry-After"]) >= 1
    assert (await bob.request("GET", "/api/jobs/nope")).code == 404  # per user


async def test_version(http_server_client):
    resp = await http_server_client.fetch("/api/version")
    assert json.loads(resp.body)["service"] == "parley"


async def test_sliding_window_slides():
    now = [0.0]
    window = SlidingWindow(2, 60, clock=lambda: now[0])
    assert await window.hit("u") == 0 and await window.hit("u") == 0
    assert await window.hit("u") == 60
    now[0] = 30
    assert await window.hit("u") == 30
    now[0] = 60.5
    assert await window.hit("u") == 0
