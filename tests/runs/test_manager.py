"""RunManager edge cases that need no HTTP."""
from runs.manager import StartRequest


def _msg(text, mid="m1"):
    return {"id": mid, "role": "user", "parts": [{"type": "text", "text": text}]}


async def test_abort_before_the_runner_started_still_ends_the_task(parley):
    task = await parley.runs.start_run(StartRequest("alice", "t-early-abort", _msg("/sleep 30")))
    await parley.runs.abort(task.id)  # no await between: the runner has not taken a step
    ended = await parley.runs.get_task(task.id)
    assert ended.status == "cancelled"
    last = await parley.runs.last_event(task.id)
    assert last.type == "run.error" and last.data["status"] == "cancelled"


async def test_abort_right_after_a_signal_ends_the_resumed_run(parley):
    task = await parley.runs.start_run(StartRequest("alice", "t-resume-abort", _msg("/approve x")))
    for _ in range(200):
        current = await parley.runs.get_task(task.id)
        if current.status == "parked":
            break
        import asyncio

        await asyncio.sleep(0.01)
    await parley.runs.signal(task.id, current.parked["correlationKey"], {"approved": True})
    await parley.runs.abort(task.id)
    assert (await parley.runs.get_task(task.id)).status in ("cancelled", "completed")
    assert (await parley.runs.current_task("t-resume-abort", "alice")) is None
