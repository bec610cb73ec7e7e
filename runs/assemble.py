"""Fold a task's canonical events into the assistant UIMessage parts.

The same folding as the AI SDK's `readUIMessageStream`, done on the
server so that `/messages` returns what a streaming client assembled.
"""
from __future__ import annotations

from typing import Any

from store import Event
from store.event_types import (
    FILE,
    JOB_PARKED,
    JOB_SIGNAL,
    REASONING_DELTA,
    REASONING_END,
    REASONING_START,
    STEP_STARTED,
    TEXT_DELTA,
    TEXT_END,
    TEXT_START,
    TOOL_CALL_END,
    TOOL_CALL_START,
    TOOL_ERROR,
    TOOL_RESULT,
    UI,
)


class MessageAssembler:
    def __init__(self) -> None:
        self._parts: list[dict[str, Any]] = []
        # Open text/reasoning parts collect their deltas in a list (joined once):
        # `text += delta` on a dict value would copy the whole text every time.
        self._open: dict[str, tuple[dict[str, Any], list[str]]] = {}
        self._tools: dict[str, dict[str, Any]] = {}

    @property
    def parts(self) -> list[dict[str, Any]]:
        """The parts so far (open text parts carry their text up to now)."""
        for part, pieces in self._open.values():
            part["text"] = "".join(pieces)
        return self._parts

    def apply_all(self, events: list[Event]) -> MessageAssembler:
        for ev in events:
            self.apply(ev.type, ev.data)
        return self

    def apply(self, type: str, data: dict[str, Any]) -> None:
        handler = _HANDLERS.get(type)
        if handler is not None:
            handler(self, data)

    @property
    def text(self) -> str:
        return "".join(p["text"] for p in self.parts if p["type"] == "text")

    def _start_step(self, data: dict[str, Any]) -> None:
        self._parts.append({"type": "step-start"})

    def _start_span(self, kind: str, data: dict[str, Any]) -> None:
        part = {"type": kind, "text": "", "state": "streaming"}
        self._open[data["partId"]] = (part, [])
        self._parts.append(part)

    def _delta(self, data: dict[str, Any]) -> None:
        span = self._open.get(data["partId"])
        if span is not None:
            span[1].append(data["delta"])

    def _end_span(self, data: dict[str, Any]) -> None:
        span = self._open.pop(data["partId"], None)
        if span is not None:
            part, pieces = span
            part["text"] = "".join(pieces)
            part["state"] = "done"

    def _tool_start(self, data: dict[str, Any]) -> None:
        part = {"type": f"tool-{data['toolName']}", "toolCallId": data["toolCallId"], "state": "input-streaming"}
        self._tools[data["toolCallId"]] = part
        self._parts.append(part)

    def _tool_input(self, data: dict[str, Any]) -> None:
        part = self._tools.get(data["toolCallId"])
        if part is None:
            self._tool_start(data)
            part = self._tools[data["toolCallId"]]
        part["state"] = "input-available"
        part["input"] = data.get("input")

    def _tool_result(self, data: dict[str, Any]) -> None:
        part = self._tools.get(data["toolCallId"])
        if part is not None:
            part["state"] = "output-available"
            part["output"] = data.get("output")

    def _tool_error(self, data: dict[str, Any]) -> None:
        part = self._tools.get(data["toolCallId"])
        if part is not None:
            part["state"] = "output-error"
            part["errorText"] = data.get("error", "")

    def _file(self, data: dict[str, Any]) -> None:
        self._parts.append({"type": "file", "url": data["url"], "mediaType": data["mediaType"]})

    def _data(self, name: str, data: dict[str, Any]) -> None:
        self._parts.append({"type": f"data-{name}", "data": data})


_HANDLERS: dict[str, Any] = {
    STEP_STARTED: MessageAssembler._start_step,
    TEXT_START: lambda a, d: a._start_span("text", d),
    TEXT_DELTA: MessageAssembler._delta,
    TEXT_END: MessageAssembler._end_span,
    REASONING_START: lambda a, d: a._start_span("reasoning", d),
    REASONING_DELTA: MessageAssembler._delta,
    REASONING_END: MessageAssembler._end_span,
    TOOL_CALL_START: MessageAssembler._tool_start,
    TOOL_CALL_END: MessageAssembler._tool_input,
    TOOL_RESULT: MessageAssembler._tool_result,
    TOOL_ERROR: MessageAssembler._tool_error,
    FILE: MessageAssembler._file,
    UI: lambda a, d: a._data("ui", d),
    JOB_PARKED: lambda a, d: a._data("parked", d),
    JOB_SIGNAL: lambda a, d: a._data("signal", d),
}
