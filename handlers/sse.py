"""SSE framing, and the renderers of the one event log into each dialect.

Frames are built here and only here.  A live event's encoded chunk is
cached on the event, so a hundred readers of one run share one encoding.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, cast

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


def native_frames(batch: Batch) -> list[bytes]:
    """Frames of `id:` + `data: [chunk, ...]`; the id of a frame is the id of its last event.

    Rendered once per batch: every reader of a live commit shares the bytes.
    """
    cached = batch.rendered.get("native")
    if cached is None:
        cached = batch.rendered["native"] = _native_frames(batch.events)
    return cast(list[bytes], cached)


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


# -- following the log --------------------------------------------------------

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
            if sub.lagged:  # the reader fell behind: its queue was dropped, catch up from the log
                sub.lagged = False
                sub.take()
                replaying = True
                continue
            batches = sub.take()
            for batch in batches:
                if batch.first_id <= cursor:
                    fresh = [e for e in batch.events if e.id > cursor]
                    if not fresh:
                        continue
                    batch = Batch(fresh)
                cursor = batch.last.id
                done = batch.last.terminal
                yield batch
                if done:
                    return
            if batches:
                del batch, batches  # an idle stream keeps no events alive
                continue
            if sub.closed:  # only after everything already queued was handed out
                return
            if not await sub.wait(keepalive_s):
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

def iso_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC time with milliseconds."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
