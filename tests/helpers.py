"""What the in-process server tests share: a client of the native API, a response's JSON, waiting for
a state, the one SSE frame parser, multipart uploads and requests written by hand."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tornado.httpclient import HTTPClientError, HTTPResponse
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient

INTERNAL_KEY = "test-internal-key"

# The statuses of a run that is over.
ENDED = ("completed", "failed", "cancelled")

T = TypeVar("T")


def body(resp: HTTPResponse) -> Any:
    """The response's JSON body."""
    return json.loads(resp.body)


async def wait_until(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, timeout: float = 10.0,
                     what: str = "the condition") -> T:
    """Ask `probe()` every 10 ms until `done` holds of its answer, and return that answer; fail the
    test with the last answer after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        answer = await probe()
        if done(answer):
            return answer
        assert loop.time() < deadline, f"timed out after {timeout}s waiting for {what}: {answer}"
        await asyncio.sleep(0.01)


def status_in(*statuses: str) -> Callable[[dict[str, Any]], bool]:
    """A `done` for wait_until: the answer's "status" is one of these."""
    return lambda answer: answer["status"] in statuses


# -- SSE ----------------------------------------------------------------------------------------

@dataclass
class Frame:
    """One SSE frame (LF framing) as a client reads it, with its bytes."""

    id: int | None = None
    event: str | None = None
    data: str = ""
    comment: bool = False
    retry: int | None = None
    raw: bytes = b""
    has_data: bool = False  # at least one `data:` line (`data` alone cannot tell an empty one)

    @property
    def chunks(self) -> list[dict[str, Any]]:
        assert self.event is None, f"frame {self.id} is a {self.event} frame"
        return json.loads(self.data)


def parse_frame(block: bytes) -> Frame:
    """The frame of one block of lines (the blank line that ends it left out)."""
    frame = Frame(raw=block + b"\n\n")
    data_lines = []
    for line in block.split(b"\n"):
        text = line.decode()
        if text.startswith(":"):
            frame.comment = True
            continue
        name, _, value = text.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            frame.id = int(value)
        elif name == "event":
            frame.event = value
        elif name == "data":
            data_lines.append(value)
        elif name == "retry":
            frame.retry = int(value)
    frame.data = "\n".join(data_lines)
    frame.has_data = bool(data_lines)
    return frame


def parse_frames(body: bytes) -> list[Frame]:
    """Parse an SSE body (LF framing) into frames, keeping comments and the raw bytes."""
    return [parse_frame(block) for block in body.split(b"\n\n") if block]


def complete_frames(buf: bytes | bytearray) -> list[Frame]:
    """The frames of a body read so far, up to its last complete frame."""
    return parse_frames(bytes(buf[: buf.rfind(b"\n\n") + 2]))


def text_of(frames: list[Frame]) -> str:
    """The concatenated text deltas of the data frames."""
    return "".join(c.get("delta", "") for f in frames if f.id is not None and f.event is None
                   for c in f.chunks if c["type"] == "text-delta")


# -- uploads ------------------------------------------------------------------------------------

BOUNDARY = "parleyboundary7d3a"
MULTIPART_TYPE = f"multipart/form-data; boundary={BOUNDARY}"

# A file part of a multipart form: (field name, file name, content, content type).
FilePart = tuple[str, str, bytes, str]


def multipart(fields: dict[str, Any] | None = None, files: Sequence[FilePart] = ()) -> tuple[bytes, str]:
    """A multipart/form-data body of text `fields` then `files`, and its Content-Type."""
    out = bytearray()
    for name, value in (fields or {}).items():
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += (value if isinstance(value, bytes) else value.encode()) + b"\r\n"
    for name, filename, data, ctype in files:
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'.encode()
        out += f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out), MULTIPART_TYPE


def chunked_body(raw: bytes, size: int = 64 * 1024) -> list[bytes]:
    """`raw` in chunked transfer encoding, `size` bytes a chunk, ending with the last (empty) chunk."""
    parts = [b"%x\r\n" % len(raw[i:i + size]) + raw[i:i + size] + b"\r\n" for i in range(0, len(raw), size)]
    parts.append(b"0\r\n\r\n")
    return parts


def request_head(method: str, path: str, port: int, content_type: str, extra: str = "") -> bytes:
    """The head of a request of alice's written by hand, with the `extra` header lines (each ending in CRLF)."""
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Internal-Key: {INTERNAL_KEY}\r\n"
            f"X-User-Id: alice\r\nContent-Type: {content_type}\r\n{extra}\r\n").encode()


async def read_response(stream: IOStream, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One response read off `stream`: its status, its headers (lower-case names) and its body."""
    head = await asyncio.wait_for(stream.read_until(b"\r\n\r\n", max_bytes=64 * 1024), timeout)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await asyncio.wait_for(stream.read_bytes(int(headers["content-length"])), timeout)
    return status, headers, body


async def raw_exchange(port: int, head: bytes, body_parts: Sequence[bytes], timeout: float = 10.0,
                       ) -> tuple[int, dict[str, str], bytes]:
    """Send `head` and then the body parts (stopping quietly if the server closes), then read one response."""
    client = TCPClient()
    stream = await client.connect("127.0.0.1", port)
    try:
        await stream.write(head)
        for part in body_parts:
            try:
                await stream.write(part)
            except StreamClosedError:
                break
        return await read_response(stream, timeout)
    finally:
        stream.close()
        client.close()


# -- the client ---------------------------------------------------------------------------------

class Cut(Exception):
    """Raised from a streaming callback to drop the connection mid-stream."""


@dataclass
class Client:
    """The native API as one user sees it (X-Internal-Key + X-User-Id, or a Bearer token)."""

    http: Any
    user: str = "alice"
    token: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def headers(self, **more: str) -> dict[str, str]:
        if self.token is not None:
            h = {"Authorization": f"Bearer {self.token}"}
        else:
            h = {"X-Internal-Key": INTERNAL_KEY, "X-User-Id": self.user}
        h.update(self.extra_headers)
        h.update(more)
        return h

    async def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                      headers: dict[str, str] | None = None, **kw: Any) -> HTTPResponse:
        if raw is None and body is not None:
            raw = json.dumps(body).encode()
        if raw is None and method in ("POST", "PUT", "PATCH"):
            raw = b""
        h = self.headers(**(headers or {}))
        try:
            return await self.http.fetch(path, method=method, body=raw, headers=h, raise_error=False,
                                         allow_nonstandard_methods=True, follow_redirects=False, **kw)
        except HTTPClientError as exc:  # pragma: no cover - raise_error=False keeps these as responses
            assert exc.response is not None
            return exc.response

    async def upload(self, path: str, fields: dict[str, Any] | None = None, files: Sequence[FilePart] = ()) -> HTTPResponse:
        """POST a multipart form of `fields` and `files` to `path`."""
        raw, content_type = multipart(fields, files)
        return await self.request("POST", path, raw=raw, headers={"Content-Type": content_type})

    async def start(self, thread_id: str, content: str = "hello", **extra: Any) -> HTTPResponse:
        return await self.request("POST", "/task", {"threadId": thread_id, "content": content, **extra})

    async def start_ok(self, thread_id: str, content: str = "hello", **extra: Any) -> str:
        resp = await self.start(thread_id, content, **extra)
        assert resp.code == 201, (resp.code, resp.body)
        return json.loads(resp.body)["taskId"]

    async def task(self, task_id: str) -> dict[str, Any]:
        resp = await self.request("GET", f"/task/{task_id}")
        assert resp.code == 200, (resp.code, resp.body)
        return json.loads(resp.body)

    async def wait_status(self, task_id: str, *statuses: str, timeout: float = 10.0) -> dict[str, Any]:
        """The task (GET /task/:id) once its status is one of `statuses`."""
        return await wait_until(lambda: self.task(task_id), status_in(*statuses), timeout=timeout,
                                what=f"task {task_id} to be {' or '.join(statuses)}")

    async def job(self, job_id: str) -> dict[str, Any]:
        resp = await self.request("GET", f"/api/jobs/{job_id}")
        assert resp.code == 200, (resp.code, resp.body)
        return json.loads(resp.body)

    async def wait_job(self, job_id: str, *statuses: str, timeout: float = 10.0) -> dict[str, Any]:
        """The job (GET /api/jobs/:id) once its status is one of `statuses`."""
        return await wait_until(lambda: self.job(job_id), status_in(*statuses), timeout=timeout,
                                what=f"job {job_id} to be {' or '.join(statuses)}")

    async def stream(self, task_id: str, last_event_id: int | None = None, cut_after: int | None = None,
                     query: str = "", headers: dict[str, str] | None = None) -> tuple[int, list[Frame]]:
        """Read /stream/:taskId to its end (or drop it after `cut_after` data frames)."""
        buf = bytearray()
        seen = [0]

        def on_chunk(chunk: bytes) -> None:
            buf.extend(chunk)
            if cut_after is not None:
                seen[0] = sum(1 for f in complete_frames(buf) if f.id is not None)
                if seen[0] >= cut_after:
                    raise Cut()

        h = dict(headers or {})
        if last_event_id is not None:
            h["Last-Event-ID"] = str(last_event_id)
        cut = [False]

        def on_chunk_guarded(chunk: bytes) -> None:
            if cut[0]:
                return
            try:
                on_chunk(chunk)
            except Cut:
                cut[0] = True
                raise

        try:
            resp = await self.http.fetch(f"/stream/{task_id}{query}", headers=self.headers(**h),
                                         streaming_callback=on_chunk_guarded, request_timeout=60, raise_error=False)
            code = resp.code
        except (Cut, HTTPClientError):
            if not cut[0]:
                raise
            code = 200
        return code, complete_frames(buf) if cut_after is not None else parse_frames(bytes(buf))
