"""Starting a run: the request, and the one transaction that takes the thread's lock.

The transaction checks, in this order, the thread's owner, the user's plan,
the thread's lock (no other live task) and the plan's runs at once — so a
refusal is 403 before 409, and concurrent starts never get past a limit —
then stores the user message, the task (`pending`) and its `run.started`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runs.errors import Forbidden, Invalid, PlanRefused, ThreadBusy, TooManyRunning
from runs.leases import Leases
from runs.plans import Plans
from store import NotFound, WriteTx
from store import messages as messages_sql
from store import tasks as tasks_sql
from store import threads as threads_sql
from store.db import now_ms
from store.event_types import RUN_STARTED
from store.ids import uuid7_hex
from store.tasks import TaskRow


def text_message(text: str) -> dict[str, Any]:
    """A new user UIMessage with one text part."""
    return {"id": f"msg_{uuid7_hex()}", "role": "user", "parts": [{"type": "text", "text": text}]}


@dataclass(frozen=True)
class StartRequest:
    user_id: str
    thread_id: str
    message: dict[str, Any]  # a UIMessage with role "user"
    agent_id: str = "demo"
    rewind_from: str | None = None
    client_run_id: str | None = None
    initial_state: dict[str, Any] | None = None  # e.g. a replay's record and its signals
    retry_of: str | None = None  # a task that failed `insufficient_credits`: run its user message again


def write_start(tx: WriteTx, req: StartRequest, agent_id: str, task_id: str, title: str | None,
                plans: Plans, leases: Leases) -> TaskRow:
    """The start's writes, in the transaction `tx`: the new task, claimed by this instance.

    Raises Forbidden, PlanRefused, ThreadBusy, TooManyRunning (see `_admit`) or Invalid
    (an unknown rewind point, a message id the thread has, a task not to be retried).
    """
    new_thread = _admit(tx, req, agent_id, title, plans)
    seq = _store_user_message(tx, req, task_id, new_thread)
    task = TaskRow(
        id=task_id, thread_id=req.thread_id, user_id=req.user_id, agent_id=agent_id, status="pending",
        created_at=now_ms(), started_at=None, finished_at=None, current_node=None, error=None, parked=None,
        state=req.initial_state, user_message_id=req.message["id"], assistant_message_id=f"msg_{uuid7_hex()}",
        assistant_seq=seq + 1, client_run_id=req.client_run_id,
    )
    tasks_sql.insert(tx, task)
    leases.claim(tx, task_id)
    tx.event(task_id, req.thread_id, RUN_STARTED, {"messageId": task.assistant_message_id, "agentId": agent_id})
    return task


def _admit(tx: WriteTx, req: StartRequest, agent_id: str, title: str | None, plans: Plans) -> bool:
    """Make the thread if it is new (True), then refuse the start if the thread is another user's
    (Forbidden), the plan does not allow it (PlanRefused), the thread has a live task
    (ThreadBusy) or the user has as many runs going as the plan allows (TooManyRunning)."""
    thread, new_thread = threads_sql.ensure(tx, req.thread_id, req.user_id, title)
    if thread.user_id != req.user_id:
        raise Forbidden("thread belongs to another user")
    tasks_sql.serialize_user(tx, req.user_id)  # the counts below hold until this start commits
    plan = plans.plan_of(tx, req.user_id)
    refusal = plans.admit(tx, plan, req.user_id, agent_id)
    if refusal is not None:
        raise PlanRefused(refusal.message, refusal.details)
    live = None if new_thread else tasks_sql.live_for_thread_tx(tx, req.thread_id)
    if live is not None:
        raise ThreadBusy(live.id)
    busy = plans.running_refusal(tx, plan, req.user_id)
    if busy is not None:
        raise TooManyRunning(busy.message, busy.details)
    return new_thread


def _store_user_message(tx: WriteTx, req: StartRequest, task_id: str, new_thread: bool) -> int:
    """Store the run's user message (a retry's is stored already; a rewind supersedes the
    messages from its point on) and return its seq: the reply goes right after it.  The first
    message of a thread made by this start is its first (seq 1)."""
    msg_id = req.message["id"]
    if new_thread and req.retry_of is None and req.rewind_from is None:
        messages_sql.put(tx, req.thread_id, msg_id, 1, "user", req.message["parts"], task_id, req.message.get("metadata"))
        return 1
    if req.retry_of is not None:
        claim_retry(tx, req.retry_of, task_id)
        return messages_sql.next_seq(tx, req.thread_id) - 1  # the failed task's user message is stored; the reply goes last
    if req.rewind_from is not None:
        try:
            messages_sql.supersede_from(tx, req.thread_id, req.rewind_from)
        except NotFound:
            raise Invalid(f"rewindFrom names no message of this thread: {req.rewind_from}") from None
    if messages_sql.exists(tx, req.thread_id, msg_id):
        raise Invalid(f"message id {msg_id} already exists in this thread")
    seq = messages_sql.next_seq(tx, req.thread_id)
    messages_sql.put(tx, req.thread_id, msg_id, seq, "user", req.message["parts"], task_id, req.message.get("metadata"))
    return seq


def check_retryable(task: TaskRow) -> None:
    """Invalid unless the task failed `insufficient_credits` and was not retried yet."""
    if task.status != "failed" or (task.error or {}).get("reason") != "insufficient_credits":
        raise Invalid("this task is not retryable: only a run that failed for insufficient credits is")
    retried_by = (task.state or {}).get("retried_by")
    if retried_by:
        raise Invalid(f"this task was already retried as task {retried_by}")


def claim_retry(tx: WriteTx, task_id: str, new_id: str) -> None:
    """Mark the failed task retried by `new_id`, in the transaction that starts it (Invalid if it was)."""
    task = tasks_sql.get_tx(tx, task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    check_retryable(task)
    tasks_sql.update(tx, task_id, state={**(task.state or {}), "retried_by": new_id})
