"""What a log record is about, kept in context variables: the W3C trace id of the request
being handled (its `traceparent`), and the task whose run is executing.

asyncio copies the context into every task it creates, so a run started while a request is
handled carries that request's trace id, and whatever the run logs carries both.
"""
from __future__ import annotations

from contextvars import ContextVar

trace_id: ContextVar[str | None] = ContextVar("parley_trace_id", default=None)
task_id: ContextVar[str | None] = ContextVar("parley_task_id", default=None)
