"""A parked job survives kill -9 and still takes its signal after the restart (SPEC sections 6, 7, 11)."""
from __future__ import annotations

from tests.process.proc import Server


def _key(server: Server, task_id: str) -> str:
    return server.task(task_id)["parked"]["correlationKey"]


def test_parked_job_takes_its_signal_after_a_crash(start_server):
    server = start_server()
    resp = server.request("POST", "/api/runs", {"workflow_id": "w", "input": {"agent_id": "demo", "message": "/approve ship it"}})
    assert resp.status == 201, resp.body
    job_id = resp.json()["job_id"]
    server.wait_status(job_id, ("parked",))
    key = _key(server, job_id)
    server.kill()

    again = start_server(server.data_dir)
    assert again.task(job_id)["status"] == "parked"
    resp = again.request("POST", f"/api/jobs/{job_id}/signal", {"correlation_key": key, "payload": {"approved": True}})
    assert resp.status == 200, resp.body
    done = again.wait_status(job_id, ("completed", "failed"))
    assert done["status"] == "completed", done
    replay = again.replay(job_id)
    assert replay.terminal is not None and replay.terminal.event == "done"
    assert "Approved: ship it" in "".join(replay.deltas)
    # A repeat of the taken signal is answered and runs nothing again.
    resp = again.request("POST", f"/api/jobs/{job_id}/signal", {"correlation_key": key, "payload": {"approved": False}})
    assert resp.status == 200 and resp.json()["status"] == "completed"
    trace = again.request("GET", f"/api/jobs/{job_id}/trace").json()
    assert [e["event"] for e in trace["timeline"]].count("SignalReceived") == 1
