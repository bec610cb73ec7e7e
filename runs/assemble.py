"""Fold a task's canonical events into the assistant UIMessage parts.

The same folding as the AI SDK's `readUIMessageStream`, done on the
server so that `/messages` returns what a streaming client assembled.
"""
from __future__ import annotations

from typing import Any

from store import Event


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
    "step.started": MessageAssembler._start_step,
    "text.start": lambda a, d: a._start_span("text", d),
    "text.delta": MessageAssembler._delta,
    "text.end": MessageAssembler._end_span,
    "reasoning.start": lambda a, d: a._start_span("reasoning", d),
    "reasoning.delta": MessageAssembler._delta,
    "reasoning.end": MessageAssembler._end_span,
    "tool.call.start": MessageAssembler._tool_start,
    "tool.call.end": MessageAssembler._tool_input,
    "tool.result": MessageAssembler._tool_result,
    "tool.error": MessageAssembler._tool_error,
    "file": MessageAssembler._file,
    "ui": lambda a, d: a._data("ui", d),
    "job.parked": lambda a, d: a._data("parked", d),
    "job.signal": lambda a, d: a._data("signal", d),
}
