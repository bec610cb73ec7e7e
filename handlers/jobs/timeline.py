"""The job timeline and the replay record of seed 003 (/api/jobs/:id/trace, /events, /replay)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from handlers.times import iso_ms
from runs.hub import Batch
from store import Event
from store.event_types import (
    JOB_PARKED,
    JOB_SIGNAL,
    RUN_ERROR,
    RUN_FINISHED,
    RUN_STARTED,
    STEP_FINISHED,
    STEP_STARTED,
    TEXT_DELTA,
    TOOL_CALL_END,
    TOOL_CALL_START,
    TOOL_ERROR,
    TOOL_RESULT,
)
from store.events import encode

# The timeline entry of each event type that has one, but for the tool events (see Timeline).
_ENTRIES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    RUN_STARTED: lambda d: {"event": "JobCreated"},
    STEP_STARTED: lambda d: {"event": "StepStarted", "node": d.get("node")},
    JOB_PARKED: lambda d: {"event": "JobParked", "node": d.get("node"), "correlation_key": d.get("correlationKey")},
    JOB_SIGNAL: lambda d: {"event": "SignalReceived", "correlation_key": d.get("correlationKey"), "payload": d.get("payload")},
    RUN_FINISHED: lambda d: {"event": "JobCompleted"},
    RUN_ERROR: lambda d: {"event": "JobCancelled" if d.get("status") == "cancelled" else "JobFailed",
                            "reason": d.get("reason"), "message": d.get("message")},
}


class Timeline:
    """Maps canonical events to timeline entries; keeps the little state it needs (tool names)."""

    def __init__(self) -> None:
        self._tools: dict[str, str] = {}

    def entry(self, ev: Event) -> dict[str, Any] | None:
        """The event's entry, with its time; None for an event the timeline does not show."""
        d, t = ev.data, ev.type
        if t == TOOL_CALL_START:
            self._tools[d["toolCallId"]] = d["toolName"]
            return None
        if t in (TOOL_RESULT, TOOL_ERROR):
            entry = self._tool_completed(ev)
        elif (make := _ENTRIES.get(t)) is not None:
            entry = make(d)
        else:
            return None
        entry["time"] = iso_ms(ev.created_at)
        return entry

    def _tool_completed(self, ev: Event) -> dict[str, Any]:
        d = ev.data
        entry = {"event": "ToolCompleted", "node": self._tools.get(d["toolCallId"], d["toolCallId"])}
        if ev.type == TOOL_ERROR:
            entry["error"] = d.get("error")
        return entry

    def frames(self, batch: Batch) -> list[bytes]:
        """One SSE frame per timeline entry, each with the id of its event (a valid cursor)."""
        out = []
        for ev in batch.events:
            entry = self.entry(ev)
            if entry is not None:
                out.append(b"id: %d\ndata: " % ev.id + encode(entry) + b"\n\n")
        return out


class _StepRecord:
    """The steps of a run, recorded event by event (see replay_steps)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self._calls: dict[str, dict[str, Any]] = {}
        self._step: dict[str, Any] | None = None

    def add(self, ev: Event) -> None:
        record = self._RECORD_BY_TYPE.get(ev.type)
        if record is not None:
            record(self, ev)

    def _current(self) -> dict[str, Any]:
        """The open step; events outside any step open one without a node."""
        return self._step if self._step is not None else self._open(None, None)

    def _open(self, node: Any, started_at: str | None) -> dict[str, Any]:
        step = self._step = {"node": node, "started_at": started_at, "text": "", "tool_calls": []}
        self.steps.append(step)
        return step

    def _step_started(self, ev: Event) -> None:
        self._open(ev.data.get("node"), iso_ms(ev.created_at))

    def _step_finished(self, ev: Event) -> None:
        self._current()["finished_at"] = iso_ms(ev.created_at)
        self._step = None

    def _text_delta(self, ev: Event) -> None:
        self._current()["text"] += ev.data["delta"]

    def _tool_call_end(self, ev: Event) -> None:
        d = ev.data
        call = self._calls[d["toolCallId"]] = {"tool_call_id": d["toolCallId"], "tool": d["toolName"], "input": d.get("input")}
        self._current()["tool_calls"].append(call)

    def _tool_outcome(self, ev: Event) -> None:
        call = self._calls.get(ev.data["toolCallId"])
        if call is not None:
            key = "output" if ev.type == TOOL_RESULT else "error"
            call[key] = ev.data.get(key)

    def _signal(self, ev: Event) -> None:
        self._current()["signal"] = {"correlation_key": ev.data.get("correlationKey"), "payload": ev.data.get("payload")}

    def _parked(self, ev: Event) -> None:
        self._current()["parked"] = {"correlation_key": ev.data.get("correlationKey"), "prompt": ev.data.get("prompt")}

    _RECORD_BY_TYPE: ClassVar[dict[str, Callable[[_StepRecord, Event], None]]] = {
        STEP_STARTED: _step_started,
        STEP_FINISHED: _step_finished,
        TEXT_DELTA: _text_delta,
        TOOL_CALL_END: _tool_call_end,
        TOOL_RESULT: _tool_outcome,
        TOOL_ERROR: _tool_outcome,
        JOB_SIGNAL: _signal,
        JOB_PARKED: _parked,
    }


def replay_steps(events: list[Event]) -> list[dict[str, Any]]:
    """The recorded steps of a run: per step its node, times, the model's or agent's text,
    its tool calls with inputs and outputs, and the signal that woke it."""
    record = _StepRecord()
    for ev in events:
        record.add(ev)
    return record.steps
