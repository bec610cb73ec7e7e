"""RunManager edge cases that need no HTTP."""
from runs.start import StartRequest
from tests.runs.harness import TaskWatch


def _msg(text, mid="m1"):
    return {"id": mid, "role": "user", "parts": [{"type": "text", "text": text}]}


async def test_abort_before_the_runner_started_still_ends_the_task(parley):
    task = await parley.runs.start_run(StartRequest("alice", "t-early-abort", _msg("/sleep 30")))
    await parley.runs.abort(task.id)  # no await between: the runner has not taken a step
    ended = await parley.runs.get_task(task.id)
    assert ended.status == "cancelled"
    last = await parley.runs.last_event(task.id)
    assert last.type == "run.error" and last.data["status"] == "cancelled"


async def test_abort_right_after_a_signal_ends_the_resumed_run_cancelled(parley):
    """signal() returns with the resumed runner spawned but not yet stepped; an abort then reaches it
    before the agent runs again, so the run ends cancelled, never completed."""
    task = await parley.runs.start_run(StartRequest("alice", "t-resume-abort", _msg("/approve x")))
    watch = TaskWatch(parley.hub, task.id)
    parked = await watch.parked()
    await parley.runs.signal(task.id, parked.data["correlationKey"], {"approved": True})
    await parley.runs.abort(task.id)
    ended = await parley.runs.get_task(task.id)
    assert ended.status == "cancelled"
    assert ended.error == {"reason": "cancelled", "message": "The run was cancelled."}
    types = [e.type for e in await parley.runs.task_events(task.id)]
    assert types[types.index("job.signal"):] == ["job.signal", "run.error"]  # the agent took no step after it
    assert (await parley.runs.current_task("t-resume-abort", "alice")) is None
