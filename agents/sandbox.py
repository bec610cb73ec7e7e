"""Work that must neither run on the event loop nor outlive its time limit (SPEC 13, trust boundaries).

A `Sandbox` keeps a few warm worker processes that each run one function: the
calculator's evaluator, a document's text extraction.  A call hands a worker its
keyword arguments (JSON) and optional bytes, and waits in a thread of its own (never
on the loop) until the answer comes back or the time limit passes; then the worker
is killed (SIGKILL: a runaway parse keeps no core busy) and replaced by a fresh one.

A worker is `python -P agents/sandbox.py MODULE:FUNCTION MEMORY_MB`: its address
space is capped (RLIMIT_AS), each job's CPU time too (RLIMIT_CPU, a backstop should
the server die mid-call), it exits when its stdin closes, and it never imports the
`agents` package (whose LLM and MCP clients cost 0.45 s and ~60 MB), only the
module it serves.  Answers are JSON, never pickles: a worker that untrusted input
subverted cannot make the server run code.
"""
from __future__ import annotations

import asyncio
import atexit
import importlib
import math
import os
import select
import struct
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import orjson

_HEADER = struct.Struct(">I")
_READY = b"ready"
MAX_ANSWER = 64 * 1024 * 1024  # bytes: a document's chunks are at most a few MB
STARTUP_S = 30.0  # a worker's imports, on a loaded machine


class JobError(Exception):
    """Raised by a job for its caller: the message and `details` cross the process boundary as they are."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class SandboxFailed(Exception):
    """The job did not answer: its worker crashed, ran out of memory, or the sandbox is saturated."""


class SandboxTimeout(SandboxFailed):
    """The job ran past its time limit; its worker was killed."""


class Sandbox:
    """Up to `workers` processes running `target` ("module:function"), each job under a time limit."""

    def __init__(self, target: str, *, workers: int = 2, memory_mb: int = 512, max_waiting: int = 64) -> None:
        self.target = target
        self.workers = workers
        self.memory_mb = memory_mb
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()  # each executor thread drives one worker at a time: its own
        self._live: set[_Worker] = set()
        self._waiting = 0
        _SANDBOXES.add(self)

    async def call(self, timeout_s: float, data: bytes | None = None, **kwargs: Any) -> Any:
        """The job's return value (`data`, when given, is passed as the keyword `data`).

        Raises JobError as the job raised it, SandboxTimeout after `timeout_s` seconds of
        work (queueing for a free worker not counted), SandboxFailed when it did not answer.
        """
        request = _frame(orjson.dumps({"kwargs": kwargs, "data": data is not None, "cpu_s": timeout_s}))
        request += _frame(data or b"")
        with self._lock:
            if self._waiting >= self.max_waiting:
                raise SandboxFailed(f"too many calls waiting ({self.max_waiting}); try again shortly")
            self._waiting += 1
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox")
            executor = self._executor
        try:
            future = executor.submit(self._exchange, request, timeout_s)
        except RuntimeError:  # closed meanwhile
            with self._lock:
                self._waiting -= 1
            raise SandboxFailed("the sandbox is closed") from None
        try:
            reply = await asyncio.wrap_future(future)
        finally:
            with self._lock:
                self._waiting -= 1
        try:
            answer = orjson.loads(reply)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise SandboxFailed("the worker's answer is not JSON")
        if "ok" in answer:
            return answer["ok"]
        if "error" in answer:
            error = JobError(str(answer["error"]))
            details = answer.get("details")
            error.details = details if isinstance(details, dict) else {}
            raise error
        raise SandboxFailed(str(answer.get("failed", "the worker failed")))

    def close(self) -> None:
        """Kill every worker and stop the threads; a later call starts afresh."""
        with self._lock:
            executor, self._executor = self._executor, None
            workers, self._live = self._live, set()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.kill()

    @property
    def pids(self) -> list[int]:
        """The process ids of the live workers."""
        with self._lock:
            return [w.pid for w in self._live if w.alive]

    def _exchange(self, request: bytes, timeout_s: float) -> bytes:
        """In an executor thread: this thread's worker runs the request (started or replaced as needed)."""
        worker: _Worker | None = getattr(self._local, "worker", None)
        if worker is None or not worker.alive:
            worker = self._local.worker = self._start()
        try:
            return worker.exchange(request, timeout_s)
        except BaseException:
            self._retire(worker)
            raise

    def _start(self) -> _Worker:
        worker = _Worker(self.target, self.memory_mb)
        with self._lock:
            self._live.add(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._live.discard(worker)
        self._local.worker = None


class _Worker:
    """One worker process and its pipes (used by one thread at a time)."""

    def __init__(self, target: str, memory_mb: int) -> None:
        argv = [sys.executable, "-P", str(Path(__file__).resolve()), target, str(memory_mb)]
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.pid = self._proc.pid
        self._killed = False
        try:
            if self._read(time.monotonic() + STARTUP_S) != _READY:
                raise SandboxFailed(f"the {target} worker did not start")
        except BaseException:
            self.kill()
            raise

    @property
    def alive(self) -> bool:
        return not self._killed and self._proc.poll() is None

    def exchange(self, request: bytes, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            view = memoryview(request)
            while view:  # a worker waiting for work reads at once: this does not wait long
                view = view[stdin.write(view) or 0:]
        except (OSError, ValueError):  # a broken pipe, or the sandbox closed meanwhile
            raise SandboxFailed("the worker stopped") from None
        return self._read(deadline, timeout_s)

    def _read(self, deadline: float, timeout_s: float | None = None) -> bytes:
        """One frame from the worker, or SandboxTimeout at the deadline, or SandboxFailed on EOF."""
        stdout = self._proc.stdout
        assert stdout is not None
        fd = stdout.fileno()
        buf = bytearray()
        need = _HEADER.size
        size: int | None = None
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(max(1, math.ceil(left * 1000))):
                if time.monotonic() < deadline:
                    continue
                if timeout_s is None:
                    raise SandboxFailed("the worker did not start in time")
                raise SandboxTimeout(f"it took longer than {timeout_s:g} s")
            try:
                chunk = os.read(fd, max(need - len(buf), 65536))
            except OSError:  # the sandbox closed meanwhile
                chunk = b""
            if not chunk:
                raise SandboxFailed("the worker stopped (out of memory or CPU time)")
            buf += chunk
            if size is None and len(buf) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(buf)
                if size > MAX_ANSWER:
                    raise SandboxFailed(f"the worker's answer is larger than {MAX_ANSWER} bytes")
                need = _HEADER.size + size
        return bytes(buf[_HEADER.size:need])

    def kill(self) -> None:
        """SIGKILL, reap, close the pipes (idempotent)."""
        if self._killed:
            return
        self._killed = True
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()


_SANDBOXES: weakref.WeakSet[Sandbox] = weakref.WeakSet()


@atexit.register
def close_all() -> None:
    """Kill every sandbox's workers (also run at interpreter exit)."""
    for sandbox in list(_SANDBOXES):
        sandbox.close()


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


# -- the worker side ----------------------------------------------------------------------------


def serve(argv: list[str]) -> int:
    """The worker's loop: import the target, say ready, then answer one job after another until EOF."""
    import resource

    target, memory_mb = argv[0], int(argv[1])
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # No core files: SIGXCPU dumps core, and so does a crash at the memory limit (orjson, for one,
    # does not survive a failed allocation).
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # The answers get fd 1 to themselves; anything a job prints goes to stderr.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    module, _, name = target.partition(":")
    function = getattr(importlib.import_module(module), name)
    _send(out, _READY)
    while True:
        head, data = _read_frame(inp), _read_frame(inp)
        if head is None or data is None:
            return 0
        job = orjson.loads(head)
        _limit_cpu(resource, float(job["cpu_s"]))
        kwargs = dict(job["kwargs"], **({"data": data} if job["data"] else {}))
        try:
            reply = orjson.dumps({"ok": function(**kwargs)})
        except JobError as exc:
            reply = orjson.dumps({"error": exc.message, "details": exc.details})
        except MemoryError:
            reply = orjson.dumps({"failed": f"out of memory (the limit is {memory_mb} MB)"})
        except RecursionError:
            reply = orjson.dumps({"failed": "nested too deeply"})
        except orjson.JSONEncodeError:
            reply = orjson.dumps({"failed": "the result cannot be encoded as JSON"})
        except Exception as exc:  # the job's own bug: say what, not the whole traceback
            reply = orjson.dumps({"failed": f"{type(exc).__name__} in the job"})
        _send(out, reply)


def _limit_cpu(resource: Any, budget_s: float) -> None:
    """SIGXCPU ends the worker when this job's CPU time passes its budget (plus a second):
    should the server not kill it (it died, say), the worker ends itself."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + budget_s) + 1
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _send(out: BinaryIO, payload: bytes) -> None:
    out.write(_HEADER.pack(len(payload)))
    view = memoryview(payload)
    while view:
        view = view[out.write(view) or 0:]


def _read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    body = stream.read(size)
    return body if len(body) == size else None


if __name__ == "__main__":
    # Run by path: make `agents` a bare package over this directory, so that the target's
    # module imports without agents/__init__.py and its heavy clients.
    import types

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here.parent))
    package = types.ModuleType("agents")
    package.__path__ = [str(here)]
    sys.modules["agents"] = package
    from agents import sandbox

    sys.exit(sandbox.serve(sys.argv[1:]))
