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

        Raises ValueError naming the table at fault (e.g. an agent whose `llm` names no provider).
        Configuring again replaces providers and agents of the same names.
        """
        llm_tables = extra.get("llm", {})
        if not isinstance(llm_tables, dict):
            raise ValueError("[llm] must hold tables [llm.NAME]")
        providers = {name: LLMProvider(LLMConfig.from_table(str(name), table)) for name, table in llm_tables.items()}
        known = {**self.providers, **providers}
        entries = extra.get("agents", [])
        if not isinstance(entries, list):
            raise ValueError("agents must be an array of tables [[agents]]")
        agents: list[AgentDef] = []
        for i, entry in enumerate(entries):
            agents.append(self._agent_from_table(i, entry, known))
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

    def _agent_from_table(self, i: int, entry: Any, providers: dict[str, LLMProvider]) -> AgentDef:
        """The agent of the `[[agents]]` table number `i` (from 0), checked key by key."""
        agent_id = _table_id(i, entry)
        where = f"[[agents]] {agent_id!r}"
        unknown = sorted(set(entry) - _AGENT_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_AGENT_KEYS))})")
        agent_type = entry.get("type", "react")
        if agent_type not in AGENT_TYPES:
            raise ValueError(f"{where}: type must be one of {', '.join(AGENT_TYPES)}, not {agent_type!r}")
        llm = _table_llm(where, entry, agent_type, providers)
        tools = _table_tools(where, entry)
        missing = [t for t in tools if t not in self.tools]
        if missing:  # MCP tools and later built-ins may register after the config is read
            log.warning("%s: tool(s) %s are not (yet) available", where, ", ".join(missing))
        texts = _table_texts(where, entry, agent_id)
        return AgentDef(
            id=agent_id, name=texts["name"], type=agent_type, description=texts["description"], llm=llm,
            tools=tuple(tools), instructions=texts["instructions"], extra=_table_extra(where, entry),
        )


_AGENT_KEYS = frozenset({"id", "name", "type", "llm", "tools", "instructions", "description", "max_steps"})


def _table_id(i: int, entry: Any) -> str:
    if not isinstance(entry, dict):
        raise ValueError(f"[[agents]] #{i + 1} must be a table")
    agent_id = entry.get("id")
    if not isinstance(agent_id, str) or not agent_id.strip():
        raise ValueError(f"[[agents]] #{i + 1}: id must be a non-empty string")
    return agent_id


def _table_llm(where: str, entry: dict[str, Any], agent_type: str, providers: dict[str, LLMProvider]) -> str | None:
    """The agent's provider name: required, and configured, for a react agent."""
    llm = entry.get("llm")
    if agent_type == "react":
        if not isinstance(llm, str) or not llm:
            raise ValueError(f"{where}: a react agent needs llm = the name of an [llm.NAME] table")
        if llm not in providers:
            configured = ", ".join(sorted(providers)) or "none"
            raise ValueError(f"{where}: llm {llm!r} names no configured provider (no [llm.{llm}] table; configured: {configured})")
    elif llm is not None and not isinstance(llm, str):
        raise ValueError(f"{where}: llm must be a string")
    return llm


def _table_tools(where: str, entry: dict[str, Any]) -> list[str]:
    tools = entry.get("tools", [])
    if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
        raise ValueError(f"{where}: tools must be a list of tool names")
    return tools


def _table_texts(where: str, entry: dict[str, Any], agent_id: str) -> dict[str, str]:
    """The agent's name (its id by default), instructions and description."""
    texts: dict[str, str] = {}
    for key in ("name", "instructions", "description"):
        value = entry.get(key, agent_id if key == "name" else "")
        if not isinstance(value, str):
            raise ValueError(f"{where}: {key} must be a string")
        texts[key] = value
    return texts


def _table_extra(where: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The agent's settings beyond AgentDef's fields: `max_steps`."""
    extra: dict[str, Any] = {}
    if "max_steps" in entry:
        steps = entry["max_steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= react.MAX_MAX_STEPS:
            raise ValueError(f"{where}: max_steps must be a whole number from 1 to {react.MAX_MAX_STEPS}")
        extra["max_steps"] = steps
    return extra
