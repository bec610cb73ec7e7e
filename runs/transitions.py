"""The transactions that move a started task (runs/start.py) between its states: park it
at a step that waits for a signal, wake it with one, end it.  Each writes the task row
and its event together, so the two never disagree; the run manager submits them and
resumes a woken task.

A task's parks are numbered, so the correlation key of its next park is known in
advance (`next_park_key`): a signal sent before the park is kept in the task's state
(`early`) and taken when the task parks.  Keys taken are remembered (`taken`), so a
repeated signal is answered and nothing runs twice.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from agents.context import Parked
from runs.errors import SignalRefused
from runs.leases import Leases
from store import NotFound, WriteTx
from store import messages as messages_sql
from store import tasks as tasks_sql
from store.db import now_ms
from store.event_types import JOB_PARKED, JOB_SIGNAL, RUN_ERROR, RUN_FINISHED
from store.tasks import LIVE, TaskRow


def next_park_key(task: TaskRow) -> str:
    """The correlation key of the task's next park: `approval-<taskId>-<n>` (known in advance,
    so that a signal sent before the park can be kept for it)."""
    return f"approval-{task.id}-{int((task.state or {}).get('parks', 0)) + 1}"


def write_park(tx: WriteTx, task: TaskRow, parked: Parked, parts: list[dict[str, Any]]) -> TaskRow | None:
    """Park the running task at `parked`, its reply so far (`parts`) stored with the park's prompt.

    When the park's signal came early it is taken at once: the task stays running and is
    returned, to be resumed.  None when it parked, or when it was no longer running.
    """
    key = parked.correlation_key
    info = {"correlationKey": key, "prompt": parked.prompt}
    current = tasks_sql.get_tx(tx, task.id)
    if current is None or current.status != "running":
        return None
    state = dict(current.state or {})
    state["parks"] = int(state.get("parks", 0)) + 1
    state["pending"] = parked.state
    tx.event(task.id, task.thread_id, JOB_PARKED, {"node": parked.node, **info})
    early = dict(state.get("early", {}))
    if key in early:  # the signal arrived before the park: take it now
        payload = early.pop(key)
        state["early"] = early
        state["taken"] = [*state.get("taken", []), key]
        state["resume"] = {"correlationKey": key, "payload": payload}
        tasks_sql.update(tx, task.id, state=state, current_node=parked.node)
        tx.event(task.id, task.thread_id, JOB_SIGNAL, {"correlationKey": key, "payload": payload})
        current.state = state
        return current
    tasks_sql.update(tx, task.id, status="parked", parked=info, state=state, current_node=parked.node)
    parts_now = [*parts, {"type": "data-parked", "data": {"node": parked.node, **info}}]
    messages_sql.put(tx, task.thread_id, task.assistant_message_id, task.assistant_seq, "assistant", parts_now, task.id)
    return None


def write_signal(tx: WriteTx, task_id: str, correlation_key: str, payload: Any, leases: Leases,
                 admit_wake: Callable[[WriteTx, TaskRow], None] | None = None) -> tuple[TaskRow, bool]:
    """Take a signal for the task: (the task, whether it woke and must be resumed).

    A repeat of a signal already taken, or one kept for the next park, changes nothing.
    Raises NotFound, or SignalRefused with JOB_NOT_PARKED or INVALID_SIGNAL_KEY; `admit_wake`
    raises when the parked task may not run again now (its user has as many runs going as the
    plan allows), and then the signal is not taken.
    """
    task = tasks_sql.get_tx(tx, task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    state = dict(task.state or {})
    taken = state.get("taken", [])
    early = dict(state.get("early", {}))
    if correlation_key in taken or correlation_key in early:
        return task, False
    if task.status in ("pending", "running") and correlation_key == next_park_key(task):
        early[correlation_key] = payload
        state["early"] = early
        tasks_sql.update(tx, task_id, state=state)
        task.state = state
        return task, False
    if task.status != "parked":
        raise SignalRefused("JOB_NOT_PARKED", f"job {task_id} is {task.status}, not parked")
    if not task.parked or task.parked.get("correlationKey") != correlation_key:
        raise SignalRefused("INVALID_SIGNAL_KEY", "correlation_key does not match the parked step")
    if admit_wake is not None:
        admit_wake(tx, task)
    state["taken"] = [*taken, correlation_key]
    state["resume"] = {"correlationKey": correlation_key, "payload": payload}
    tasks_sql.update(tx, task_id, status="running", parked=None, state=state)
    leases.claim(tx, task_id)
    tx.event(task_id, task.thread_id, JOB_SIGNAL, {"correlationKey": correlation_key, "payload": payload})
    task.status, task.parked, task.state = "running", None, state
    return task, True


def write_end(tx: WriteTx, task: TaskRow, status: str, reason: str, message: str, parts: list[dict[str, Any]] | None,
              only_if: Callable[[WriteTx], bool] | None = None, **values: Any) -> bool:
    """End the live task `status` (completed, failed, cancelled) with its reply (`parts`) and its
    one terminal event, storing `values` (more columns) with it; False when it had already
    ended, or `only_if` says no."""
    if only_if is not None and not only_if(tx):
        return False
    error = None if status == "completed" else {"reason": reason, "message": message}
    if not tasks_sql.update_if(
        tx, task.id, LIVE, status=status, finished_at=now_ms(), error=error, parked=None, **values
    ):
        return False
    if parts:
        messages_sql.put(tx, task.thread_id, task.assistant_message_id, task.assistant_seq, "assistant", parts, task.id)
    if status == "completed":
        tx.event(task.id, task.thread_id, RUN_FINISHED, {})
    else:
        tx.event(task.id, task.thread_id, RUN_ERROR, {"status": status, "reason": reason, "message": message})
    return True


def encodable(parts: list[dict[str, Any]] | None) -> bool:
    """Whether `parts` can be stored as JSON (else an end rebuilds the reply from the log)."""
    try:
        orjson.dumps(parts)
    except TypeError:
        return False
    return True


def resumed_after_park(events: list[Any]) -> bool:
    """Whether a task's log shows it woken by a signal and not ended since."""
    last_signal = max((i for i, e in enumerate(events) if e.type == JOB_SIGNAL), default=-1)
    return last_signal >= 0 and not any(e.terminal for e in events[last_signal:])
