"""The types of the events of the one event log (SPEC section 3), one constant each.

Agents emit them through `agents.context.RunContext`, the run manager writes
the ones of a run's life (start, park, signal, end), and every surface renders
them in its own dialect (handlers/sse.py, handlers/jobs/timeline.py).  The
strings are what the `events.type` column holds and what the native stream
sends: they never change.  Each constant's docstring names its `data` fields.

They live in the store, the lowest layer, so that agents and the store itself
can name them without importing runs/.
"""
from __future__ import annotations

from typing import Final

RUN_STARTED: Final = "run.started"
"""{messageId, agentId}: the run exists; messageId is the assistant message's id."""

STEP_STARTED: Final = "step.started"
"""{node}: the agent entered a step (a node of its graph)."""

STEP_FINISHED: Final = "step.finished"
"""{node}: the step is done."""

TEXT_START: Final = "text.start"
"""{messageId, partId}: a text part opens."""

TEXT_DELTA: Final = "text.delta"
"""{partId, delta}: text appended to the open part."""

TEXT_END: Final = "text.end"
"""{partId}: the text part is complete."""

REASONING_START: Final = "reasoning.start"
"""{messageId, partId}: a reasoning part opens."""

REASONING_DELTA: Final = "reasoning.delta"
"""{partId, delta}: reasoning appended to the open part."""

REASONING_END: Final = "reasoning.end"
"""{partId}: the reasoning part is complete."""

TOOL_CALL_START: Final = "tool.call.start"
"""{toolCallId, toolName}: the model began a tool call."""

TOOL_CALL_ARGS: Final = "tool.call.args"
"""{toolCallId, delta}: a piece of the call's JSON arguments."""

TOOL_CALL_END: Final = "tool.call.end"
"""{toolCallId, toolName, input}: the call's complete input."""

TOOL_RESULT: Final = "tool.result"
"""{toolCallId, output, executed?}: the tool's result; `executed` when the tool ran (a replay's record keeps only those)."""

TOOL_ERROR: Final = "tool.error"
"""{toolCallId, error, executed?}: the tool failed."""

FILE: Final = "file"
"""{url, mediaType}: a file (e.g. an image) produced by the run."""

UI: Final = "ui"
"""{uiSchema}: a UI description for the client."""

JOB_PARKED: Final = "job.parked"
"""{node, correlationKey, prompt}: the run waits for a signal."""

JOB_SIGNAL: Final = "job.signal"
"""{correlationKey, payload}: the signal that woke the run."""

RUN_FINISHED: Final = "run.finished"
"""{}: the run completed (terminal)."""

RUN_ERROR: Final = "run.error"
"""{status: failed|cancelled, reason, message}: the run ended otherwise (terminal)."""

TERMINAL_TYPES: Final = frozenset({RUN_FINISHED, RUN_ERROR})
"""The types that end a run: a task's log ends with exactly one of them."""
