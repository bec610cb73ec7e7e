"""The `react` agent: an LLM in a tool loop (SPEC section 7).

Each turn: the chat messages (the agent's instructions, then the thread's
history) go to the agent's LLM provider with the agent's tools; the model's
text streams as one text part per step and its tool calls stream as
`tool.call.start` / `tool.call.args` (one per argument fragment) /
`tool.call.end`.  The tools run, their results go back to the model, and the
loop goes on until the model answers without tool calls (at most
`max_steps` model calls per run).

A parking tool (`wait_approval`) parks the run.  The park state holds the
conversation so far and the tool calls of that step still to run, so a
signal (even after a restart) resumes the loop where it stopped: the
signal's payload becomes the tool's result.
"""
from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from agents.context import AgentError, Parked, RunContext
from agents.llm import ChatModel, ReasoningDelta, TextDelta, ToolCallDelta
from agents.tools import Tool, for_model
from store.event_types import (
    REASONING_DELTA,
    REASONING_END,
    REASONING_START,
    STEP_FINISHED,
    TOOL_CALL_ARGS,
    TOOL_CALL_END,
    TOOL_CALL_START,
    TOOL_ERROR,
    TOOL_RESULT,
)
from store.ids import random_hex

if TYPE_CHECKING:
    from agents import AgentDef

log = logging.getLogger("parley.react")

DEFAULT_MAX_STEPS = 8
MAX_MAX_STEPS = 100
STATE_KEY = "react"
_WIRE_NAME = re.compile(r"[^a-zA-Z0-9_-]")


def runner(agent: AgentDef, provider: ChatModel | None) -> Callable[[RunContext], Awaitable[None]]:
    """The coroutine function that runs `agent` (an AgentDef of type react) with `provider`."""

    async def run(ctx: RunContext) -> None:
        if provider is None:
            raise AgentError("llm_not_configured",
                             f"Agent {agent.id!r} names the LLM provider {agent.llm!r}, which is not configured ([llm.{agent.llm}]).")
        max_steps = agent.extra.get("max_steps", DEFAULT_MAX_STEPS)
        await ReactLoop(ctx, provider, instructions=agent.instructions, max_steps=int(max_steps)).run()

    return run


def wire_name(name: str) -> str:
    """A tool name as OpenAI accepts it (`^[a-zA-Z0-9_-]{1,64}$`): MCP tools are named `server.tool`."""
    return _WIRE_NAME.sub("_", name)[:64] or "tool"


def tool_schemas(tools: dict[str, Tool]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The `tools` parameter of a chat completion, and wire name → tool name."""
    schemas: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for name, tool in tools.items():
        wire = wire_name(name)
        n = 2
        while wire in names:
            suffix = f"_{n}"
            wire = wire_name(name)[: 64 - len(suffix)] + suffix
            n += 1
        names[wire] = name
        schemas.append({
            "type": "function",
            "function": {"name": wire, "description": tool.description, "parameters": tool.input_schema},
        })
    return schemas, names


def history_messages(history: list[dict[str, Any]], user_message: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Chat messages from the thread's UIMessages (AI SDK v5 shape).

    User and system text become user/system messages.  An assistant message
    becomes, per step, an assistant message (its text and the tool calls that
    got an output) followed by one tool message per call.  Tool calls without
    an output (a failed or parked run) and other parts (files, data) are left
    out, and so are the pixels of `data:` URLs in tool outputs (`for_model`).
    The message that started the run is added if the history lacks it.
    """
    messages = list(history)
    if user_message is not None and not any(m.get("id") == user_message.get("id") for m in messages):
        messages.append({**user_message, "role": "user"})
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg.get("role")
        parts = msg.get("parts") or []
        if role in ("user", "system"):
            text = _text(parts)
            if text:
                out.append({"role": role, "content": text})
        elif role == "assistant":
            out.extend(_assistant_messages(parts))
    return out


def _text(parts: list[dict[str, Any]]) -> str:
    return "".join(p.get("text", "") for p in parts if p.get("type") == "text" and isinstance(p.get("text"), str))


def _tool_name(part: dict[str, Any]) -> str | None:
    kind = part.get("type", "")
    if kind == "dynamic-tool":
        name = part.get("toolName")
        return name if isinstance(name, str) else None
    if isinstance(kind, str) and kind.startswith("tool-"):
        return kind[len("tool-"):]
    return None


def _assistant_messages(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    blocks: list[list[dict[str, Any]]] = [[]]
    for part in parts:
        if part.get("type") == "step-start":
            blocks.append([])
        else:
            blocks[-1].append(part)
    for block in blocks:
        text = _text(block)
        calls: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        for part in block:
            name = _tool_name(part)
            call_id = part.get("toolCallId")
            if name is None or not isinstance(call_id, str):
                continue
            if part.get("state") == "output-available":
                content = _dumps(for_model(part.get("output")))
            elif part.get("state") == "output-error":
                content = _dumps({"error": part.get("errorText", "")})
            else:
                continue
            calls.append(_wire_call(call_id, wire_name(name), _dumps(part.get("input", {}))))
            results.append({"role": "tool", "tool_call_id": call_id, "content": content})
        if not text and not calls:
            continue
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = calls
        out.append(message)
        out.extend(results)
    return out


def _wire_call(call_id: str, wire: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": wire, "arguments": arguments}}


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return orjson.dumps(str(value)).decode()


class _StreamedAnswer:
    """The text and reasoning of one model answer as they stream: one part of each open at most,
    the reasoning closed when the text begins."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.text_part: str | None = None
        self.reasoning_part: str | None = None
        self.pieces: list[str] = []  # the text, as it came

    async def text(self, delta: str) -> None:
        if self.reasoning_part is not None:
            await self.ctx.sink.emit(REASONING_END, {"partId": self.reasoning_part})
            self.reasoning_part = None
        if self.text_part is None:
            self.text_part = await self.ctx.text_start()
        await self.ctx.text_delta(self.text_part, delta)
        self.pieces.append(delta)

    async def reasoning(self, delta: str) -> None:
        if self.reasoning_part is None:
            self.reasoning_part = f"rsn_{random_hex(16)}"
            await self.ctx.sink.emit(REASONING_START, {"messageId": self.ctx.message_id, "partId": self.reasoning_part})
        await self.ctx.sink.emit(REASONING_DELTA, {"partId": self.reasoning_part, "delta": delta})

    async def close(self) -> None:
        """End the open parts, the reasoning first."""
        if self.reasoning_part is not None:
            await self.ctx.sink.emit(REASONING_END, {"partId": self.reasoning_part})
        if self.text_part is not None:
            await self.ctx.text_end(self.text_part)


class ReactLoop:
    def __init__(self, ctx: RunContext, provider: ChatModel, *, instructions: str = "",
                 max_steps: int = DEFAULT_MAX_STEPS) -> None:
        self.ctx = ctx
        self.provider = provider
        self.instructions = instructions
        self.max_steps = max(1, min(max_steps, MAX_MAX_STEPS))
        self.schemas, self.names = tool_schemas(ctx.tools)
        self.messages: list[dict[str, Any]] = []
        self.steps = 0

    async def run(self) -> None:
        if self.ctx.resume is not None:
            await self._resume()
        else:
            history = await self.ctx.history()
            self.messages = [{"role": "system", "content": self.instructions}] if self.instructions else []
            self.messages += history_messages(history, self.ctx.user_message)
        while True:
            if self.steps >= self.max_steps:
                raise AgentError("max_steps", f"The agent stopped after {self.max_steps} model calls without a final answer.")
            self.steps += 1
            async with self.ctx.step("llm"):
                text, calls = await self._call_model()
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = [
                    _wire_call(c["id"], c["wire"], c["arguments"] if c["error"] is None else "{}") for c in calls
                ]
            self.messages.append(message)
            if not calls:
                return
            await self._run_tools(calls)

    # -- the model --------------------------------------------------------

    async def _call_model(self) -> tuple[str, list[dict[str, Any]]]:
        """One streamed model call: its text and its tool calls (announced, inputs complete)."""
        answer = _StreamedAnswer(self.ctx)
        calls: dict[int, dict[str, Any]] = {}
        try:
            async with contextlib.aclosing(self.provider.stream(self.messages, self.schemas)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        await answer.text(event.text)
                    elif isinstance(event, ReasoningDelta):
                        await answer.reasoning(event.text)
                    elif isinstance(event, ToolCallDelta):
                        await self._tool_delta(calls, event)
        except AgentError:
            # Close what is open so that every dialect sees whole parts before the run's error.
            await answer.close()
            raise
        await answer.close()
        done = [calls[i] for i in sorted(calls)]
        for call in done:
            await self._end_call(call)
        return "".join(answer.pieces), done

    async def _end_call(self, call: dict[str, Any]) -> None:
        """Announce the call if its name never came, parse its arguments, emit its complete input."""
        if not call["started"]:  # a call whose name never came
            await self._announce(call)
        self._parse(call)
        await self.ctx.sink.emit(TOOL_CALL_END, {
            "toolCallId": call["id"], "toolName": call["name"],
            "input": call["input"] if call["error"] is None else call["arguments"],
        })
        del call["started"]

    async def _tool_delta(self, calls: dict[int, dict[str, Any]], event: ToolCallDelta) -> None:
        call = calls.get(event.index)
        if call is None:
            call = calls[event.index] = {
                "id": None, "wire": "", "name": "", "arguments": "", "input": None, "error": None, "started": False,
            }
        if event.id and not call["id"]:
            call["id"] = event.id
        if event.name and not call["wire"]:
            call["wire"] = event.name
        call["arguments"] += event.arguments
        if not call["started"]:
            if call["wire"]:
                await self._announce(call)  # sends what arrived so far as the first args delta
        elif event.arguments:
            await self.ctx.sink.emit(TOOL_CALL_ARGS, {"toolCallId": call["id"], "delta": event.arguments})

    async def _announce(self, call: dict[str, Any]) -> None:
        if not call["id"]:
            call["id"] = f"call_{random_hex(16)}"
        call["wire"] = call["wire"] or "unknown"
        call["name"] = self.names.get(call["wire"], call["wire"])
        call["started"] = True
        await self.ctx.sink.emit(TOOL_CALL_START, {"toolCallId": call["id"], "toolName": call["name"]})
        if call["arguments"]:
            await self.ctx.sink.emit(TOOL_CALL_ARGS, {"toolCallId": call["id"], "delta": call["arguments"]})

    @staticmethod
    def _parse(call: dict[str, Any]) -> None:
        raw = call["arguments"].strip()
        if not raw:
            call["input"] = {}
            return
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            call["error"] = f"The tool call's arguments are not valid JSON ({exc}); send a JSON object."
            return
        if not isinstance(value, dict):
            call["error"] = "The tool call's arguments must be a JSON object."
            return
        call["input"] = value

    # -- tools ----------------------------------------------------------------

    async def _run_tools(self, calls: list[dict[str, Any]]) -> None:
        for i, call in enumerate(calls):
            node = f"tool:{call['name']}"
            async with self.ctx.step(node):
                try:
                    content = await self._run_tool(call)
                except Parked as parked:
                    parked.state[STATE_KEY] = {
                        "messages": self.messages, "steps": self.steps, "pending": calls[i + 1:], "node": node,
                    }
                    raise
            self.messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})

    async def _run_tool(self, call: dict[str, Any]) -> str:
        """Run one call; the content of the tool message that tells the model how it went."""
        ctx = self.ctx
        call_id, name = call["id"], call["name"]
        if call["error"] is not None:
            await ctx.sink.emit(TOOL_ERROR, {"toolCallId": call_id, "error": call["error"]})
            return _dumps({"error": call["error"]})
        tool = ctx.tools.get(name)
        if tool is not None and tool.parks:
            await ctx.run_tool(call_id, name, call["input"])  # parks the run (raises Parked)
        if tool is None or tool.run is None:
            error = f"unknown tool: {name}"
            await ctx.sink.emit(TOOL_ERROR, {"toolCallId": call_id, "error": error})
            return _dumps({"error": error})
        ok, value = await ctx.execute_tool(call_id, tool, call["input"])
        return _dumps(for_model(value) if ok else {"error": value})

    # -- resuming after a park ------------------------------------------------------

    async def _resume(self) -> None:
        ctx = self.ctx
        assert ctx.resume is not None
        state = ctx.resume.state or {}
        saved = state.get(STATE_KEY)
        if not isinstance(saved, dict) or not isinstance(saved.get("messages"), list):
            raise AgentError("resume_failed", "The parked run has no saved conversation to continue.")
        self.messages = list(saved["messages"])
        self.steps = int(saved.get("steps", 0))
        call_id = str(state.get("toolCallId", ""))
        payload = ctx.resume.payload
        await ctx.sink.emit(TOOL_RESULT, {"toolCallId": call_id, "output": payload})
        await ctx.sink.emit(STEP_FINISHED, {"node": saved.get("node", "tool")})  # the step the park left open
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": _dumps(payload)})
        pending = saved.get("pending") or []
        await self._run_tools([dict(c) for c in pending if isinstance(c, dict)])
