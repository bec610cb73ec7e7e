"""Agents: definitions, the demo agent, tools.  No HTTP here."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agents import demo, react, titles
from agents import transcribe as transcription
from agents.context import RunContext
from agents.llm import ChatModel, LLMConfig, LLMProvider
from agents.replay import RecordedProvider, Recording
from agents.tools import BUILTIN_TOOLS, Tool

log = logging.getLogger("parley.agents")
AGENT_TYPES = ("react", "demo")

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
    description="Offline, deterministic agent: echoes text, /count N, /sleep S, /fail, /approve TEXT, /tool NAME ARGS, "
                "/image PROMPT, /video PROMPT, /music PROMPT; asks for approval on refunds, searches your documents on "
                "\"search …\", draws on \"draw …\", makes a video on \"make a video of …\", composes on \"compose …\".",
    tools=("clock", "calculator", "wait_approval", "knowledge_search", "generate_image", "generate_video", "generate_music"),
)


class AgentRegistry:
    """The agents a run may name; `demo` is always there."""

    def __init__(self) -> None:
        self._agents: dict[str, AgentDef] = {DEMO.id: DEMO}
        self.tools: dict[str, Tool] = dict(BUILTIN_TOOLS)
        self.providers: dict[str, LLMProvider] = {}
        self.titles_llm: str | None = None  # `[titles] llm`: the provider that names threads
        self.transcription: transcription.TranscribeConfig | None = None  # `[transcribe]` (agents/transcribe.py)
        self.demo_limits = demo.DEFAULT_LIMITS  # `[demo]`: how far /count and /sleep go
        self._demo: AgentFn = demo.run

    def get(self, agent_id: str) -> AgentDef | None:
        return self._agents.get(agent_id)

    def add(self, agent: AgentDef) -> None:
        self._agents[agent.id] = agent

    def all(self) -> list[AgentDef]:
        return list(self._agents.values())

    def runner_for(self, agent: AgentDef, recording: Recording | None = None) -> AgentFn:
        """The agent's coroutine function; a replay's react agent talks to its recording, not the model."""
        if agent.type == "demo":
            return self._demo
        if agent.type == "react":
            provider = RecordedProvider(recording) if recording is not None else self.providers.get(agent.llm or "")
            return react.runner(agent, provider)
        raise LookupError(f"agent type {agent.type!r} is not available")

    def title_model(self) -> ChatModel | None:
        """The provider that names threads, or None when `[titles]` is not configured."""
        return self.providers.get(self.titles_llm) if self.titles_llm is not None else None

    def tools_for(self, agent: AgentDef) -> dict[str, Tool]:
        return {name: self.tools[name] for name in agent.tools if name in self.tools}

    def configure(self, extra: dict[str, Any]) -> None:
        """Read the config file's `[llm.NAME]` tables into providers, its `[[agents]]` into agents,
        its `[titles]` table (agents/titles.py) into the provider that names threads, its
        `[transcribe]` table (agents/transcribe.py) into the speech-to-text backend, and its
        `[demo]` table into the demo agent's limits (`max_count`, `max_sleep_s`).

        `extra` is as config.py's schema checked it (shapes, types, bounds). Raises ValueError naming
        the table at fault for what needs more than one table (e.g. an agent whose `llm` names no
        provider). Configuring again replaces providers and agents of the same names.
        """
        providers = {name: LLMProvider(LLMConfig.from_table(name, table)) for name, table in extra.get("llm", {}).items()}
        known = {**self.providers, **providers}
        agents = [self._agent_from_table(i, entry, known) for i, entry in enumerate(extra.get("agents", []))]
        ids = [a.id for a in agents]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"[[agents]]: id {dupes[0]!r} is defined more than once")
        titles_llm = titles.configured_llm(extra, set(known))
        transcribe = transcription.configured(extra, set(known))
        demo_limits = demo.Limits.from_table(extra["demo"]) if "demo" in extra else None
        self.providers.update(providers)
        if demo_limits is not None:
            self.demo_limits = demo_limits
            self._demo = demo.runner(demo_limits)
        if titles_llm is not None:
            self.titles_llm = titles_llm
        if transcribe is not None:
            self.transcription = transcribe
        for agent in agents:
            self.add(agent)

    def _agent_from_table(self, i: int, entry: dict[str, Any], providers: dict[str, LLMProvider]) -> AgentDef:
        """The agent of the `[[agents]]` table number `i` (from 0)."""
        agent_id = entry["id"]
        where = f"[[agents]] #{i + 1} ({agent_id!r})"
        agent_type = entry.get("type", "react")
        llm = entry.get("llm")
        if agent_type == "react" and llm is None:
            raise ValueError(f"{where}: a react agent needs llm = the name of an [llm.NAME] table")
        if agent_type == "react" and llm not in providers:
            configured = ", ".join(sorted(providers)) or "none"
            raise ValueError(f"{where}: llm {llm!r} names no configured provider (no [llm.{llm}] table; configured: {configured})")
        tools = entry.get("tools", [])
        missing = [t for t in tools if t not in self.tools]
        if missing:  # MCP tools and later built-ins may register after the config is read
            log.warning("%s: tool(s) %s are not (yet) available", where, ", ".join(missing))
        return AgentDef(
            id=agent_id, name=entry.get("name", agent_id), type=agent_type, description=entry.get("description", ""),
            llm=llm, tools=tuple(tools), instructions=entry.get("instructions", ""),
            extra={"max_steps": entry["max_steps"]} if "max_steps" in entry else {},
        )
