"""RunManager's status machine (SPEC 3 and 6), driven through its public methods:

    pending -> running -> (parked <-> running)* -> completed | failed | cancelled

Terminal states never change again; a thread has at most one live task; every task's log starts
with `run.started` and ends with exactly one of `run.finished` / `run.error`.

The agents are test-only (tests/runs/harness.py) and wait at checkpoints the test releases,
so every transition happens when the test says.  A crash is an agent raising GeneratorExit, what
the runner lets through untouched when the process goes down: the task stays as the store has it.
"""
from __future__ import annotations

import asyncio

import pytest

from agents.context import AgentError, RunContext
from runs.errors import Draining, SignalRefused, ThreadBusy
from runs.manager import RunManager
from runs.start import StartRequest
from store import NotFound
from store import tasks as tasks_sql
from store.tasks import TaskRow
from tests.runs.harness import (
    TERMINAL_EVENTS,
    AgentFn,
    Checkpoint,
    OpenRuns,
    TaskWatch,
    start,
    user_message,
)

CANCELLED = {"status": "cancelled", "reason": "cancelled", "message": "The run was cancelled."}
INTERRUPTED = {"status": "failed", "reason": "interrupted",
               "message": "The server stopped while the run was in progress."}
SHUTDOWN = {"status": "failed", "reason": "shutdown", "message": "The server shut down before the run finished."}


# -- test agents -----------------------------------------------------------------------------------

def waits_at(checkpoint: Checkpoint) -> AgentFn:
    """Says "working", waits at `checkpoint`, says "done"."""

    async def agent(ctx: RunContext) -> None:
        await ctx.say("working")
        await checkpoint.pass_through()
        await ctx.say("done")

    return agent


def asks(times: int, before_asking: Checkpoint | None = None) -> AgentFn:
    """Parks `times` times (after `before_asking`, if given), then says every payload it was woken with."""

    async def agent(ctx: RunContext) -> None:
        answers = [] if ctx.resume is None else [*ctx.resume.state["answers"], ctx.resume.payload]
        if len(answers) < times:
            if before_asking is not None:
                await before_asking.pass_through()
            await ctx.say(f"question {len(answers) + 1}")
            ctx.park("approve", f"May I ({len(answers) + 1})?", {"answers": answers})
        await ctx.say(f"answers: {answers}")

    return agent


async def fails(ctx: RunContext) -> None:
    await ctx.say("trying")
    raise AgentError("test_failure", "The test agent gave up.")


def dies_at(checkpoint: Checkpoint) -> AgentFn:
    """Says "working", then the process goes down at `checkpoint`: nothing more of the run is written."""

    async def agent(ctx: RunContext) -> None:
        await ctx.say("working")
        await checkpoint.pass_through()
        raise GeneratorExit

    return agent


def asks_then_dies_once_resumed(checkpoint: Checkpoint) -> AgentFn:
    """Parks once; the first time it is woken the process goes down (at `checkpoint`); then it completes."""
    woken = 0

    async def agent(ctx: RunContext) -> None:
        nonlocal woken
        if ctx.resume is None:
            ctx.park("approve", "May I?", {})  # raises Parked
        else:
            woken += 1
            await ctx.say(f"woken {woken} with {ctx.resume.payload}")
            if woken == 1:
                await checkpoint.pass_through()
                raise GeneratorExit

    return agent


async def dies_at_once(ctx: RunContext) -> None:
    raise GeneratorExit


# -- what every test checks --------------------------------------------------------------------------

async def one_life(runs: RunManager, task_id: str, last: str) -> list[str]:
    """The task's log starts with run.started and ends with one terminal event, `last`; its types."""
    types = [e.type for e in await runs.task_events(task_id)]
    assert types[0] == "run.started", types
    assert [t for t in types if t in TERMINAL_EVENTS] == [last], types
    assert types[-1] == last, types
    return types


async def ended_as(runs: RunManager, watch: TaskWatch, status: str, error: dict[str, str] | None = None) -> TaskRow:
    """Wait for the task's terminal event; check it, the row and the log agree on `status` (and `error`)."""
    event = await watch.ended()
    task = await runs.get_task(watch.task_id)
    assert task.status == status
    assert task.finished_at is not None and task.parked is None
    if status == "completed":
        assert event.type == "run.finished" and task.error is None
    else:
        assert error is not None
        assert event.type == "run.error" and event.data == error
        assert task.error == {"reason": error["reason"], "message": error["message"]}
    await one_life(runs, watch.task_id, event.type)
    assert (await runs.current_task(task.thread_id, task.user_id)) is None  # the thread is free
    return task


async def reply_text(runs: RunManager, thread_id: str) -> str:
    """The text of the thread's last assistant message."""
    reply = [m for m in await runs.history(thread_id) if m["role"] == "assistant"][-1]
    return " ".join(p["text"] for p in reply["parts"] if p["type"] == "text")


async def running(runs: RunManager, checkpoint: Checkpoint) -> None:
    """Wait until the agent reached `checkpoint` and all it wrote before is committed."""
    await checkpoint.reached.wait()
    await runs.db.committed()


async def settled(runs: RunManager) -> None:
    """Wait until every runner is gone: a park is committed (and published) before its runner unwinds."""
    await runs.wait_titles()


async def restart(runs: RunManager, open_runs: OpenRuns) -> RunManager:
    """The same store opened by a new process, recovered (SPEC 6)."""
    await runs.db.close()
    after = await open_runs()
    await after.recover()
    return after


# -- start, complete, fail ---------------------------------------------------------------------------

async def test_a_run_goes_pending_running_completed_and_frees_its_thread(runs, scripted):
    gate = Checkpoint()
    agent = scripted.script("waits", waits_at(gate))
    task = await runs.start_run(StartRequest("alice", "t1", user_message("go"), agent))
    assert task.status == "pending" and task.started_at is None
    watch = TaskWatch(runs.hub, task.id)
    await running(runs, gate)
    now = await runs.get_task(task.id)
    assert now.status == "running" and now.started_at is not None and now.finished_at is None
    assert (await runs.current_task("t1", "alice")).id == task.id
    gate.release()
    await ended_as(runs, watch, "completed")
    assert await reply_text(runs, "t1") == "working done"
    again_watch = await start(runs, "t1", "demo", "hello again", "m2")
    await ended_as(runs, again_watch, "completed")


async def test_an_agent_error_ends_the_run_failed_with_its_reason(runs, scripted):
    watch = await start(runs, "t1", scripted.script("fails", fails))
    await ended_as(runs, watch, "failed",
                   {"status": "failed", "reason": "test_failure", "message": "The test agent gave up."})
    assert await reply_text(runs, "t1") == "trying"


# -- the dedup lock ----------------------------------------------------------------------------------

async def test_a_start_on_a_thread_with_a_running_task_is_refused_with_its_id(runs, scripted):
    gate = Checkpoint()
    watch = await start(runs, "t1", scripted.script("waits", waits_at(gate)))
    task_id = watch.task_id
    await running(runs, gate)
    with pytest.raises(ThreadBusy) as refused:
        await start(runs, "t1", "demo", "me too", "m2")
    assert refused.value.task_id == task_id
    # The refused start wrote nothing: no message, no task.
    assert [m["id"] for m in await runs.history("t1")] == ["m1"]
    assert [t.id for t in await runs.agent_tasks("demo", "alice", None)] == []
    gate.release()
    await ended_as(runs, watch, "completed")


async def test_concurrent_starts_on_one_thread_start_exactly_one_task(runs, scripted):
    gate = Checkpoint()
    agent = scripted.script("waits", waits_at(gate))
    outcomes = await asyncio.gather(
        *(runs.start_run(StartRequest("alice", "t1", user_message("go", f"m{n}"), agent)) for n in range(8)),
        return_exceptions=True,
    )
    started = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(started) == 1, outcomes
    winner = started[0].id
    assert all(isinstance(o, ThreadBusy) and o.task_id == winner for o in outcomes if o is not started[0])
    watch = TaskWatch(runs.hub, winner)
    gate.release()
    await ended_as(runs, watch, "completed")


async def test_a_parked_task_holds_its_thread(runs, scripted):
    watch = await start(runs, "t1", scripted.script("asks", asks(1)))
    task_id = watch.task_id
    await watch.parked()
    with pytest.raises(ThreadBusy) as refused:
        await start(runs, "t1", "demo", "me too", "m2")
    assert refused.value.task_id == task_id
    assert (await runs.current_task("t1", "alice")).id == task_id


# -- park and resume ---------------------------------------------------------------------------------

async def test_a_signal_with_the_parked_key_resumes_the_run_to_its_end(runs, scripted):
    watch = await start(runs, "t1", scripted.script("asks", asks(1)))
    task_id = watch.task_id
    parked_event = await watch.parked()
    key = f"approval-{task_id}-1"
    assert parked_event.data == {"node": "approve", "correlationKey": key, "prompt": "May I (1)?"}
    parked = await runs.get_task(task_id)
    assert parked.status == "parked" and parked.current_node == "approve"
    assert parked.parked == {"correlationKey": key, "prompt": "May I (1)?"}
    await settled(runs)
    assert runs.live_runs == 0  # a parked task needs no runner
    woken = await runs.signal(task_id, key, {"approved": True})
    assert woken.status == "running" and woken.parked is None
    signal = await watch.next("job.signal")
    assert signal.data == {"correlationKey": key, "payload": {"approved": True}}
    await ended_as(runs, watch, "completed")
    types = await one_life(runs, task_id, "run.finished")
    assert types.index("job.parked") < types.index("job.signal")
    assert await reply_text(runs, "t1") == "question 1 answers: [{'approved': True}]"


async def test_parked_and_running_alternate_with_a_new_key_at_each_park(runs, scripted):
    watch = await start(runs, "t1", scripted.script("asks", asks(2)))
    task_id = watch.task_id
    first, second = f"approval-{task_id}-1", f"approval-{task_id}-2"
    assert (await watch.parked()).data["correlationKey"] == first
    await runs.signal(task_id, first, "yes")
    assert (await watch.parked()).data["correlationKey"] == second
    assert (await runs.get_task(task_id)).parked["correlationKey"] == second
    # The first key again is a repeat: answered, and nothing runs twice.
    repeat = await runs.signal(task_id, first, "yes again")
    assert repeat.status == "parked"
    await settled(runs)
    assert (await runs.get_task(task_id)).status == "parked" and runs.live_runs == 0
    await runs.signal(task_id, second, "sure")
    await ended_as(runs, watch, "completed")
    types = await one_life(runs, task_id, "run.finished")
    assert types.count("job.parked") == 2 and types.count("job.signal") == 2
    assert (await reply_text(runs, "t1")).endswith("answers: ['yes', 'sure']")


async def test_a_signal_with_a_wrong_key_is_refused_and_the_task_stays_parked(runs, scripted):
    watch = await start(runs, "t1", scripted.script("asks", asks(1)))
    task_id = watch.task_id
    await watch.parked()
    before = await runs.get_task(task_id)
    for wrong in ("nope", f"approval-{task_id}-2"):
        with pytest.raises(SignalRefused) as refused:
            await runs.signal(task_id, wrong, {"approved": True})
        assert refused.value.code == "INVALID_SIGNAL_KEY"
    after = await runs.get_task(task_id)
    assert after.status == "parked" and after.parked == before.parked and after.state == before.state
    assert "job.signal" not in [e.type for e in await runs.task_events(task_id)]


async def test_a_signal_on_a_running_task_is_refused_unless_it_is_for_its_next_park(runs, scripted):
    gate = Checkpoint()
    watch = await start(runs, "t1", scripted.script("asks", asks(1, before_asking=gate)))
    task_id = watch.task_id
    await running(runs, gate)
    with pytest.raises(SignalRefused) as refused:
        await runs.signal(task_id, "nope", {})
    assert refused.value.code == "JOB_NOT_PARKED"
    assert str(refused.value) == f"job {task_id} is running, not parked"
    assert (await runs.get_task(task_id)).status == "running"
    # The key of its next park is kept, and taken the moment it parks: it never waits parked.
    early = await runs.signal(task_id, f"approval-{task_id}-1", "early yes")
    assert early.status == "running"
    gate.release()
    await ended_as(runs, watch, "completed")
    types = await one_life(runs, task_id, "run.finished")
    assert types.index("job.parked") + 1 == types.index("job.signal")
    assert (await reply_text(runs, "t1")).endswith("answers: ['early yes']")


async def test_a_signal_on_an_ended_task_is_refused_and_changes_nothing(runs, scripted):
    watch = await start(runs, "t1", "demo", "hello")
    task_id = watch.task_id
    await ended_as(runs, watch, "completed")
    events = await runs.task_events(task_id)
    for key in (f"approval-{task_id}-1", "nope"):  # the key its next park would have had, and any other
        with pytest.raises(SignalRefused) as refused:
            await runs.signal(task_id, key, {})
        assert refused.value.code == "JOB_NOT_PARKED"
        assert str(refused.value) == f"job {task_id} is completed, not parked"
    assert (await runs.get_task(task_id)).status == "completed"
    assert len(await runs.task_events(task_id)) == len(events)
    with pytest.raises(NotFound):
        await runs.signal("no-such-task", "nope", {})


# -- abort -------------------------------------------------------------------------------------------

async def test_abort_of_a_running_task_ends_it_cancelled_and_frees_the_thread(runs, scripted):
    gate = Checkpoint()
    watch = await start(runs, "t1", scripted.script("waits", waits_at(gate)))
    task_id = watch.task_id
    await running(runs, gate)
    await runs.abort(task_id)  # returns once the end is committed
    assert (await runs.get_task(task_id)).status == "cancelled"
    await ended_as(runs, watch, "cancelled", CANCELLED)
    assert await reply_text(runs, "t1") == "working"  # it never got past the checkpoint
    await runs.abort(task_id)  # idempotent
    await one_life(runs, task_id, "run.error")
    again_watch = await start(runs, "t1", "demo", "hello again", "m2")
    await ended_as(runs, again_watch, "completed")


@pytest.mark.parametrize("long_parked", [False, True], ids=["while-its-runner-unwinds", "long-parked"])
async def test_abort_of_a_parked_task_ends_it_cancelled(runs, scripted, long_parked):
    watch = await start(runs, "t1", scripted.script("asks", asks(1)))
    task_id = watch.task_id
    await watch.parked()
    if long_parked:
        await settled(runs)
    await runs.abort(task_id)
    await ended_as(runs, watch, "cancelled", CANCELLED)
    with pytest.raises(SignalRefused) as refused:
        await runs.signal(task_id, f"approval-{task_id}-1", {"approved": True})
    assert refused.value.code == "JOB_NOT_PARKED"
    assert (await runs.get_task(task_id)).status == "cancelled"


@pytest.mark.parametrize("agent", ["demo", "fails"])
async def test_abort_after_the_end_changes_nothing(runs, scripted, agent):
    scripted.script("fails", fails)
    watch = await start(runs, "t1", agent, "hello")
    task_id = watch.task_id
    await watch.ended()
    # At once (the runner may still hold the task) and after the runner is gone.
    for _ in range(2):
        before = await runs.get_task(task_id)
        await runs.abort(task_id)
        after = await runs.get_task(task_id)
        assert after.status == before.status == ("completed" if agent == "demo" else "failed")
        assert (after.finished_at, after.error) == (before.finished_at, before.error)
    assert runs.live_runs == 0
    await one_life(runs, task_id, "run.finished" if agent == "demo" else "run.error")


async def test_an_ended_task_is_never_ended_again(runs):
    watch = await start(runs, "t1", "demo", "hello")
    task_id = watch.task_id
    await ended_as(runs, watch, "completed")
    task = await runs.get_task(task_id)
    assert await runs.finish(task, "failed", "late", "A late end.", None) is False
    assert await runs.finish(task, "cancelled", "cancelled", "Too late.", None) is False
    assert (await runs.get_task(task_id)).status == "completed"
    await one_life(runs, task_id, "run.finished")


# -- recovery after a crash --------------------------------------------------------------------------

async def test_recover_ends_a_task_left_running_failed_interrupted(runs, scripted, open_runs):
    done_watch = await start(runs, "t-done", "demo", "hello")
    done_id = done_watch.task_id
    await ended_as(runs, done_watch, "completed")
    gate = Checkpoint()
    task_id = (await start(runs, "t1", scripted.script("dies", dies_at(gate)))).task_id
    await running(runs, gate)
    gate.release()
    await settled(runs)  # the process went down: no runner, the store says running
    assert (await runs.get_task(task_id)).status == "running"
    await runs.db.close()

    after = await open_runs()
    watch = TaskWatch(after.hub, task_id)
    assert await after.recover() == 1
    await ended_as(after, watch, "failed", INTERRUPTED)
    assert await reply_text(after, "t1") == "working"  # the reply is rebuilt from the log
    assert (await after.get_task(done_id)).status == "completed"  # an ended task is left alone
    await one_life(after, done_id, "run.finished")
    again_watch = await start(after, "t1", "demo", "hello again", "m2")
    await ended_as(after, again_watch, "completed")


async def test_recover_ends_a_task_left_pending_failed_interrupted(runs, scripted, open_runs):
    task_id = (await start(runs, "t1", scripted.script("dies", dies_at_once))).task_id
    await settled(runs)
    # What a crash between the start's commit and its runner's first one leaves.
    await runs.db.write(lambda tx: tasks_sql.update(tx, task_id, status="pending", started_at=None))
    await runs.db.close()

    after = await open_runs()
    watch = TaskWatch(after.hub, task_id)
    assert await after.recover() == 1
    await ended_as(after, watch, "failed", INTERRUPTED)
    assert [e.type for e in await after.task_events(task_id)] == ["run.started", "run.error"]


async def test_recover_leaves_a_parked_task_parked_and_its_signal_resumes_it(runs, scripted, open_runs):
    watch = await start(runs, "t1", scripted.script("asks", asks(1)))
    task_id = watch.task_id
    await watch.parked()
    before = await runs.get_task(task_id)

    after = await restart(runs, open_runs)
    parked = await after.get_task(task_id)
    assert parked.status == "parked" and parked.parked == before.parked
    with pytest.raises(ThreadBusy):
        await start(after, "t1", "demo", "me too", "m2")
    with pytest.raises(SignalRefused):
        await after.signal(task_id, "nope", {})
    watch = TaskWatch(after.hub, task_id)
    await after.signal(task_id, f"approval-{task_id}-1", "yes")
    await ended_as(after, watch, "completed")
    assert await reply_text(after, "t1") == "question 1 answers: ['yes']"


async def test_recover_runs_again_a_task_woken_before_the_crash(runs, scripted, open_runs):
    gate = Checkpoint()
    watch = await start(runs, "t1", scripted.script("asks", asks_then_dies_once_resumed(gate)))
    task_id = watch.task_id
    await watch.parked()
    await runs.signal(task_id, f"approval-{task_id}-1", "yes")
    await running(runs, gate)
    gate.release()
    await settled(runs)
    assert (await runs.get_task(task_id)).status == "running"
    await runs.db.close()

    after = await open_runs()
    watch = TaskWatch(after.hub, task_id)
    assert await after.recover() == 1
    await ended_as(after, watch, "completed")
    assert (await reply_text(after, "t1")).endswith("woken 2 with yes")
    types = await one_life(after, task_id, "run.finished")
    assert types.count("job.signal") == 1


# -- drain -------------------------------------------------------------------------------------------

async def test_drain_refuses_new_runs_and_lets_a_run_in_flight_finish(runs, scripted):
    gate = Checkpoint()
    watch = await start(runs, "t1", scripted.script("waits", waits_at(gate)))
    await running(runs, gate)
    draining = asyncio.ensure_future(runs.drain(timeout=30))
    await asyncio.sleep(0)  # drain refuses from its first step
    with pytest.raises(Draining):
        await start(runs, "t2", "demo", "hello")
    assert not draining.done()  # waiting for the run in flight
    gate.release()
    await asyncio.wait_for(draining, 5)
    await ended_as(runs, watch, "completed")
    assert await reply_text(runs, "t1") == "working done"
    assert (await runs.current_task("t2", "alice")) is None


async def test_drain_ends_runs_past_the_deadline_failed_shutdown_and_leaves_parked_ones(runs, scripted):
    parked_watch = await start(runs, "t2", scripted.script("asks", asks(1)))
    parked_id = parked_watch.task_id
    await parked_watch.parked()
    await settled(runs)
    gate = Checkpoint()
    watch = await start(runs, "t1", scripted.script("waits", waits_at(gate)))
    await running(runs, gate)
    await runs.drain(timeout=0)
    await ended_as(runs, watch, "failed", SHUTDOWN)
    assert await reply_text(runs, "t1") == "working"
    assert runs.live_runs == 0
    parked = await runs.get_task(parked_id)
    assert parked.status == "parked" and parked.parked["correlationKey"] == f"approval-{parked_id}-1"


async def test_drain_right_after_a_park_is_committed_leaves_the_task_parked(runs, scripted):
    watch = await start(runs, "t1", scripted.script("asks", asks(1)))
    task_id = watch.task_id
    await watch.parked()  # published with the park's commit, before its runner returns
    await runs.drain(timeout=0)
    assert (await runs.get_task(task_id)).status == "parked"
