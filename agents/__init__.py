"""Agents: definitions, the demo agent, tools.  No HTTP here."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agents import demo
from agents.context import RunContext
from agents.tools import BUILTIN_TOOLS, Tool

AgentFn = Callable[[RunContext], Awaitable[None]]


@dataclass(frozen=True)
class AgentDef:
    id: str
    name: str
    type: str
    description: str = ""
    llm: str | None = None
    tools: tuple[str, ...] = ()
    instructions: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "description": self.description, "type": self.type,
            "llm": self.llm, "tools": list(self.tools), "instructions": self.instructions,
        }


DEMO = AgentDef(
    id="demo",
    name="Demo",
    type="demo",
    description="Offline, deterministic agent: echoes text, /count N, /sleep S, /fail, /approve TEXT, /tool NAME ARGS.",
    tools=("clock", "calculator", "wait_approval"),
)


class AgentRegistry:
    """The agents a run may name; `demo` is always there."""

    def __init__(self) -> None:
        self._agents: dict[str, AgentDef] = {DEMO.id: DEMO}
        self.tools: dict[str, Tool] = dict(BUILTIN_TOOLS)

    def get(self, agent_id: str) -> AgentDef | None:
        return self._agents.get(agent_id)

    def add(self, agent: AgentDef) -> None:
        self._agents[agent.id] = agent

    def all(self) -> list[AgentDef]:
        return list(self._agents.values())

    def runner_for(self, agent: AgentDef) -> AgentFn:
        if agent.type == "demo":
            return demo.run
        raise LookupError(f"agent type {agent.type!r} is not available")

    def tools_for(self, agent: AgentDef) -> dict[str, Tool]:
        return {name: self.tools[name] for name in agent.tools if name in self.tools}
