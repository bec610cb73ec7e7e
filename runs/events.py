"""The canonical event types of the one event log (SPEC section 3).

Every surface renders these in its own dialect (handlers/sse.py); agents
emit them through `agents.context.RunContext`.  Each entry documents the
`data` fields of its type.
"""
from __future__ import annotations

EVENT_TYPES: dict[str, str] = {
    "run.started": "{messageId, agentId}: the run exists; messageId is the assistant message's id",
    "step.started": "{node}: the agent entered a step (a node of its graph)",
    "step.finished": "{node}: the step is done",
    "text.start": "{messageId, partId}: a text part opens",
    "text.delta": "{partId, delta}: text appended to the open part",
    "text.end": "{partId}: the text part is complete",
    "reasoning.start": "{messageId, partId}: a reasoning part opens",
    "reasoning.delta": "{partId, delta}",
    "reasoning.end": "{partId}",
    "tool.call.start": "{toolCallId, toolName}: the model began a tool call",
    "tool.call.args": "{toolCallId, delta}: a piece of the call's JSON arguments",
    "tool.call.end": "{toolCallId, toolName, input}: the call's complete input",
    "tool.result": "{toolCallId, output}: the tool's result",
    "tool.error": "{toolCallId, error}: the tool failed",
    "file": "{url, mediaType}: a file (e.g. an image) produced by the run",
    "ui": "{uiSchema}: a UI description for the client",
    "job.parked": "{node, correlationKey, prompt}: the run waits for a signal",
    "job.signal": "{correlationKey, payload}: the signal that woke the run",
    "run.finished": "{}: the run completed (terminal)",
    "run.error": "{status: failed|cancelled, reason, message}: the run ended otherwise (terminal)",
}
