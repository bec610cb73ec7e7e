"""Running an ended task again, as a new task: a replay (from its record, on a new
thread: the agent runs, the model and the tools do not) and a retry (after it failed
for insufficient credits, on the same thread)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from agents.replay import Recording
from runs.errors import Invalid
from runs.start import StartRequest, check_retryable
from store.event_types import TOOL_CALL_END
from store.ids import uuid7, uuid7_hex
from store.tasks import TaskRow

if TYPE_CHECKING:
    from runs.manager import RunManager


async def replay(runs: RunManager, task_id: str, user_id: str) -> TaskRow:
    """Run an ended task again from its record, as a new task on a new thread: the agent runs,
    the model and the tools do not (agents/replay.py); recorded signals answer its parks."""
    original = await runs.owned_task(task_id, user_id)
    if original.live:
        raise Invalid(f"job {task_id} is {original.status}; only an ended job can be replayed")
    recording = Recording(await runs.task_events(task_id))
    message = await runs.message(original.thread_id, original.user_message_id, original.id)
    parts = message["parts"] if message else [{"type": "text", "text": ""}]
    new_id = uuid7()
    early = {f"approval-{new_id}-{n}": payload for n, payload in enumerate(recording.signals, 1)}
    req = StartRequest(
        user_id, f"replay-{new_id}", {"id": f"msg_{uuid7_hex()}", "role": "user", "parts": parts},
        original.agent_id, initial_state={"replay_of": task_id, "early": early},
    )
    return await runs.start_run(req, task_id=new_id)


async def retry(runs: RunManager, task_id: str, user_id: str) -> TaskRow:
    """Run again a task that failed `insufficient_credits`, once the balance covers the tool that
    stopped it: a new task on the same thread that re-runs the same user message (not stored
    again; the failed task's partial reply stays in the history).  A task is retried at most once.

    Raises NotFound, Forbidden, Invalid (not retryable, or the balance is still too low), and
    whatever start_run raises (Draining, PlanRefused, ThreadBusy).
    """
    original = await runs.owned_task(task_id, user_id)
    check_retryable(original)
    tool = next((e.data.get("toolName") for e in reversed(await runs.task_events(task_id))
                 if e.type == TOOL_CALL_END), None)
    prices = runs.plans.config.prices
    needed = runs.plans.config.price(str(tool)) if tool else max(prices.values(), default=0)
    usage = await runs.plans.usage(user_id)
    if usage.credits < needed:
        raise Invalid(f"the balance is {usage.credits} and the run needs {needed} credit(s): add credits first")
    message = await runs.message(original.thread_id, original.user_message_id, original.id)
    if message is None:
        raise Invalid(f"task {task_id} has no user message to run again")
    req = StartRequest(
        user_id, original.thread_id, {k: message[k] for k in ("id", "role", "parts")}, original.agent_id,
        initial_state={"retry_of": task_id}, retry_of=task_id,
    )
    return await runs.start_run(req)
