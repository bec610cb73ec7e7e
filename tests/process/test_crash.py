"""kill -9 and parked runs (SPEC sections 3, 6 and 13), against a real process."""
from __future__ import annotations

import signal

from tests.process.proc import Server


def _assert_parked_and_locked(server: Server, task_id: str, thread_id: str) -> None:
    info = server.task(task_id)
    assert info["status"] == "parked", info
    assert info["parked"] and info["parked"]["correlationKey"], info
    current = server.current_task(thread_id)
    assert current is not None and current["taskId"] == task_id
    busy = server.request("POST", "/task", {"threadId": thread_id, "content": "hello"})
    assert busy.status == 409, busy.body
    assert busy.json()["taskId"] == task_id


def test_parked_task_stays_parked_through_drain_and_kill(start_server):
    server = start_server(drain_timeout=30)
    task_id = server.start_task("park-t", "/approve ship it")
    parked = server.wait_status(task_id, ("parked",))
    _assert_parked_and_locked(server, task_id, "park-t")

    # Drain: a parked task holds no process, so the drain neither waits for it nor ends it.
    server.signal(signal.SIGTERM)
    assert server.wait_exit(10) == 0, server.log_tail()

    second = start_server(server.data_dir)
    _assert_parked_and_locked(second, task_id, "park-t")
    assert second.task(task_id)["parked"] == parked["parked"]

    # Crash: recovery leaves parked tasks alone.
    second.kill()
    third = start_server(server.data_dir)
    _assert_parked_and_locked(third, task_id, "park-t")
    assert third.task(task_id)["parked"] == parked["parked"]


def test_crash_keeps_every_seen_event_and_ends_the_run_interrupted(start_server):
    server = start_server(demo_delay_ms=1)
    task_id = server.start_task("crash-t", "/count 100000")
    live = server.stream(task_id)
    assert live.status == 200
    live.wait_for(lambda r: len(r.deltas) >= 50 and len(r.data_frames) >= 5, 10, "50 deltas")

    server.kill()
    live.wait_over(10)  # the connection dies with the process
    seen = live.snapshot()
    assert seen and all(f.event is None for f in seen), "no terminal frame before the crash"
    seen_ids = [f.id for f in seen]
    assert all(i is not None for i in seen_ids)
    assert seen_ids == sorted(set(seen_ids)), f"live ids must strictly increase: {seen_ids}"
    seen_chunks = [c for f in seen for c in f.chunks]
    seen_deltas = [c["delta"] for c in seen_chunks if c.get("type") == "text-delta"]
    assert seen_deltas == [f"{k} " for k in range(1, len(seen_deltas) + 1)]
    max_seen = max(seen_ids)

    again = start_server(server.data_dir)
    info = again.task(task_id)
    assert info["status"] == "failed", info
    assert info["error"]["reason"] == "interrupted", info
    assert again.current_task("crash-t") is None

    # Full replay: everything seen is still there, in the same order, same content.
    replay = again.replay(task_id, last_event_id=0)
    assert replay.status == 200
    assert replay.broken is None and replay.ended
    replay_ids = [f.id for f in replay.data_frames]
    assert replay_ids == sorted(set(replay_ids)), "replayed ids must strictly increase (never repeat)"
    assert replay.chunks[: len(seen_chunks)] == seen_chunks
    term = replay.terminal
    assert term is not None and term.event == "error", replay.snapshot()[-2:]
    assert term.id is not None and term.id > max(replay_ids) >= max_seen

    # Every id the client saw is still a cursor that resumes exactly after its frame.
    for frame, before in ((seen[-1], seen[-2]), (seen[len(seen) // 2], seen[len(seen) // 2 - 1])):
        after_frame = again.replay(task_id, last_event_id=frame.id)
        index = sum(len(f.chunks) for f in seen[: seen.index(frame) + 1])
        assert after_frame.chunks == replay.chunks[index:]
        assert after_frame.terminal is not None and after_frame.terminal.id == term.id
        from_before = again.replay(task_id, last_event_id=before.id)
        assert from_before.chunks[: len(frame.chunks)] == frame.chunks, f"frame {frame.id} changed"

    # The lock is free, and new events never reuse an id seen before the crash.
    new_id = again.start_task("crash-t", "/count 3")
    fresh = again.stream(new_id)
    fresh.wait_ended(10)
    assert fresh.terminal is not None and fresh.terminal.event == "done"
    assert fresh.deltas == ["1 ", "2 ", "3 "]
    assert min(fresh.ids) > term.id > max_seen
