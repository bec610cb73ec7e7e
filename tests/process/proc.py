"""Real server processes for the process tests: start, signal, kill -9, talk plain HTTP.

Everything here is synchronous (subprocess, http.client, threads) so that the
tests can send real signals and kill the server without an event loop in the way.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import Frame, parse_frame

ROOT = Path(__file__).resolve().parents[2]
KEY = "process-test-key"
USER = "u1"
AUTH = {"X-Internal-Key": KEY, "X-User-Id": USER}
_START_LINE = re.compile(r"open (http://127\.0\.0\.1:(\d+))/ui/")


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    """Poll `pred` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def server_command(data_dir: Path, *, demo_delay_ms: float = 5, drain_timeout: float = 5, dev: bool = True,
                   extra: list[str] | None = None) -> list[str]:
    """The command line of a test server on a free port (`--port 0`) with the internal key `KEY`."""
    return [
        sys.executable, str(ROOT / "server.py"),
        "--host", "127.0.0.1", "--port", "0",
        "--data-dir", str(data_dir),
        "--internal-key", KEY,
        "--demo-delay-ms", str(demo_delay_ms),
        "--drain-timeout", str(drain_timeout),
        "--keepalive-s", "60",
        *(["--dev"] if dev else []),
        *(extra or []),
    ]


def server_env() -> dict[str, str]:
    """This environment without the PARLEY_ settings of whoever runs the tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


class Server:
    """One `server.py` process on a free port (`--port 0`, read back from its start line), in
    development mode (`--dev`: the sign-in page shows outbox codes) unless `dev=False`."""

    def __init__(self, data_dir: Path, log_path: Path, *, demo_delay_ms: float = 5, drain_timeout: float = 5,
                 dev: bool = True, extra: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        cmd = server_command(data_dir, demo_delay_ms=demo_delay_ms, drain_timeout=drain_timeout, dev=dev, extra=extra)
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=server_env(), stdout=subprocess.PIPE, stderr=self._log)
        self.port = 0
        self.base = ""
        self._stdout: list[str] = []
        self._started = threading.Event()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        if not self._started.wait(15):
            self.kill()
            raise AssertionError(f"server printed no start line; stdout={self._stdout!r}\n{self.log_tail()}")
        if self.port == 0:
            self.kill()
            raise AssertionError(f"server exited before its start line\n{self.log_tail()}")
        wait_until(lambda: self._health_status() == 200, 10, "GET /health → 200")

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            self._stdout.append(line)
            m = _START_LINE.search(line)
            if m and not self._started.is_set():
                self.base, self.port = m.group(1), int(m.group(2))
                self._started.set()
        self._started.set()  # EOF: the process ended

    def _health_status(self) -> int | None:
        try:
            return self.request("GET", "/health", auth=False).status
        except OSError:
            return None

    # -- HTTP ---------------------------------------------------------------

    def conn(self, timeout: float = 10) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                auth: bool = True, timeout: float = 10) -> Response:
        hdrs = dict(AUTH) if auth else {}
        hdrs.update(headers or {})
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        c = self.conn(timeout)
        try:
            c.request(method, path, body=payload, headers=hdrs)
            r = c.getresponse()
            data = r.read()
            return Response(r.status, data, {k.lower(): v for k, v in r.getheaders()})
        finally:
            c.close()

    def start_task(self, thread_id: str, content: str) -> str:
        r = self.request("POST", "/task", {"threadId": thread_id, "content": content})
        assert r.status == 201, (r.status, r.body)
        return str(r.json()["taskId"])

    def task(self, task_id: str) -> dict[str, Any]:
        r = self.request("GET", f"/task/{task_id}")
        assert r.status == 200, (r.status, r.body)
        return dict(r.json())

    def current_task(self, thread_id: str) -> Any:
        r = self.request("GET", f"/thread/{thread_id}/current-task")
        assert r.status == 200, (r.status, r.body)
        return r.json()["task"]

    def wait_status(self, task_id: str, statuses: tuple[str, ...], timeout: float = 10) -> dict[str, Any]:
        box: dict[str, Any] = {}

        def check() -> bool:
            box["info"] = self.task(task_id)
            return box["info"]["status"] in statuses

        wait_until(check, timeout, f"task {task_id} in {statuses} (last: {box.get('info', {}).get('status')})")
        return dict(box["info"])

    def stream(self, task_id: str, last_event_id: int | None = None) -> SSEReader:
        headers = dict(AUTH)
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        return SSEReader(self.conn(30), f"/stream/{task_id}", headers)

    def replay(self, task_id: str, last_event_id: int | None = None, timeout: float = 10) -> SSEReader:
        """A whole stream of a task that has ended (read to its end)."""
        reader = self.stream(task_id, last_event_id)
        reader.wait_ended(timeout)
        return reader

    # -- process ------------------------------------------------------------

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server still running {timeout}s later\n{self.log_tail()}") from None
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(5)

    def close(self) -> None:
        self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "server log:\n" + "\n".join(lines[-n:])


# -- SSE --------------------------------------------------------------------------

@dataclass
class SSEReader:
    """Reads one SSE response in a thread, frame by frame, as the bytes arrive."""

    conn: http.client.HTTPConnection
    path: str
    headers: dict[str, str]
    status: int = 0
    frames: list[Frame] = field(default_factory=list)
    ended: bool = False  # the response ended cleanly (chunked terminator)
    broken: BaseException | None = None  # the connection died mid-response
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.conn.request("GET", self.path, headers=self.headers)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        if self.status != 200:
            self.body = self.resp.read()
            self.ended = True
            self.conn.close()
            return
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        block: list[bytes] = []
        try:
            while True:
                raw = self.resp.readline()
                if not raw:
                    with self._cond:
                        self.ended = True
                        self._cond.notify_all()
                    return
                line = raw.rstrip(b"\n")
                if line:
                    block.append(line)
                    continue
                frame = parse_frame(b"\n".join(block))
                block = []
                if frame.has_data or frame.event is not None:  # not a comment, an id or a retry alone
                    with self._cond:
                        self.frames.append(frame)
                        self._cond.notify_all()
        except BaseException as exc:
            with self._cond:
                self.broken = exc
                self._cond.notify_all()
        finally:
            self.conn.close()

    # -- waiting -----------------------------------------------------------

    def wait_for(self, pred: Callable[[SSEReader], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = pred(self)
                if value:
                    return value
                if self.ended or self.broken is not None:
                    raise AssertionError(f"stream over (ended={self.ended}, broken={self.broken!r}) before {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
                self._cond.wait(left)

    def wait_ended(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.ended and self.broken is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"stream did not end within {timeout}s ({len(self.frames)} frames)")
                self._cond.wait(left)

    def wait_over(self, timeout: float) -> None:
        """Until the response ends or the connection breaks (e.g. after kill -9)."""
        self.wait_ended(timeout)

    def close(self) -> None:
        self.conn.close()

    # -- views -------------------------------------------------------------

    def snapshot(self) -> list[Frame]:
        with self._cond:
            return list(self.frames)

    @property
    def data_frames(self) -> list[Frame]:
        return [f for f in self.snapshot() if f.event is None]

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [c for f in self.data_frames for c in f.chunks]

    @property
    def deltas(self) -> list[str]:
        return [c["delta"] for c in self.chunks if c.get("type") == "text-delta"]

    @property
    def ids(self) -> list[int]:
        return [f.id for f in self.snapshot() if f.id is not None]

    @property
    def terminal(self) -> Frame | None:
        frames = self.snapshot()
        return frames[-1] if frames and frames[-1].event is not None else None
