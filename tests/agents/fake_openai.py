"""A scriptable OpenAI-compatible chat-completions server for the tests.

It runs on the test's own IOLoop, on a free port, and answers
`POST /v1/chat/completions` with the real streaming wire format:

    data: {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {...}}], ...}\\n\\n
    ...
    data: [DONE]\\n\\n

Each request takes the next scripted `Reply` from the queue and is
recorded (`requests`: the JSON bodies, `headers`) so that tests can check
what the model was sent.  Modes: text, tool calls whose arguments come in
fragments, a malformed chunk, a connection dropped mid-stream, an HTTP
error, a slow server.

It also answers `POST /v1/audio/transcriptions` (multipart: `file`, `model`,
…) with the next scripted `Transcript` from `transcripts`, recording each
request in `audio_requests` (`AudioRequest`: headers, form fields, the file).
"""
from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets


@dataclass
class Reply:
    """One scripted answer.

    `chunks` are the `choices[0]` objects (or whole raw strings, sent as the
    `data:` payload unchanged) of the stream, in order.
    """

    chunks: list[Any] = field(default_factory=list)
    status: int = 200
    error_body: dict[str, Any] | None = None
    delay_s: float = 0.0  # before the response headers
    chunk_delay_s: float = 0.0  # between chunks
    stall_after: int | None = None  # send this many chunks, then hang (until the server stops)
    drop_after: int | None = None  # send this many chunks, then cut the TCP connection
    done: bool = True  # end with `data: [DONE]`


@dataclass
class Transcript:
    """One scripted answer of the transcription endpoint: `{"text", "language"?}` or an HTTP error."""

    text: str = ""
    language: str | None = None
    status: int = 200
    error_body: dict[str, Any] | None = None
    delay_s: float = 0.0  # before the response headers


@dataclass
class AudioRequest:
    """What the transcription endpoint was sent."""

    headers: dict[str, str]
    fields: dict[str, str]
    filename: str
    file_content_type: str
    file: bytes


def _choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def text(answer: str, pieces: int = 3) -> Reply:
    """The answer streamed as `pieces` content deltas (split on word boundaries), finish_reason stop."""
    words = answer.split(" ")
    size = max(1, -(-len(words) // pieces))
    parts = [" ".join(words[i:i + size]) for i in range(0, len(words), size)]
    parts = [p + " " if i < len(parts) - 1 else p for i, p in enumerate(parts)]
    chunks: list[Any] = [_choice({"role": "assistant", "content": ""})]
    chunks += [_choice({"content": p}) for p in parts]
    chunks.append(_choice({}, "stop"))
    return Reply(chunks)


def tool_calls(*calls: tuple[str, str, list[str]], content: str | None = None) -> Reply:
    """Tool calls `(id, name, argument fragments)`: the first chunk of each carries id and name, then one chunk per fragment."""
    chunks: list[Any] = [_choice({"role": "assistant", "content": content})]
    for index, (call_id, name, fragments) in enumerate(calls):
        chunks.append(_choice({"tool_calls": [
            {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}},
        ]}))
        for frag in fragments:
            chunks.append(_choice({"tool_calls": [{"index": index, "function": {"arguments": frag}}]}))
    chunks.append(_choice({}, "tool_calls"))
    return Reply(chunks)


def malformed() -> Reply:
    """A good first chunk, then one that is not JSON."""
    return Reply([_choice({"role": "assistant", "content": "Hel"}), '{"id": "x", "choices": [{"delta": {"content": "lo"'])


def dropped() -> Reply:
    """Two content chunks, then the TCP connection is cut in the middle of the body."""
    reply = text("one two three four five six", pieces=6)
    reply.drop_after = 3
    return reply


def http_error(status: int = 500, message: str = "The server had an error while processing your request.") -> Reply:
    return Reply(status=status, error_body={"error": {"message": message, "type": "server_error", "param": None, "code": None}})


def slow(delay_s: float = 30.0) -> Reply:
    """Answers only after `delay_s` (the server's stop cuts the wait short)."""
    reply = text("too late")
    reply.delay_s = delay_s
    return reply


def stalled(after: int = 2) -> Reply:
    """Starts streaming, then goes silent."""
    reply = text("one two three four")
    reply.stall_after = after
    return reply


class FakeOpenAI:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.transcripts: deque[Transcript] = deque()
        self.audio_requests: list[AudioRequest] = []
        self.port = 0
        self.stopping = asyncio.Event()
        self._server: HTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def start(self) -> None:
        sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
        self.port = sockets[0].getsockname()[1]
        app = web.Application([
            (r"/v1/chat/completions", _Completions, {"fake": self}),
            (r"/v1/audio/transcriptions", _Transcriptions, {"fake": self}),
        ], log_function=lambda h: None)
        self._server = HTTPServer(app)
        self._server.add_sockets(sockets)

    async def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the server stops."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass


class _Completions(web.RequestHandler):
    def initialize(self, fake: FakeOpenAI) -> None:
        self.fake = fake

    async def post(self) -> None:
        fake = self.fake
        body = json.loads(self.request.body)
        fake.requests.append(body)
        fake.headers.append(dict(self.request.headers))
        if not fake.replies:
            self.set_status(500)
            self.finish({"error": {"message": "fake server: no scripted reply left", "type": "test"}})
            return
        reply = fake.replies.popleft()
        if reply.delay_s:
            await fake.pause(reply.delay_s)
            if fake.stopping.is_set():
                return
        if reply.status != 200:
            self.set_status(reply.status)
            self.finish(reply.error_body or {"error": {"message": "error"}})
            return
        if reply.drop_after is not None:
            await self._dropped(body, reply)
            return
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        try:
            for i, chunk in enumerate(reply.chunks):
                if reply.stall_after is not None and i == reply.stall_after:
                    await fake.pause(3600)
                    return
                self.write(_frame(body, chunk))
                await self.flush()
                if reply.chunk_delay_s:
                    await fake.pause(reply.chunk_delay_s)
            if reply.done:
                self.write(b"data: [DONE]\n\n")
            self.finish()
        except StreamClosedError:
            pass

    async def _dropped(self, body: dict[str, Any], reply: Reply) -> None:
        """Write a chunked response by hand and cut the connection part-way through its body."""
        stream = self.detach()
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
        )
        try:
            await stream.write(head)
            for chunk in reply.chunks[: reply.drop_after]:
                data = _frame(body, chunk)
                await stream.write(b"%x\r\n%s\r\n" % (len(data), data))
            await stream.write(b"400\r\ndata: {\"choi")  # a chunk announced, never completed
        except StreamClosedError:
            pass
        stream.close()


class _Transcriptions(web.RequestHandler):
    def initialize(self, fake: FakeOpenAI) -> None:
        self.fake = fake

    async def post(self) -> None:
        fake = self.fake
        files = self.request.files.get("file") or []
        upload = files[0] if files else None
        fake.audio_requests.append(AudioRequest(
            headers=dict(self.request.headers),
            fields={k: v[0].decode() for k, v in self.request.body_arguments.items()},
            filename=upload.filename if upload else "",
            file_content_type=upload.content_type if upload else "",
            file=upload.body if upload else b"",
        ))
        if not fake.transcripts:
            self.set_status(500)
            self.finish({"error": {"message": "fake server: no scripted transcript left", "type": "test"}})
            return
        reply = fake.transcripts.popleft()
        if reply.delay_s:
            await fake.pause(reply.delay_s)
            if fake.stopping.is_set():
                return
        if reply.status != 200:
            self.set_status(reply.status)
            self.finish(reply.error_body or {"error": {"message": "error"}})
            return
        answer: dict[str, Any] = {"text": reply.text}
        if reply.language is not None:
            answer["language"] = reply.language
        self.finish(answer)


def _frame(body: dict[str, Any], chunk: Any) -> bytes:
    if isinstance(chunk, str):
        return f"data: {chunk}\n\n".encode()
    payload = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "system_fingerprint": None,
        "choices": [chunk],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
