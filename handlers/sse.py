"""SSE framing, and the renderers of the one event log into each dialect.

Frames are built here and only here.  A live event's encoded chunk is
cached on the event, so a hundred readers of one run share one encoding.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

from handlers.times import iso_ms
from runs.hub import Batch, EventHub
from runs.manager import RunManager
from store import Event
from store.events import encode

KEEPALIVE = b": keepalive\n\n"
RETRY_MS = 2000
REPLAY_PAGE = 2000
MAX_CHUNKS_PER_FRAME = 512


def _ui_chunk(ev: Event) -> dict[str, Any] | None:
    """The AI SDK v5 UI message chunk of an event (fields that ai@5.0.0's strict schema accepts)."""
    d = ev.data
    t = ev.type
    if t == "text.delta":
        return {"type": "text-delta", "id": d["partId"], "delta": d["delta"]}
    if t == "run.started":
        return {"type": "start", "messageId": d["messageId"]}
    if t == "step.started":
        return {"type": "start-step"}
    if t == "step.finished":
        return {"type": "finish-step"}
    if t in ("text.start", "reasoning.start"):
        return {"type": t.replace(".", "-"), "id": d["partId"]}
    if t in ("text.end", "reasoning.end"):
        return {"type": t.replace(".", "-"), "id": d["partId"]}
    if t == "reasoning.delta":
        return {"type": "reasoning-delta", "id": d["partId"], "delta": d["delta"]}
    if t == "tool.call.start":
        return {"type": "tool-input-start", "toolCallId": d["toolCallId"], "toolName": d["toolName"]}
    if t == "tool.call.args":
        return {"type": "tool-input-delta", "toolCallId": d["toolCallId"], "inputTextDelta": d["delta"]}
    if t == "tool.call.end":
        return {"type": "tool-input-available", "toolCallId": d["toolCallId"], "toolName": d["toolName"], "input": d.get("input")}
    if t == "tool.result":
        return {"type": "tool-output-available", "toolCallId": d["toolCallId"], "output": d.get("output")}
    if t == "tool.error":
        return {"type": "tool-output-error", "toolCallId": d["toolCallId"], "errorText": str(d.get("error", ""))}
    if t == "file":
        return {"type": "file", "url": d["url"], "mediaType": d["mediaType"]}
    if t == "ui":
        return {"type": "data-ui", "data": d}
    if t == "job.parked":
        return {"type": "data-parked", "data": d}
    if t == "job.signal":
        return {"type": "data-signal", "data": d}
    if t == "run.finished":
        return {"type": "finish"}
    if t == "run.error":
        return {"type": "error", "errorText": d.get("message") or d.get("reason") or "error"}
    return None


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
    if ev.type == "run.finished":
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
        if ev.type == "run.error":
            flush()
            frames.append(native_terminal_frame(ev))
            continue
        chunk = ui_chunk_json(ev)
        if chunk:
            chunks.append(chunk)
        last_id = ev.id
        if ev.type == "run.finished":
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

_AG_UI_CUSTOM = {"job.parked": "parked", "job.signal": "signal", "ui": "ui", "file": "file"}


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
        d, t = ev.data, ev.type
        out: list[dict[str, Any]] = []
        if t == "run.started":
            self.message_id = d.get("messageId") or ev.task_id
            out.append({"type": "RUN_STARTED", "threadId": self.thread_id, "runId": self.run_id})
        elif t == "step.started":
            node = str(d.get("node") or "step")
            if node in self._steps:  # reopened (a resumed run): AG-UI refuses a step started twice
                self._steps.remove(node)
                out.append({"type": "STEP_FINISHED", "stepName": node})
            self._steps.append(node)
            out.append({"type": "STEP_STARTED", "stepName": node})
        elif t == "step.finished":
            node = str(d.get("node") or "step")
            if node in self._steps:
                self._steps.remove(node)
                out.append({"type": "STEP_FINISHED", "stepName": node})
        elif t == "text.start":
            out += self._end_text()
            self._text = d["partId"]
            out.append({"type": "TEXT_MESSAGE_START", "messageId": self.message_id, "role": "assistant"})
        elif t == "text.delta":
            if d["partId"] == self._text and d["delta"]:
                out.append({"type": "TEXT_MESSAGE_CONTENT", "messageId": self.message_id, "delta": d["delta"]})
        elif t == "text.end":
            if d["partId"] == self._text:
                out += self._end_text()
        elif t == "reasoning.start":
            self._reasoning.add(d["partId"])
            out += [{"type": "REASONING_START", "messageId": d["partId"]},
                    {"type": "REASONING_MESSAGE_START", "messageId": d["partId"], "role": "reasoning"}]
        elif t == "reasoning.delta":
            if d["partId"] in self._reasoning and d["delta"]:
                out.append({"type": "REASONING_MESSAGE_CONTENT", "messageId": d["partId"], "delta": d["delta"]})
        elif t == "reasoning.end":
            if d["partId"] in self._reasoning:
                out += self._end_reasoning(d["partId"])
        elif t == "tool.call.start":
            out += self._start_tool(d["toolCallId"], d["toolName"])
        elif t == "tool.call.args":
            if d["toolCallId"] in self._tools and d["delta"]:
                self._tools[d["toolCallId"]] = True
                out.append({"type": "TOOL_CALL_ARGS", "toolCallId": d["toolCallId"], "delta": d["delta"]})
        elif t == "tool.call.end":
            call_id = d["toolCallId"]
            if call_id not in self._tools:  # announced whole, without a start
                out += self._start_tool(call_id, d["toolName"])
            out += self._end_tool(call_id, d.get("input"))
        elif t in ("tool.result", "tool.error"):
            call_id = d["toolCallId"]
            if call_id in self._tools:
                out += self._end_tool(call_id, None)
            content = encode(d.get("output")).decode() if t == "tool.result" else str(d.get("error") or "error")
            out.append({"type": "TOOL_CALL_RESULT", "messageId": ag_ui_tool_result_id(call_id),
                        "toolCallId": call_id, "content": content, "role": "tool"})
        elif t in _AG_UI_CUSTOM:
            out.append({"type": "CUSTOM", "name": _AG_UI_CUSTOM[t], "value": d})
        elif t == "run.finished":
            out += self._end_text()
            for part_id in sorted(self._reasoning):
                out += self._end_reasoning(part_id)
            for call_id in list(self._tools):
                out += self._end_tool(call_id, None)
            out += [{"type": "STEP_FINISHED", "stepName": node} for node in reversed(self._steps)]
            self._steps.clear()
            out.append({"type": "RUN_FINISHED", "threadId": self.thread_id, "runId": self.run_id})
        elif t == "run.error":
            error: dict[str, Any] = {"type": "RUN_ERROR", "message": error_text(ev)}
            if d.get("reason"):
                error["code"] = str(d["reason"])
            out.append(error)
        return out

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


# -- following the log --------------------------------------------------------

def unseen(batch: Batch, cursor: int) -> Batch | None:
    """The part of a live batch after `cursor` (the log replay may already have yielded the rest)."""
    if batch.first_id > cursor:
        return batch
    fresh = [e for e in batch.events if e.id > cursor]
    return Batch(fresh) if fresh else None


async def follow_task(
    runs: RunManager,
    hub: EventHub,
    task_id: str,
    cursor: int,
    keepalive_s: float,
    on_subscribed: Callable[[Any], None] | None = None,
) -> AsyncIterator[Batch | None]:
    """Yield the task's events after `cursor`, in batches: the log first, then live commits.

    Subscribes before reading the log and drops ids already yielded, so an
    event committed between the two is neither missed nor repeated.  Yields
    None when `keepalive_s` passes without events; ends after the terminal
    event, or when the subscription is closed and everything queued is out.
    """
    sub = hub.subscribe_task(task_id)
    if on_subscribed is not None:
        on_subscribed(sub)
    try:
        replaying = True
        checked_end = False
        while True:
            if replaying:
                # Right after subscribing, with no await in between: the in-memory log
                # and the subscription together hold every committed event.
                recent = hub.recent.after(task_id, cursor)
                page = recent[:REPLAY_PAGE] if recent is not None else await runs.events_after(task_id, cursor, REPLAY_PAGE)
                if page:
                    cursor = page[-1].id
                    done = page[-1].terminal
                    yield Batch(page)
                    if done:
                        return
                    continue
                replaying = False
                if not checked_end:  # resumed at or after the end of a run that is over: nothing will follow
                    checked_end = True
                    last = await runs.last_event(task_id)
                    if last is not None and last.terminal and last.id <= cursor:
                        return
            if sub.lagged:  # the reader fell behind: its queue was dropped, catch up from the log
                sub.lagged = False
                sub.take()
                replaying = True
                continue
            batches = sub.take()
            for queued in batches:
                if (batch := unseen(queued, cursor)) is None:
                    continue
                cursor = batch.last.id
                done = batch.last.terminal
                yield batch
                if done:
                    return
            if batches:
                del batch, queued, batches  # an idle stream keeps no events alive
                continue
            if sub.closed:  # only after everything already queued was handed out
                return
            if not await sub.wait(keepalive_s):
                yield None
    finally:
        hub.unsubscribe(sub)


async def follow_thread(
    runs: RunManager,
    hub: EventHub,
    thread_id: str,
    cursor: int,
    *,
    active: bool,
    idle_limit_s: float,
    keepalive_s: float,
    on_subscribed: Callable[[Any], None] | None = None,
) -> AsyncIterator[Batch | None]:
    """Yield the events of every task of the thread after `cursor`: the log first, then live commits.

    Subscribes before reading the log and drops ids already yielded (as
    `follow_task`).  `active` says whether a task of the thread is pending or
    running now (read before this is called; events read after it correct it).
    A parked task waits for a person and counts as idle.  Ends once the thread
    has been idle for `idle_limit_s` seconds, or when the subscription is closed
    and everything queued is out; yields None when `keepalive_s` passes without events.
    """
    loop = asyncio.get_running_loop()
    idle_since: float | None = None if active else loop.time()
    sub = hub.subscribe_thread(thread_id)
    if on_subscribed is not None:
        on_subscribed(sub)

    def note(batch: Batch) -> None:
        nonlocal idle_since
        for ev in batch.events:
            if ev.type in ("run.started", "job.signal"):
                idle_since = None
            elif ev.terminal or ev.type == "job.parked":
                idle_since = loop.time()

    try:
        replaying = True
        while True:
            if replaying:
                page = await runs.thread_events_after(thread_id, cursor, REPLAY_PAGE)
                if page:
                    cursor = page[-1].id
                    logged = Batch(page)
                    note(logged)
                    yield logged
                    continue
                replaying = False
            if sub.lagged:  # fell behind: its queue was dropped, catch up from the log
                sub.lagged = False
                sub.take()
                replaying = True
                continue
            batches = sub.take()
            for queued in batches:
                if (batch := unseen(queued, cursor)) is None:
                    continue
                cursor = batch.last.id
                note(batch)
                yield batch
            if batches:
                del batch, queued, batches  # an idle stream keeps no events alive
                continue
            if sub.closed:
                return
            wait = keepalive_s
            if idle_since is not None:
                left = idle_since + idle_limit_s - loop.time()
                if left <= 0:
                    return
                wait = min(wait, left)
            if not await sub.wait(wait):
                if idle_since is not None and loop.time() >= idle_since + idle_limit_s:
                    return
                yield None
    finally:
        hub.unsubscribe(sub)


class StreamSlots:
    """Open streams: a cap per user, and a wake-up when the last one ends (drain)."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._open: dict[str, int] = {}
        self._total = 0
        self._idle: asyncio.Event | None = None

    @property
    def total(self) -> int:
        return self._total

    def acquire(self, user_id: str) -> bool:
        held = self._open.get(user_id, 0)
        if held >= self.per_user:
            return False
        self._open[user_id] = held + 1
        self._total += 1
        return True

    def release(self, user_id: str) -> None:
        held = self._open.get(user_id, 0) - 1
        if held > 0:
            self._open[user_id] = held
        else:
            self._open.pop(user_id, None)
        self._total -= 1
        if self._total == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no stream is open (True) or `timeout` passes (False)."""
        if self._total == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._idle = None


# -- the job timeline (seed 003: /api/jobs/:id/trace and /events) ---------------

class Timeline:
    """Maps canonical events to timeline entries; keeps the little state it needs (tool names)."""

    def __init__(self) -> None:
        self._tools: dict[str, str] = {}

    def entry(self, ev: Event) -> dict[str, Any] | None:
        d, t = ev.data, ev.type
        entry: dict[str, Any]
        if t == "run.started":
            entry = {"event": "JobCreated"}
        elif t == "step.started":
            entry = {"event": "StepStarted", "node": d.get("node")}
        elif t == "tool.call.start":
            self._tools[d["toolCallId"]] = d["toolName"]
            return None
        elif t in ("tool.result", "tool.error"):
            entry = {"event": "ToolCompleted", "node": self._tools.get(d["toolCallId"], d["toolCallId"])}
            if t == "tool.error":
                entry["error"] = d.get("error")
        elif t == "job.parked":
            entry = {"event": "JobParked", "node": d.get("node"), "correlation_key": d.get("correlationKey")}
        elif t == "job.signal":
            entry = {"event": "SignalReceived", "correlation_key": d.get("correlationKey"), "payload": d.get("payload")}
        elif t == "run.finished":
            entry = {"event": "JobCompleted"}
        elif t == "run.error":
            entry = {"event": "JobCancelled" if d.get("status") == "cancelled" else "JobFailed",
                     "reason": d.get("reason"), "message": d.get("message")}
        else:
            return None
        entry["time"] = iso_ms(ev.created_at)
        return entry

    def frames(self, batch: Batch) -> list[bytes]:
        """One SSE frame per timeline entry, each with the id of its event (a valid cursor)."""
        out = []
        for ev in batch.events:
            entry = self.entry(ev)
            if entry is not None:
                out.append(b"id: %d\ndata: " % ev.id + encode(entry) + b"\n\n")
        return out


def replay_steps(events: list[Event]) -> list[dict[str, Any]]:
    """The recorded steps of a run: per step its node, times, the model's or agent's text,
    its tool calls with inputs and outputs, and the signal that woke it."""
    steps: list[dict[str, Any]] = []
    calls: dict[str, dict[str, Any]] = {}
    step: dict[str, Any] | None = None

    def current() -> dict[str, Any]:
        nonlocal step
        if step is None:
            step = {"node": None, "started_at": None, "text": "", "tool_calls": []}
            steps.append(step)
        return step

    for ev in events:
        t, d = ev.type, ev.data
        if t == "step.started":
            step = {"node": d.get("node"), "started_at": iso_ms(ev.created_at), "text": "", "tool_calls": []}
            steps.append(step)
        elif t == "step.finished":
            current()["finished_at"] = iso_ms(ev.created_at)
            step = None
        elif t == "text.delta":
            current()["text"] += d["delta"]
        elif t == "tool.call.end":
            call = calls[d["toolCallId"]] = {"tool_call_id": d["toolCallId"], "tool": d["toolName"], "input": d.get("input")}
            current()["tool_calls"].append(call)
        elif t in ("tool.result", "tool.error") and d["toolCallId"] in calls:
            calls[d["toolCallId"]]["output" if t == "tool.result" else "error"] = d.get("output" if t == "tool.result" else "error")
        elif t == "job.signal":
            current()["signal"] = {"correlation_key": d.get("correlationKey"), "payload": d.get("payload")}
        elif t == "job.parked":
            current()["parked"] = {"correlation_key": d.get("correlationKey"), "prompt": d.get("prompt")}
    return steps
