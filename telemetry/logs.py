"""`--log-format json`: every log record one JSON object on one line.

Fields: `ts` (RFC 3339, UTC, milliseconds), `level`, `logger`, `message`; `trace_id` (the
W3C trace id of the request being handled, and of the runs it started) and `task_id` (the
run executing) where there is one; whatever a record carries in `fields` (the access log's
method, path, status, …); `traceback` (or `stack`) as one string inside the same object.
Records of libraries (tornado, asyncio, psycopg) and Python's warnings come out the same way.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType
from typing import Any

import orjson

from telemetry import context

log = logging.getLogger("parley")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside it are escaped)."""

    def __init__(self, pid: bool = False) -> None:
        super().__init__()
        self.pid = pid  # name the process (--workers: which worker said it)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.pid:
            out["pid"] = record.process
        trace, task = context.trace_id.get(), context.task_id.get()
        if trace is not None:
            out["trace_id"] = trace
        if task is not None:
            out["task_id"] = task
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            out["traceback"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return _dumps(out)


def _timestamp(created: float) -> str:
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"


def _dumps(out: dict[str, Any]) -> str:
    try:
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # e.g. an int beyond 64 bits in `fields`: say it as text rather than lose the record
        return orjson.dumps({k: v if isinstance(v, str | None) else str(v) for k, v in out.items()}).decode()


def install(level: int, json: bool, pid: bool) -> None:
    """Log to stderr at `level`: text lines as before, or (`json`) one JSON object per line,
    Python's warnings and uncaught exceptions (of the main thread and others) included."""
    handler = logging.StreamHandler(sys.stderr)
    if json:
        handler.setFormatter(JsonFormatter(pid=pid))
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread
    else:
        process = " [%(process)d]" if pid else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s{process} %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def _log_uncaught(typ: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    log.critical("uncaught %s", typ.__name__, exc_info=(typ, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    log.critical("uncaught %s in thread %s", args.exc_type.__name__, name,
                 exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
