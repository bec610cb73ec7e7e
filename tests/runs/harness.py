"""Test-only agents whose every step the test decides (ScriptedAgents, Checkpoint), and a watch
on a task's committed events (TaskWatch).

Tests wait on committed events, never on timers: an event reaches the hub only once its
transaction, which also holds the task's status change, is committed.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from agents import AgentDef, AgentRegistry
from agents.context import RunContext
from agents.replay import Recording
from runs.hub import EventHub
from runs.manager import RunManager
from runs.start import StartRequest
from store import Event

AgentFn = Callable[[RunContext], Awaitable[None]]
OpenRuns = Callable[[], Awaitable[RunManager]]

TERMINAL_EVENTS = ("run.finished", "run.error")


class ScriptedAgents(AgentRegistry):
    """The registry with test-only agents: `script(agent_id, fn)` adds an agent that runs `fn(ctx)`."""

    def __init__(self) -> None:
        super().__init__()
        self._scripts: dict[str, AgentFn] = {}

    def script(self, agent_id: str, fn: AgentFn) -> str:
        self.add(AgentDef(id=agent_id, name=agent_id, type="demo"))
        self._scripts[agent_id] = fn
        return agent_id

    def runner_for(self, agent: AgentDef, recording: Recording | None = None) -> AgentFn:
        script = self._scripts.get(agent.id)
        return script if script is not None else super().runner_for(agent, recording)


class Checkpoint:
    """A point where a test agent waits until the test lets it go on."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self._go = asyncio.Event()

    async def pass_through(self) -> None:
        self.reached.set()
        await self._go.wait()

    def release(self) -> None:
        self._go.set()


class TaskWatch:
    """The committed events of one task, in the order the hub publishes them."""

    def __init__(self, hub: EventHub, task_id: str) -> None:
        self.task_id = task_id
        self.seen: list[Event] = []
        self._sub = hub.subscribe_task(task_id)
        self._next = 0

    async def next(self, *types: str, timeout: float = 5.0) -> Event:
        """The first event of one of `types` after the last one returned (the timeout is a safety net)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while self._next < len(self.seen):
                event = self.seen[self._next]
                self._next += 1
                if event.type in types:
                    return event
            arrived = await self._sub.wait(max(0.0, deadline - loop.time()))
            assert arrived, f"task {self.task_id}: no {types} within {timeout}s, saw {[e.type for e in self.seen]}"
            for batch in self._sub.take():
                self.seen.extend(batch.events)

    async def parked(self) -> Event:
        return await self.next("job.parked")

    async def ended(self) -> Event:
        return await self.next(*TERMINAL_EVENTS)


def user_message(text: str, message_id: str = "m1") -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


async def start(runs: RunManager, thread_id: str, agent_id: str, text: str = "go", message_id: str = "m1",
                user_id: str = "alice") -> TaskWatch:
    """Start a run and watch its events from its runner's first step on (start_run returns before it)."""
    task = await runs.start_run(StartRequest(user_id, thread_id, user_message(text, message_id), agent_id))
    return TaskWatch(runs.hub, task.id)
