"""Replaying a run from its record: the agent runs again, the world does not.

A `Recording` is read from a finished run's event log: what the model said
at each `llm` step (as the same stream pieces), what each tool returned, and
the signals that woke it.  A replayed run calls no model and no tool: its
provider is a `RecordedProvider`, its tool calls take the recorded outcomes
in order, its parks are answered by the recorded signals.  A replay whose
agent asks for something else than the record holds fails `replay_diverged`.
"""
from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from agents.context import AgentError
from agents.llm import Finish, LLMEvent, ReasoningDelta, TextDelta, ToolCallDelta
from store.event_types import (
    JOB_SIGNAL,
    REASONING_DELTA,
    STEP_FINISHED,
    STEP_STARTED,
    TEXT_DELTA,
    TOOL_CALL_ARGS,
    TOOL_CALL_START,
    TOOL_ERROR,
    TOOL_RESULT,
)


class Recording:
    def __init__(self, events: list[Any]) -> None:
        """`events`: the recorded run's canonical events (objects with `.type` and `.data`), in order."""
        self.llm_calls: list[list[LLMEvent]] = []
        self.outcomes: list[tuple[str, bool, Any]] = []  # (tool name, succeeded, output or error text)
        self.signals: list[Any] = []
        self._llm_pos = 0
        self._tool_pos = 0
        names: dict[str, str] = {}
        call: list[LLMEvent] | None = None
        indexes: dict[str, int] = {}
        for ev in events:
            t, d = ev.type, ev.data
            if t == STEP_STARTED and d.get("node") == "llm":
                call, indexes = [], {}
                self.llm_calls.append(call)
            elif t == STEP_FINISHED and d.get("node") == "llm" and call is not None:
                call.append(Finish("tool_calls" if indexes else "stop"))
                call = None
            elif t == TOOL_CALL_START:
                names[d["toolCallId"]] = d["toolName"]
                if call is not None:
                    indexes[d["toolCallId"]] = len(indexes)
                    call.append(ToolCallDelta(indexes[d["toolCallId"]], d["toolCallId"], d["toolName"], ""))
            elif call is not None and t == TEXT_DELTA:
                call.append(TextDelta(d["delta"]))
            elif call is not None and t == REASONING_DELTA:
                call.append(ReasoningDelta(d["delta"]))
            elif call is not None and t == TOOL_CALL_ARGS and d["toolCallId"] in indexes:
                call.append(ToolCallDelta(indexes[d["toolCallId"]], None, None, d["delta"]))
            elif t in (TOOL_RESULT, TOOL_ERROR) and d.get("executed"):
                ok = t == TOOL_RESULT
                self.outcomes.append((names.get(d["toolCallId"], ""), ok, d.get("output") if ok else d.get("error")))
            elif t == JOB_SIGNAL:
                self.signals.append(d.get("payload"))

    def steps(self) -> dict[str, int]:
        return {"llm_calls": len(self.llm_calls), "tool_outcomes": len(self.outcomes), "signals": len(self.signals)}

    def advance_past(self, events: list[Any]) -> Recording:
        """Skip what the replaying run already did (it was resumed after a park)."""
        done = Recording(events)
        self._llm_pos = len(done.llm_calls)
        self._tool_pos = len(done.outcomes)
        return self

    def next_outcome(self, tool_name: str) -> tuple[bool, Any]:
        if self._tool_pos >= len(self.outcomes):
            raise AgentError("replay_diverged", f"the replay called {tool_name}, but the record has no more tool results")
        name, ok, value = self.outcomes[self._tool_pos]
        if name != tool_name:
            raise AgentError("replay_diverged", f"the replay called {tool_name} where the record has {name}")
        self._tool_pos += 1
        return ok, value

    def next_llm_call(self) -> list[LLMEvent]:
        if self._llm_pos >= len(self.llm_calls):
            raise AgentError("replay_diverged", "the replay asked the model once more than the record holds")
        call = self.llm_calls[self._llm_pos]
        self._llm_pos += 1
        return call


class RecordedProvider:
    """Stands in for an LLM provider: each call streams the next recorded answer."""

    def __init__(self, recording: Recording) -> None:
        self.recording = recording

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> AsyncGenerator[LLMEvent, None]:
        for event in self.recording.next_llm_call():
            yield event

    async def aclose(self) -> None:
        return None
