"""The refusals of the run manager.  They know no HTTP: each surface maps them
to its statuses and error bodies (handlers/base.py)."""
from __future__ import annotations

from typing import Any


class RunError(Exception):
    """Base of the refusals the run manager gives; surfaces map them to statuses."""


class Draining(RunError):
    """The server is draining: no new runs."""


class Forbidden(RunError):
    """The thread or task belongs to another user."""


class PlanRefused(Forbidden):
    """The user's plan does not allow this run (the agent, or no runs left today); 403 everywhere."""

    code = "PLAN_LIMIT"

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


class TooManyRunning(RunError):
    """The user already has as many runs going as the plan allows at once (parked ones do not count); 429."""

    code = "TOO_MANY_RUNNING"
    retry_after = 5  # seconds: a hint, runs end at their own pace

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


class TooManyAgents(RunError):
    """The user already has MAX_AGENTS_PER_USER agents."""

    code = "AGENT_LIMIT"


class ThreadBusy(RunError):
    """The thread already has a live task."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"thread has a live task {task_id}")
        self.task_id = task_id


class Invalid(RunError):
    """The request names something that does not fit (unknown agent, unknown rewind point)."""


class SignalRefused(RunError):
    """A signal the task cannot take: `code` is JOB_NOT_PARKED or INVALID_SIGNAL_KEY."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
