"""Graceful drain on SIGTERM / SIGINT (SPEC sections 1 and 6), against a real process."""
from __future__ import annotations

import signal
import time

import pytest

from tests.process.proc import Server, wait_until

COUNT = 200
EXPECTED = [f"{k} " for k in range(1, COUNT + 1)]


def _check_draining_surface(server: Server, task_id: str) -> None:
    """SPEC 6.1: health says draining, run starts are refused, reads keep working."""
    health = server.request("GET", "/health", auth=False)
    assert health.status == 503, health.body
    assert health.json() == {"status": "draining"}
    refused = server.request("POST", "/task", {"threadId": "drain-other", "content": "hello"})
    assert refused.status == 503, refused.body
    info = server.request("GET", f"/task/{task_id}")
    assert info.status == 200, info.body
    assert info.json()["status"] in ("pending", "running")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_drain_lets_the_run_finish(start_server, signum):
    server = start_server(demo_delay_ms=10, drain_timeout=20)
    task_id = server.start_task("drain-t", f"/count {COUNT}")
    reader = server.stream(task_id)
    assert reader.status == 200
    reader.wait_for(lambda r: len(r.deltas) >= 3, 10, "the first deltas")

    server.signal(signum)
    # The signal is handled asynchronously: the first answers may still be "ok".
    wait_until(lambda: server.request("GET", "/health", auth=False).status == 503, 5, "/health → 503")
    assert len(reader.deltas) < COUNT, "the run finished before the drain could be observed; slow it down"
    _check_draining_surface(server, task_id)

    reader.wait_ended(20)
    assert reader.broken is None, f"stream broke: {reader.broken!r}\n{server.log_tail()}"
    assert reader.deltas == EXPECTED
    term = reader.terminal
    assert term is not None and term.event == "done", reader.snapshot()[-3:]
    assert reader.chunks[-1] == {"type": "finish"}
    live_ids = [f.id for f in reader.data_frames]
    assert live_ids == sorted(set(live_ids)), "live frame ids must strictly increase"
    assert term.id == live_ids[-1], "the finish frame and `event: done` both carry run.finished's id"
    live_chunks = reader.chunks

    assert server.wait_exit(10) == 0, server.log_tail()

    again = start_server(server.data_dir)
    info = again.task(task_id)
    assert info["status"] == "completed"
    assert info["error"] is None
    assert again.current_task("drain-t") is None
    replay = again.replay(task_id)
    assert replay.status == 200
    assert replay.broken is None
    assert replay.chunks == live_chunks
    assert replay.deltas == EXPECTED
    assert replay.terminal is not None and replay.terminal.event == "done"
    assert replay.terminal.id == term.id


def test_drain_deadline_fails_the_run_with_shutdown(start_server):
    server = start_server(drain_timeout=1)
    task_id = server.start_task("deadline-t", "/sleep 30")
    server.wait_status(task_id, ("running",))
    reader = server.stream(task_id)
    assert reader.status == 200
    reader.wait_for(lambda r: r.chunks, 5, "the replayed start chunks")

    sent = time.monotonic()
    server.signal(signal.SIGTERM)
    wait_until(lambda: server.request("GET", "/health", auth=False).status == 503, 5, "/health → 503")
    _check_draining_surface(server, task_id)

    reader.wait_ended(10)
    ended_after = time.monotonic() - sent
    assert reader.broken is None, f"stream broke instead of ending: {reader.broken!r}\n{server.log_tail()}"
    term = reader.terminal
    assert term is not None and term.event == "error", reader.snapshot()[-3:]
    assert term.data, "the error frame carries the error as plain text"
    assert 0.8 <= ended_after < 5, f"the run ended {ended_after:.2f}s after SIGTERM (drain timeout 1s)"

    code = server.wait_exit(10)
    assert code == 0, server.log_tail()

    again = start_server(server.data_dir)
    info = again.task(task_id)
    assert info["status"] == "failed"
    assert info["error"]["reason"] == "shutdown"
    assert again.current_task("deadline-t") is None
    replay = again.replay(task_id)
    assert replay.terminal is not None and replay.terminal.event == "error"
    assert replay.terminal.id == term.id
    assert again.start_task("deadline-t", "hello again")


def test_second_signal_exits_at_once(start_server):
    server = start_server(drain_timeout=30)
    task_id = server.start_task("second-t", "/sleep 30")
    server.wait_status(task_id, ("running",))
    server.signal(signal.SIGTERM)
    wait_until(lambda: server.request("GET", "/health", auth=False).status == 503, 5, "/health → 503")
    sent = time.monotonic()
    server.signal(signal.SIGTERM)
    server.wait_exit(5)  # any exit code; only "at once" matters
    assert time.monotonic() - sent < 5

    # Like a crash: the next start ends the run `interrupted`.
    again = start_server(server.data_dir)
    info = again.task(task_id)
    assert info["status"] == "failed"
    assert info["error"]["reason"] == "interrupted"
    assert again.current_task("second-t") is None


def test_idle_server_drains_at_once(start_server):
    server = start_server(drain_timeout=30)
    sent = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(10) == 0, server.log_tail()
    assert time.monotonic() - sent < 5, "nothing runs: the drain must not wait out its timeout"
