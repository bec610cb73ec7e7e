"""What a run costs the writer (issue 14), on both stores: a run whose end is queued before the
writer took its `running` write stores both in one statement, in one transaction; a run that
takes longer is `running` in the store while it works."""
from __future__ import annotations

import asyncio
import threading

import pytest

from runs.runner import Runner
from store import tasks as tasks_sql


@pytest.fixture
def task_updates(monkeypatch):
    """Every conditional update of a task row: (task id, the columns it set)."""
    calls: list[tuple[str, dict]] = []
    real = tasks_sql.update_if

    def update_if(tx, task_id, statuses, **values):
        calls.append((task_id, values))
        return real(tx, task_id, statuses, **values)

    monkeypatch.setattr(tasks_sql, "update_if", update_if)
    return calls


@pytest.fixture
def writer_held_until_the_end(parley, monkeypatch):
    """The writer is kept busy from the run's first step until its end is queued, so that the
    run's writes share one take whatever the thread scheduling (the writer takes the queue
    whenever it likes, and a take in between is allowed: it only keeps the fold from applying)."""
    gate, entered = threading.Event(), threading.Event()
    real_run_agent, real_end_queued = Runner._run_agent, Runner.end_queued

    def hold(tx):
        entered.set()
        gate.wait(10)

    async def run_agent(self):
        self._db.submit(hold)
        await asyncio.to_thread(entered.wait, 10)
        await real_run_agent(self)

    def end_queued(self):
        real_end_queued(self)
        gate.set()

    monkeypatch.setattr(Runner, "_run_agent", run_agent)
    monkeypatch.setattr(Runner, "end_queued", end_queued)


async def test_a_short_run_stores_running_with_its_end(alice, task_updates, writer_held_until_the_end):
    task_id = await alice.start_ok("t-short-cost", "hi")
    info = await alice.wait_status(task_id, "completed")
    mine = [values for tid, values in task_updates if tid == task_id]
    assert len(mine) == 1, mine
    assert mine[0]["status"] == "completed" and mine[0]["started_at"] == info["startedAt"]
    assert info["createdAt"] <= info["startedAt"] <= info["finishedAt"]
    assert info["currentNode"] == mine[0]["current_node"]


async def test_a_run_that_works_is_running_in_the_store_meanwhile(alice, task_updates):
    task_id = await alice.start_ok("t-long-cost", "/sleep 30")
    info = await alice.wait_status(task_id, "running")
    assert info["startedAt"] is not None and info["finishedAt"] is None
    await alice.request("DELETE", f"/task/{task_id}")
    ended = await alice.wait_status(task_id, "cancelled")
    assert ended["startedAt"] == info["startedAt"]
    mine = [values for tid, values in task_updates if tid == task_id]
    # the end stores the same start time again (decided before it was queued): never a second one
    assert [v["status"] for v in mine] == ["running", "cancelled"] and mine[1]["started_at"] == info["startedAt"]
