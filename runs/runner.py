"""The Runner: one activation of a task's agent, and the sink its events go to.

A task gets a runner when it starts and a new one each time a signal wakes it.
The runner queues the agent's events for the group commit (encoded first, so an
event that cannot be stored fails this run only), assembles the reply as they
pass, and ends the run however the agent stops: completed, failed, cancelled,
or parked — the run manager writes the end.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson

from agents import AgentDef
from agents.context import AgentError, Parked, Resume, RunContext
from agents.replay import Recording
from runs.assemble import MessageAssembler
from runs.transitions import next_park_key
from store import WriteTx
from store import tasks as tasks_sql
from store.db import now_ms
from store.tasks import TaskRow
from telemetry import context

if TYPE_CHECKING:
    from runs.manager import RunManager

log = logging.getLogger("parley.runs")

# An agent may run ahead of the writer by this many queued events before it waits.
BACKLOG_HIGH_WATER = 2048
# ...and gives the event loop a turn every this many events: 512 (a turn of about 6 ms) keeps /health under
# 20 ms while 100 runs stream flat out; 128 cost 10-15 % of the events/s to 100 readers (smaller batches).
YIELD_EVERY = 512


class Runner:
    """One activation of a task's agent (a resumed task gets a new runner)."""

    def __init__(self, manager: RunManager, task: TaskRow, agent: AgentDef, resume: Resume | None,
                 user_message: dict[str, Any] | None = None) -> None:
        self.manager = manager
        self.user_message = user_message
        self.task = task
        self.agent = agent
        self.resume = resume
        self.assembler = MessageAssembler()
        self.abort_as: tuple[str, str, str] | None = None
        self.future: asyncio.Future[None] | None = None
        self.park_write: asyncio.Future[TaskRow | None] | None = None  # the committing park, once started
        self._started = False
        self._db = manager.db
        self._node: str | None = task.current_node
        self._node_queued = False  # a queued write will store `_node` as it is when it runs
        self._running_take: int | None = None  # the writer's take that stores `running` (`_write_running`)
        self._end_take: int | None = None  # the take that stores the run's end, once it is queued
        self._emitted = 0
        self._started_at = 0

    # -- Sink -----------------------------------------------------------

    async def emit(self, type: str, data: dict[str, Any]) -> None:
        """Queue one event of the run.  Its data is encoded here, first: an event that cannot be
        stored (an int beyond 64 bits, an object JSON has no form for) fails this run, never
        the group commit it would share with other runs, and never reaches the reply."""
        try:
            text = orjson.dumps(data).decode()
        except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
            raise AgentError("unencodable_event",
                             f"The run produced a {type} event that cannot be stored as JSON ({exc}).") from None
        self.assembler.apply(type, data)
        self._db.append(self.task.id, self.task.thread_id, type, data, text)
        self._emitted += 1
        if self._db.backlog > BACKLOG_HIGH_WATER:
            await self._db.room(BACKLOG_HIGH_WATER, YIELD_EVERY)
        elif self._emitted % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # an agent that never waits must not hold the loop from new requests

    def set_node(self, node: str | None) -> None:
        """Store the step the task is at; steps taken before the write runs cost no write of their own."""
        self._node = node
        if not self._node_queued:
            self._node_queued = True
            take = self._db.queue_takes
            self._db.submit(lambda tx: self._write_node(tx, take))

    def _write_node(self, tx: WriteTx, take: int) -> None:
        self._node_queued = False  # from here on, a new step queues a write of its own
        if take != self._end_take:  # else the run's end, in this same transaction, stores the step
            tasks_sql.update(tx, self.task.id, current_node=self._node)

    def _write_running(self, tx: WriteTx) -> None:
        """The task is running, at the step its agent took before this write ran (if any)."""
        self._node_queued = False
        if self._running_take != self._end_take:  # else the run's end, in this transaction, stores both
            tasks_sql.update_if(tx, self.task.id, ("pending",), status="running", started_at=self._started_at,
                                current_node=self._node)

    def end_values(self) -> dict[str, Any]:
        """What the run's end stores besides its status: the step it is at, and (a first
        activation) when it started.  Decided before the end is queued, and the same values the
        `running` and step writes store: so either of those may be folded into the end."""
        values: dict[str, Any] = {"current_node": self._node}
        if self._running_take is not None:
            values["started_at"] = self._started_at
        return values

    def end_queued(self) -> None:
        """Called right after the run's end is queued: a `running` or step write queued in the same
        take of the writer (a short run's is: its whole reply is queued at once) is then folded
        into the end, in the same transaction, and stores nothing itself.  The writer's thread
        counts a take before it takes the queue, so equal counts mean the same transaction; a
        take in between only keeps the fold from applying."""
        self._end_take = self._db.queue_takes

    def correlation_key(self, node: str) -> str:
        return next_park_key(self.task)

    # -- life -----------------------------------------------------------

    def cancel(self, status: str, reason: str, message: str) -> None:
        if self.abort_as is None:
            self.abort_as = (status, reason, message)
        # A task cancelled before its first step never enters run(): let run() see abort_as instead.
        if self._started and self.future is not None and not self.future.done():
            self.future.cancel()

    async def run(self) -> None:
        """Run the agent to its end.  Whatever the agent or a tool raises, the task ends (or parks)
        with its terminal event, which frees the thread's lock."""
        task = self.task
        self._started = True
        context.task_id.set(task.id)  # this runner's own asyncio task: whatever the run logs names it
        end: tuple[str, str, str]
        try:
            if self.abort_as is not None:
                raise asyncio.CancelledError
            await self._run_agent()
        except asyncio.CancelledError:
            end = self.abort_as or ("cancelled", "cancelled", "The run was cancelled.")
        except Parked as parked:
            parked_end = await self._park(parked)
            if parked_end is None:
                return
            end = parked_end
        except AgentError as exc:
            end = ("failed", exc.reason, exc.message)
        except (GeneratorExit, KeyboardInterrupt, SystemExit):
            raise  # the process is going down: recovery ends the task at the next start
        except BaseException as exc:  # an Exception, or e.g. the BaseExceptionGroup of a task group in a tool
            log.exception("agent %s crashed on task %s", self.agent.id, task.id)
            end = ("failed", "internal_error", f"The agent crashed: {type(exc).__name__}")
        else:
            # abort_as: aborted after the agent's last await
            end = self.abort_as or ("completed", "", "")
        await self.manager.finish(task, *end, self.assembler.parts, values=self.end_values(), queued=self.end_queued)

    async def _park(self, parked: Parked) -> tuple[str, str, str] | None:
        """Park the task; None when it parked (or woke again), else how the run must end instead."""
        try:
            await self.manager.park(self, parked)
        except asyncio.CancelledError:
            if self.abort_as is None:
                raise
            if self.abort_as[1] == "shutdown" and self.park_write is not None:
                # A drain leaves parked runs parked (SPEC 6): the park is being written (shielded),
                # so the run ends only if a signal taken with the park woke it again.
                if await self.park_write is None:
                    return None
            return self.abort_as  # aborted while parking: the park is written (shielded), end it as asked
        except Exception:
            log.exception("parking task %s failed", self.task.id)
            return ("failed", "internal_error", "The run could not be parked.")
        return None

    async def _run_agent(self) -> None:
        task = self.task
        if self.user_message is None:
            self.user_message = await self.manager.message(task.thread_id, task.user_message_id, task.id)
        own_events = await self.manager.task_events(task.id) if self.resume is not None else []
        self.assembler.apply_all(own_events)
        recording = None
        replay_of = (task.state or {}).get("replay_of")
        if replay_of:
            recording = Recording(await self.manager.task_events(replay_of)).advance_past(own_events)
        if self.resume is None:
            # Queued ahead of the agent's first events, committed with them: no extra wait; the
            # agent's first step is stored with it.
            self._node_queued = True
            self._started_at = now_ms()
            self._running_take = self._db.queue_takes
            self._db.submit(self._write_running)
        ctx = RunContext(
            self,
            task_id=task.id,
            thread_id=task.thread_id,
            user_id=task.user_id,
            message_id=task.assistant_message_id,
            user_message=self.user_message,
            load_history=lambda: self.manager.history(task.thread_id),
            tools=self.manager.agents.tools_for(self.agent),
            resume=self.resume,
            demo_delay_s=self.manager.demo_delay_s,
            recording=recording,
            billing=self.manager.plans,
        )
        await self.manager.agents.runner_for(self.agent, recording)(ctx)

