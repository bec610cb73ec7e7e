"""Small clients for the tests: native API calls and an SSE frame parser."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tornado.httpclient import HTTPClientError, HTTPResponse

INTERNAL_KEY = "test-internal-key"


@dataclass
class Frame:
    id: int | None = None
    event: str | None = None
    data: str = ""
    comment: bool = False
    retry: int | None = None
    raw: bytes = b""

    @property
    def chunks(self) -> list[dict[str, Any]]:
        assert self.event is None, f"frame {self.id} is a {self.event} frame"
        return json.loads(self.data)


def parse_frames(body: bytes) -> list[Frame]:
    """Parse an SSE body (LF framing) into frames, keeping comments and the raw bytes."""
    frames = []
    for block in body.split(b"\n\n"):
        if not block:
            continue
        f = Frame(raw=block + b"\n\n")
        data_lines = []
        for line in block.split(b"\n"):
            text = line.decode()
            if text.startswith(":"):
                f.comment = True
                continue
            name, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id":
                f.id = int(value)
            elif name == "event":
                f.event = value
            elif name == "data":
                data_lines.append(value)
            elif name == "retry":
                f.retry = int(value)
        f.data = "\n".join(data_lines)
        frames.append(f)
    return frames


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

    async def stream(self, task_id: str, last_event_id: int | None = None, cut_after: int | None = None,
                     query: str = "", headers: dict[str, str] | None = None) -> tuple[int, list[Frame]]:
        """Read /stream/:taskId to its end (or drop it after `cut_after` data frames)."""
        buf = bytearray()
        seen = [0]

        def on_chunk(chunk: bytes) -> None:
            buf.extend(chunk)
            if cut_after is not None:
                seen[0] = sum(1 for f in parse_frames(bytes(buf[: buf.rfind(b"\n\n") + 2])) if f.id is not None)
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
        body = bytes(buf)
        if cut_after is not None:
            body = body[: body.rfind(b"\n\n") + 2]
        return code, parse_frames(body)


def text_of(frames: list[Frame]) -> str:
    """The concatenated text deltas of the data frames."""
    return "".join(c.get("delta", "") for f in frames if f.id is not None and f.event is None
                   for c in f.chunks if c["type"] == "text-delta")
