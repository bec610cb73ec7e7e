"""Jobs for tests/agents/test_sandbox.py, run in sandbox workers (imported there, not by the server)."""
from __future__ import annotations

import os
import time
from typing import Any

from agents.sandbox import JobError


def echo(data: bytes | None = None, **kwargs: Any) -> dict[str, Any]:
    print("a job that prints does not disturb the answers")
    return {"kwargs": kwargs, "data": None if data is None else len(data), "pid": os.getpid()}


def spin(seconds: float) -> int:
    """Burn CPU (not sleep) for `seconds`: a runaway parse."""
    end = time.process_time() + seconds
    n = 0
    while time.process_time() < end:
        n += 1
    return os.getpid()


def refuse(message: str) -> None:
    raise JobError(message, status=422, code="NOPE")


def hog(mb: int) -> int:
    block = bytearray(mb * 1024 * 1024)
    return len(block)


def die() -> None:
    os._exit(3)


def unencodable() -> int:
    return 10**100


def pid() -> int:
    return os.getpid()


def slow_evaluate(expression: str) -> int:
    """A calculator whose every expression is a runaway: it only stops when killed."""
    return spin(3600)


def big(mb: int) -> str:
    return "x" * (mb * 1024 * 1024)
