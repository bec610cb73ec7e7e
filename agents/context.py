"""What an agent sees of its run: the conversation, and calls that emit events."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from agents.tools import Billing, InsufficientCredits, Tool, ToolEnv, ToolError
from store.event_types import (
    FILE,
    STEP_FINISHED,
    STEP_STARTED,
    TEXT_DELTA,
    TEXT_END,
    TEXT_START,
    TOOL_CALL_ARGS,
    TOOL_CALL_END,
    TOOL_CALL_START,
    TOOL_ERROR,
    TOOL_RESULT,
)
from store.ids import random_hex

log = logging.getLogger("parley.agents")


class AgentError(Exception):
    """Ends the run `failed` with this reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Parked(Exception):
    """Raised by `RunContext.park`: the run stops here and waits for a signal."""

    def __init__(self, node: str, correlation_key: str, prompt: str, state: dict[str, Any]) -> None:
        super().__init__(f"parked at {node}")
        self.node = node
        self.correlation_key = correlation_key
        self.prompt = prompt
        self.state = state


@dataclass(frozen=True)
class Resume:
    """Handed to an agent that is woken by a signal."""

    correlation_key: str
    payload: Any
    state: dict[str, Any]


class Sink(Protocol):
    """Where a run's events go (the run manager's runner)."""

    async def emit(self, type: str, data: dict[str, Any]) -> None: ...

    def set_node(self, node: str | None) -> None: ...

    def correlation_key(self, node: str) -> str: ...


class RunContext:
    def __init__(
        self,
        sink: Sink,
        *,
        task_id: str,
        thread_id: str,
        user_id: str,
        message_id: str,
        user_message: dict[str, Any] | None,
        load_history: Callable[[], Awaitable[list[dict[str, Any]]]],
        tools: dict[str, Tool],
        resume: Resume | None = None,
        recording: Any = None,
        demo_delay_s: float = 0.0,
        billing: Billing | None = None,
    ) -> None:
        self.sink = sink
        self.task_id = task_id
        self.thread_id = thread_id
        self.user_id = user_id
        self.message_id = message_id
        self.user_message = user_message
        self._load_history = load_history
        self.tools = tools
        self.resume = resume
        self.recording = recording  # agents.replay.Recording when this run replays another
        self.demo_delay_s = demo_delay_s
        self.billing = billing  # charges tools that cost credits; None: every tool is free

    @property
    def tool_env(self) -> ToolEnv:
        return ToolEnv(self.user_id, self.task_id, self.thread_id)

    @property
    def user_text(self) -> str:
        """The text of the message that started the run."""
        msg = self.user_message or {}
        return "".join(p.get("text", "") for p in msg.get("parts", []) if p.get("type") == "text")

    async def history(self) -> list[dict[str, Any]]:
        """The thread's messages, oldest first (read when an agent asks: the demo agent never does)."""
        return await self._load_history()

    @asynccontextmanager
    async def step(self, node: str) -> AsyncIterator[None]:
        self.sink.set_node(node)
        await self.sink.emit(STEP_STARTED, {"node": node})
        yield
        await self.sink.emit(STEP_FINISHED, {"node": node})

    async def text_start(self) -> str:
        part_id = f"txt_{random_hex(16)}"
        await self.sink.emit(TEXT_START, {"messageId": self.message_id, "partId": part_id})
        return part_id

    async def text_delta(self, part_id: str, delta: str) -> None:
        await self.sink.emit(TEXT_DELTA, {"partId": part_id, "delta": delta})

    async def text_end(self, part_id: str) -> None:
        await self.sink.emit(TEXT_END, {"partId": part_id})

    async def say(self, text: str) -> None:
        """One whole text part."""
        part = await self.text_start()
        await self.text_delta(part, text)
        await self.text_end(part)

    async def tool_call(self, name: str, args: dict[str, Any], call_id: str | None = None) -> Any:
        """Announce a tool call, run it and return its output (a ToolError returns None after a `tool.error`)."""
        call_id = call_id or f"call_{random_hex(16)}"
        await self.sink.emit(TOOL_CALL_START, {"toolCallId": call_id, "toolName": name})
        await self.sink.emit(TOOL_CALL_ARGS, {"toolCallId": call_id, "delta": orjson.dumps(args).decode()})
        await self.sink.emit(TOOL_CALL_END, {"toolCallId": call_id, "toolName": name, "input": args})
        return await self.run_tool(call_id, name, args)

    async def run_tool(self, call_id: str, name: str, args: dict[str, Any]) -> Any:
        tool = self.tools.get(name)
        if tool is None:
            await self.sink.emit(TOOL_ERROR, {"toolCallId": call_id, "error": f"unknown tool: {name}"})
            return None
        if tool.parks:
            prompt = str(args.get("prompt", ""))
            self.park(name, prompt, {"toolCallId": call_id, "toolName": name, "input": args})
        ok, value = await self.execute_tool(call_id, tool, args)
        return value if ok else None

    async def execute_tool(self, call_id: str, tool: Tool, args: dict[str, Any]) -> tuple[bool, Any]:
        """Run a tool that does not park (in a replay: take its recorded outcome) and emit
        `tool.result` or `tool.error`; a result that carries a file (an image of
        `generate_image`) is followed by a `file` event.  (True, output) or (False, error text).

        A tool that costs credits is paid before it runs and refunded when it fails; without
        enough credits the call ends in `tool.error` and the run fails `insufficient_credits`."""
        if self.recording is not None:
            ok, value = self.recording.next_outcome(tool.name)
        else:
            assert tool.run is not None
            charged = await self._pay(call_id, tool)
            try:
                ok, value = True, await tool.run(args, self.tool_env)
            except ToolError as exc:
                ok, value = False, str(exc)
            except Exception as exc:  # a broken tool must not end the run: the model hears about it
                log.exception("tool %s failed on task %s", tool.name, self.task_id)
                ok, value = False, f"the {tool.name} tool failed: {type(exc).__name__}"
            if not ok and charged and self.billing is not None:
                await self.billing.refund(tool.name, charged, self.tool_env)
        if ok:
            await self.sink.emit(TOOL_RESULT, {"toolCallId": call_id, "output": value, "executed": True})
            # Derived from the output (recorded or fresh), so a replay emits the same file again.
            file = tool.file_of(value)
            if file is not None:
                await self.sink.emit(FILE, file)
        else:
            await self.sink.emit(TOOL_ERROR, {"toolCallId": call_id, "error": value, "executed": True})
        return ok, value

    async def _pay(self, call_id: str, tool: Tool) -> int:
        """Debit the tool's price: the amount taken; AgentError `insufficient_credits` when short."""
        if self.billing is None:
            return 0
        try:
            return await self.billing.debit(tool.name, self.tool_env)
        except InsufficientCredits as exc:
            await self.sink.emit(TOOL_ERROR, {"toolCallId": call_id, "error": str(exc)})
            raise AgentError("insufficient_credits", str(exc)) from None

    def park(self, node: str, prompt: str, state: dict[str, Any]) -> None:
        """Stop the run here until a signal with the returned correlation key arrives."""
        raise Parked(node, self.sink.correlation_key(node), prompt, state)
