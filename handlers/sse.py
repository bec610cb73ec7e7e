"""SSE framing, and the renderers of the one event log into each dialect.

Frames are built here and only here.  A live event's encoded chunk is
cached on the event, so a hundred readers of one run share one encoding.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, cast

from runs.hub import Batch
from store import Event
from store.event_types import (
    FILE,
    JOB_PARKED,
    JOB_SIGNAL,
    REASONING_DELTA,
    REASONING_END,
    REASONING_START,
    RUN_ERROR,
    RUN_FINISHED,
    RUN_STARTED,
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
    UI,
)
from store.events import encode

KEEPALIVE = b": keepalive\n\n"
RETRY_MS = 2000
RETRY = b"retry: %d\n\n" % RETRY_MS  # EventSource clients reconnect after RETRY_MS
MAX_CHUNKS_PER_FRAME = 512


def _part(kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda d: {"type": kind, "id": d["partId"]}


def _custom_data(kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda d: {"type": kind, "data": d}


# The AI SDK v5 UI message chunk of each event type (fields that ai@5.0.0's strict schema accepts).
_UI_CHUNKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    RUN_STARTED: lambda d: {"type": "start", "messageId": d["messageId"]},
    STEP_STARTED: lambda d: {"type": "start-step"},
    STEP_FINISHED: lambda d: {"type": "finish-step"},
    TEXT_START: _part("text-start"),
    TEXT_DELTA: lambda d: {"type": "text-delta", "id": d["partId"], "delta": d["delta"]},
    TEXT_END: _part("text-end"),
    REASONING_START: _part("reasoning-start"),
    REASONING_DELTA: lambda d: {"type": "reasoning-delta", "id": d["partId"], "delta": d["delta"]},
    REASONING_END: _part("reasoning-end"),
    TOOL_CALL_START: lambda d: {"type": "tool-input-start", "toolCallId": d["toolCallId"], "toolName": d["toolName"]},
    TOOL_CALL_ARGS: lambda d: {"type": "tool-input-delta", "toolCallId": d["toolCallId"], "inputTextDelta": d["delta"]},
    TOOL_CALL_END: lambda d: {"type": "tool-input-available", "toolCallId": d["toolCallId"], "toolName": d["toolName"],
                                "input": d.get("input")},
    TOOL_RESULT: lambda d: {"type": "tool-output-available", "toolCallId": d["toolCallId"], "output": d.get("output")},
    TOOL_ERROR: lambda d: {"type": "tool-output-error", "toolCallId": d["toolCallId"], "errorText": str(d.get("error", ""))},
    FILE: lambda d: {"type": "file", "url": d["url"], "mediaType": d["mediaType"]},
    UI: _custom_data("data-ui"),
    JOB_PARKED: _custom_data("data-parked"),
    JOB_SIGNAL: _custom_data("data-signal"),
    RUN_FINISHED: lambda d: {"type": "finish"},
    RUN_ERROR: lambda d: {"type": "error", "errorText": d.get("message") or d.get("reason") or "error"},
}


def _ui_chunk(ev: Event) -> dict[str, Any] | None:
    """The AI SDK v5 UI message chunk of an event; None for a type that has none."""
    make = _UI_CHUNKS.get(ev.type)
    return make(ev.data) if make is not None else None


def ui_chunk_json(ev: Event) -> bytes:
    """The encoded chunk (b"" when the event has none), made once per event."""
    cached = ev.ui
    if cached is None:
        chunk = _ui_chunk(ev)
        cached = ev.ui = encode(chunk) if chunk is not None else b""
    return cached


def _data_lines(text: str) -> bytes:
    """`data:` lines for a text value; a newline in it starts another `data:` line."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return b"".join(b"data: " + line.encode() + b"\n" for line in lines)


def error_text(ev: Event) -> str:
    return str(ev.data.get("message") or ev.data.get("reason") or "error")


# -- kira's native framing (SPEC section 4) -------------------------------------

def native_terminal_frame(ev: Event) -> bytes:
    """The closing frame: `event: done` after success, `event: error` with a plain-text message otherwise."""
    if ev.type == RUN_FINISHED:
        return b"id: %d\nevent: done\ndata: \n\n" % ev.id
    return b"id: %d\nevent: error\n" % ev.id + _data_lines(error_text(ev)) + b"\n"


def _once(batch: Batch, dialect: str, render: Callable[[list[Event]], list[bytes]]) -> list[bytes]:
    """The batch's frames in `dialect`, rendered once: every reader of a live commit shares the bytes."""
    cached = batch.rendered.get(dialect)
    if cached is None:
        cached = batch.rendered[dialect] = render(batch.events)
    return cast(list[bytes], cached)


def native_frames(batch: Batch) -> list[bytes]:
    """Frames of `id:` + `data: [chunk, ...]`; the id of a frame is the id of its last event.

    Rendered once per batch: every reader of a live commit shares the bytes.
    """
    return _once(batch, "native", _native_frames)


def _native_frames(events: list[Event]) -> list[bytes]:
    frames: list[bytes] = []
    chunks: list[bytes] = []
    last_id = 0

    def flush() -> None:
        if chunks:
            frames.append(b"id: %d\ndata: [" % last_id + b",".join(chunks) + b"]\n\n")
            chunks.clear()

    for ev in events:
        if ev.type == RUN_ERROR:
            flush()
            frames.append(native_terminal_frame(ev))
            continue
        chunk = ui_chunk_json(ev)
        if chunk:
            chunks.append(chunk)
        last_id = ev.id
        if ev.type == RUN_FINISHED:
            flush()
            frames.append(native_terminal_frame(ev))
        elif len(chunks) >= MAX_CHUNKS_PER_FRAME:
            flush()
    flush()
    return frames


# -- the AI SDK's own framing (SPEC section 5: /agent/streaming, /agent/stream…) ----

AI_SDK_HEADER = ("x-vercel-ai-ui-message-stream", "v1")
AI_SDK_DONE = b"data: [DONE]\n\n"


def ai_sdk_frames(batch: Batch) -> list[bytes]:
    """`data: {chunk}\\n\\n` per UI message chunk, no `id:` or `event:`; after the terminal
    event's chunk (`finish`, or `error {errorText}` for a failed or cancelled run), `data: [DONE]`.

    A batch's frames are joined into writes of at most MAX_CHUNKS_PER_FRAME frames,
    rendered once per batch for every reader of a live commit.
    """
    return _once(batch, "ai-sdk", _ai_sdk_frames)


def _ai_sdk_frames(events: list[Event]) -> list[bytes]:
    writes: list[bytes] = []
    frames: list[bytes] = []
    for ev in events:
        chunk = ui_chunk_json(ev)
        if chunk:
            frames.append(b"data: " + chunk + b"\n\n")
        if ev.terminal:
            frames.append(AI_SDK_DONE)
        if len(frames) >= MAX_CHUNKS_PER_FRAME:
            writes.append(b"".join(frames))
            frames.clear()
    if frames:
        writes.append(b"".join(frames))
    return writes


# -- seed 002 events (/api/v1/agent/runs/:threadId/events) ----------------------------

def agent_event_frames(batch: Batch, run_ids: Mapping[str, str]) -> list[bytes]:
    """One frame per event: `id:`, `event:` its canonical type, and `data: {"type", "taskId",
    "threadId", "runId", "data"}` (`runId` from `run_ids`, the task's id when it has none).

    A batch's frames are joined into writes of at most MAX_CHUNKS_PER_FRAME frames,
    rendered once per batch for every reader of a live commit.
    """
    return _once(batch, "agent-v1", lambda events: _agent_event_frames(events, run_ids))


def _agent_event_frames(events: list[Event], run_ids: Mapping[str, str]) -> list[bytes]:
    writes: list[bytes] = []
    frames: list[bytes] = []
    for ev in events:
        head = encode({"type": ev.type, "taskId": ev.task_id, "threadId": ev.thread_id,
                       "runId": run_ids.get(ev.task_id, ev.task_id)})
        # The stored payload is spliced in as it is: compact JSON, never re-encoded.
        frames.append(b"id: %d\nevent: %s\ndata: %s,\"data\":%s}\n\n"
                      % (ev.id, ev.type.encode(), head[:-1], ev.data_text.encode()))
        if len(frames) >= MAX_CHUNKS_PER_FRAME:
            writes.append(b"".join(frames))
            frames.clear()
    if frames:
        writes.append(b"".join(frames))
    return writes


# -- AG-UI (POST /api/v1/agent/ag-ui) -------------------------------------------------

_AG_UI_CUSTOM = {JOB_PARKED: "parked", JOB_SIGNAL: "signal", UI: "ui", FILE: "file"}


def _node(ev: Event) -> str:
    return str(ev.data.get("node") or "step")


def ag_ui_tool_result_id(tool_call_id: str) -> str:
    """The id of the tool message that a TOOL_CALL_RESULT mints (AG-UI gives results their own message)."""
    return f"{tool_call_id}-result"


class AgUiRun:
    """Renders one task's canonical events as AG-UI events, in `data: {json}` frames only.

    The real `@ag-ui/client` (1.x) verifies the sequence: every START before its
    CONTENT/END, no step started twice, and nothing open at RUN_FINISHED.  The log
    can leave a step open (a park ends the run inside its step; the resumed run
    opens new ones), so this keeps what is open and closes it where AG-UI needs it.
    Every text part of the run streams into the one assistant message (the id that
    `/messages` holds), and tool calls hang off that message; so the client's
    assembled messages are the server's, message for message.  No field is null.
    """

    def __init__(self, thread_id: str, run_id: str) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.message_id = ""
        self._text: str | None = None  # the open text part
        self._reasoning: set[str] = set()
        self._tools: dict[str, bool] = {}  # open tool calls: whether arguments were sent
        self._steps: list[str] = []

    def frames(self, batch: Batch) -> list[bytes]:
        out = [b"data: " + encode(e) + b"\n\n" for ev in batch.events for e in self.events(ev)]
        return [b"".join(out[i:i + MAX_CHUNKS_PER_FRAME]) for i in range(0, len(out), MAX_CHUNKS_PER_FRAME)]

    def events(self, ev: Event) -> list[dict[str, Any]]:
        """The AG-UI events of one canonical event, closing what AG-UI needs closed first."""
        render = self._RENDER_BY_TYPE.get(ev.type)
        return render(self, ev) if render is not None else []

    # -- one method per family of canonical events ----------------------------------

    def _run_started(self, ev: Event) -> list[dict[str, Any]]:
        self.message_id = ev.data.get("messageId") or ev.task_id
        return [{"type": "RUN_STARTED", "threadId": self.thread_id, "runId": self.run_id}]

    def _step_started(self, ev: Event) -> list[dict[str, Any]]:
        node = _node(ev)
        out = self._end_step(node)  # reopened (a resumed run): AG-UI refuses a step started twice
        self._steps.append(node)
        out.append({"type": "STEP_STARTED", "stepName": node})
        return out

    def _step_finished(self, ev: Event) -> list[dict[str, Any]]:
        return self._end_step(_node(ev))

    def _text_start(self, ev: Event) -> list[dict[str, Any]]:
        out = self._end_text()
        self._text = ev.data["partId"]
        out.append({"type": "TEXT_MESSAGE_START", "messageId": self.message_id, "role": "assistant"})
        return out

    def _text_delta(self, ev: Event) -> list[dict[str, Any]]:
        d = ev.data
        if d["partId"] != self._text or not d["delta"]:
            return []
        return [{"type": "TEXT_MESSAGE_CONTENT", "messageId": self.message_id, "delta": d["delta"]}]

    def _text_end(self, ev: Event) -> list[dict[str, Any]]:
        return self._end_text() if ev.data["partId"] == self._text else []

    def _reasoning_start(self, ev: Event) -> list[dict[str, Any]]:
        part_id = ev.data["partId"]
        self._reasoning.add(part_id)
        return [{"type": "REASONING_START", "messageId": part_id},
                {"type": "REASONING_MESSAGE_START", "messageId": part_id, "role": "reasoning"}]

    def _reasoning_delta(self, ev: Event) -> list[dict[str, Any]]:
        d = ev.data
        if d["partId"] not in self._reasoning or not d["delta"]:
            return []
        return [{"type": "REASONING_MESSAGE_CONTENT", "messageId": d["partId"], "delta": d["delta"]}]

    def _reasoning_end(self, ev: Event) -> list[dict[str, Any]]:
        part_id = ev.data["partId"]
        return self._end_reasoning(part_id) if part_id in self._reasoning else []

    def _tool_call_start(self, ev: Event) -> list[dict[str, Any]]:
        return self._start_tool(ev.data["toolCallId"], ev.data["toolName"])

    def _tool_call_args(self, ev: Event) -> list[dict[str, Any]]:
        d = ev.data
        if d["toolCallId"] not in self._tools or not d["delta"]:
            return []
        self._tools[d["toolCallId"]] = True
        return [{"type": "TOOL_CALL_ARGS", "toolCallId": d["toolCallId"], "delta": d["delta"]}]

    def _tool_call_end(self, ev: Event) -> list[dict[str, Any]]:
        call_id = ev.data["toolCallId"]
        # A call announced whole, without a start, is started here.
        out = [] if call_id in self._tools else self._start_tool(call_id, ev.data["toolName"])
        return out + self._end_tool(call_id, ev.data.get("input"))

    def _tool_outcome(self, ev: Event) -> list[dict[str, Any]]:
        d = ev.data
        call_id = d["toolCallId"]
        out = self._end_tool(call_id, None) if call_id in self._tools else []
        content = encode(d.get("output")).decode() if ev.type == TOOL_RESULT else str(d.get("error") or "error")
        out.append({"type": "TOOL_CALL_RESULT", "messageId": ag_ui_tool_result_id(call_id),
                    "toolCallId": call_id, "content": content, "role": "tool"})
        return out

    def _custom(self, ev: Event) -> list[dict[str, Any]]:
        return [{"type": "CUSTOM", "name": _AG_UI_CUSTOM[ev.type], "value": ev.data}]

    def _run_finished(self, ev: Event) -> list[dict[str, Any]]:
        """Closes everything still open (AG-UI refuses RUN_FINISHED with anything open), steps last."""
        out = self._end_text()
        for part_id in sorted(self._reasoning):
            out += self._end_reasoning(part_id)
        for call_id in list(self._tools):
            out += self._end_tool(call_id, None)
        out += [{"type": "STEP_FINISHED", "stepName": node} for node in reversed(self._steps)]
        self._steps.clear()
        out.append({"type": "RUN_FINISHED", "threadId": self.thread_id, "runId": self.run_id})
        return out

    def _run_error(self, ev: Event) -> list[dict[str, Any]]:
        error: dict[str, Any] = {"type": "RUN_ERROR", "message": error_text(ev)}
        if ev.data.get("reason"):
            error["code"] = str(ev.data["reason"])
        return [error]

    _RENDER_BY_TYPE: ClassVar[dict[str, Callable[[AgUiRun, Event], list[dict[str, Any]]]]] = {
        RUN_STARTED: _run_started,
        STEP_STARTED: _step_started,
        STEP_FINISHED: _step_finished,
        TEXT_START: _text_start,
        TEXT_DELTA: _text_delta,
        TEXT_END: _text_end,
        REASONING_START: _reasoning_start,
        REASONING_DELTA: _reasoning_delta,
        REASONING_END: _reasoning_end,
        TOOL_CALL_START: _tool_call_start,
        TOOL_CALL_ARGS: _tool_call_args,
        TOOL_CALL_END: _tool_call_end,
        TOOL_RESULT: _tool_outcome,
        TOOL_ERROR: _tool_outcome,
        **dict.fromkeys(_AG_UI_CUSTOM, _custom),
        RUN_FINISHED: _run_finished,
        RUN_ERROR: _run_error,
    }

    # -- what is open -----------------------------------------------------------------

    def _end_step(self, node: str) -> list[dict[str, Any]]:
        if node not in self._steps:
            return []
        self._steps.remove(node)
        return [{"type": "STEP_FINISHED", "stepName": node}]

    def _end_text(self) -> list[dict[str, Any]]:
        if self._text is None:
            return []
        self._text = None
        return [{"type": "TEXT_MESSAGE_END", "messageId": self.message_id}]

    def _end_reasoning(self, part_id: str) -> list[dict[str, Any]]:
        self._reasoning.discard(part_id)
        return [{"type": "REASONING_MESSAGE_END", "messageId": part_id}, {"type": "REASONING_END", "messageId": part_id}]

    def _start_tool(self, call_id: str, name: str) -> list[dict[str, Any]]:
        self._tools[call_id] = False
        start = {"type": "TOOL_CALL_START", "toolCallId": call_id, "toolCallName": name}
        if self.message_id:
            start["parentMessageId"] = self.message_id
        return [start]

    def _end_tool(self, call_id: str, args: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self._tools.pop(call_id, True) and args is not None:  # no arguments streamed: send them whole
            out.append({"type": "TOOL_CALL_ARGS", "toolCallId": call_id, "delta": encode(args).decode()})
        out.append({"type": "TOOL_CALL_END", "toolCallId": call_id})
        return out
