"""A minimal HTTP/1.1 keep-alive client on asyncio protocols, built for load.

No tornado, no requests: one `asyncio.Protocol` per connection parses the
responses incrementally (status line, headers, `Content-Length` or chunked
bodies) inside `data_received`, so reading a large SSE stream costs a few
bytes operations per network read rather than one `await` per chunk.

`SSEReader` consumes a stream body and counts what the benchmarks need:
data frames, AI SDK `text-delta` chunks, the last `id:`, the terminal
`event: done` / `event: error`, and the time of the first `data:` frame.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)

TEXT_DELTA = b'"type":"text-delta"'
TAIL = 1024  # the terminal frame starts within this many bytes of a stream's end


class HTTPError(Exception):
    pass


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class _Pending:
    future: asyncio.Future[Response]
    on_body: Callable[[bytes], None] | None
    on_headers: Callable[[Response], None] | None
    head_only: bool = False
    parts: list[bytes] = field(default_factory=list)
    response: Response | None = None


class Connection(asyncio.Protocol):
    """One keep-alive connection; requests on it are sequential (no pipelining)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.state = _DONE
        self.remaining = 0
        self.pending: _Pending | None = None
        self.closed = False
        self.keep_alive = True
        self.host = ""

    # -- opening ------------------------------------------------------------

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, host, port)
        conn.host = f"{host}:{port}"
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        p = self.pending
        if p is not None and not p.future.done():
            if self.state == _UNTIL_CLOSE and p.response is not None:
                self._complete()
            else:
                p.future.set_exception(HTTPError(f"connection closed mid-response ({exc})"))
        self.pending = None

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def abort(self) -> None:
        """Close without the FIN handshake niceties (RST); used to drop many idle streams fast."""
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True

    # -- requests -----------------------------------------------------------

    def send(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        on_body: Callable[[bytes], None] | None = None,
        on_headers: Callable[[Response], None] | None = None,
    ) -> asyncio.Future[Response]:
        """Write one request; the future resolves when the whole response is read.

        With `on_body`, body bytes go to the callback as they arrive (the
        returned Response then has an empty body).
        """
        if self.closed or self.transport is None:
            raise HTTPError("connection is closed")
        if self.pending is not None:
            raise HTTPError("a request is already in flight on this connection")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        if headers:
            lines.extend(f"{k}: {v}" for k, v in headers.items())
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if body:
            raw += body
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.pending = _Pending(fut, on_body, on_headers, head_only=(method == "HEAD"))
        self.state = _HEAD
        self.transport.write(raw)
        return fut

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> Response:
        return await self.send(method, path, headers, body)

    # -- parsing --------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # Works on the immutable bytes of this read: a body piece costs one slice
        # (none when a read holds exactly one piece); only a partial head or
        # chunk-size line is carried over to the next read.
        if self.buf:
            data = self.buf + data
            self.buf = b""
        buf = data
        p = self.pending
        if p is None:
            if buf.strip():
                self.close()  # bytes nobody asked for
            return
        pos = 0
        n = len(buf)
        state = self.state
        try:
            while pos < n:
                if state == _HEAD:
                    end = buf.find(b"\r\n\r\n", pos)
                    if end < 0:
                        break
                    head = buf[pos:end].decode("latin-1").split("\r\n")
                    pos = end + 4
                    status = int(head[0].split(" ", 2)[1])
                    hdrs: dict[str, str] = {}
                    for line in head[1:]:
                        k, _, v = line.partition(":")
                        hdrs[k.strip().lower()] = v.strip()
                    resp = Response(status, hdrs)
                    p.response = resp
                    self.keep_alive = hdrs.get("connection", "").lower() != "close"
                    if p.on_headers is not None:
                        p.on_headers(resp)
                    if p.head_only or status in (204, 304) or 100 <= status < 200:
                        state = _DONE
                    elif hdrs.get("transfer-encoding", "").lower() == "chunked":
                        state = _CHUNK_SIZE
                    elif "content-length" in hdrs:
                        self.remaining = int(hdrs["content-length"])
                        state = _LENGTH if self.remaining else _DONE
                    else:
                        state = _UNTIL_CLOSE
                        self.keep_alive = False
                    if state == _DONE:
                        self.state = state
                        self._complete()
                        p = self.pending
                        if p is None:
                            break
                        state = self.state
                elif state == _LENGTH:
                    take = min(self.remaining, n - pos)
                    self._body(p, buf[pos:pos + take])
                    pos += take
                    self.remaining -= take
                    if self.remaining == 0:
                        self.state = state = _DONE
                        self._complete()
                        break
                elif state == _CHUNK_SIZE:
                    end = buf.find(b"\r\n", pos)
                    if end < 0:
                        break
                    size = int(buf[pos:end].split(b";", 1)[0], 16)
                    pos = end + 2
                    if size == 0:
                        state = _TRAILER
                    else:
                        self.remaining = size
                        state = _CHUNK_DATA
                elif state == _CHUNK_DATA:
                    take = min(self.remaining, n - pos)
                    self._body(p, buf[pos:pos + take])
                    pos += take
                    self.remaining -= take
                    if self.remaining == 0:
                        state = _CHUNK_CRLF
                elif state == _CHUNK_CRLF:
                    if n - pos < 2:
                        break
                    pos += 2
                    state = _CHUNK_SIZE
                elif state == _TRAILER:
                    end = buf.find(b"\r\n", pos)
                    if end < 0:
                        break
                    empty = end == pos
                    pos = end + 2
                    if empty:
                        self.state = state = _DONE
                        self._complete()
                        break
                elif state == _UNTIL_CLOSE:
                    self._body(p, buf[pos:n])
                    pos = n
                else:
                    break
        except Exception as exc:  # a parse error fails the request, never the loop
            if p is not None and not p.future.done():
                p.future.set_exception(HTTPError(f"bad response: {exc!r}"))
            self.pending = None
            self.close()
            return
        if self.pending is not None:
            self.state = state
        if pos < n:
            self.buf = buf[pos:]

    @staticmethod
    def _body(p: _Pending, piece: bytes) -> None:
        if p.on_body is not None:
            p.on_body(piece)
        else:
            p.parts.append(piece)

    def _complete(self) -> None:
        p = self.pending
        assert p is not None and p.response is not None
        self.pending = None
        p.response.body = b"".join(p.parts)
        if not self.keep_alive:
            self.close()
        if not p.future.done():
            p.future.set_result(p.response)


class SSEReader:
    """Counts an SSE body: frames, text-delta chunks, last id, the terminal frame."""

    __slots__ = ("chunks", "data_frames", "deltas", "detail", "done", "error", "first_frame_chunks", "first_frame_id",
                 "frames", "last_id", "on_end", "on_first_data", "pending", "t_first_data")

    def __init__(self, on_first_data: Callable[[], None] | None = None, on_end: Callable[[], None] | None = None,
                 detail: bool = True) -> None:
        self.detail = detail
        self.pending = b""
        self.frames = 0
        self.data_frames = 0
        self.deltas = 0
        self.chunks = 0
        self.last_id = 0
        self.done = False
        self.error: str | None = None
        self.t_first_data = 0.0
        self.first_frame_id = 0
        self.first_frame_chunks = 0
        self.on_first_data = on_first_data
        self.on_end = on_end

    def feed(self, piece: bytes) -> None:
        """Take the complete frames of `piece` (plus what was pending) as one block.

        Counting works on the block with `bytes.count`/`find` bounded by
        offsets (no per-frame Python, no copies).  Without `detail` a block
        costs one full scan (the text-delta count) plus a few short searches
        near its ends, so one load process can read many fast streams; with
        `detail` it also counts frames and chunks and tracks the last id.
        The counted patterns (`data: [`, `{"type":`, `"type":"text-delta"`)
        occur in these benchmarks' compact JSON chunks only where counted.
        """
        data = self.pending + piece if self.pending else piece
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self.pending = data
            return
        self.pending = data[cut + 2:]
        self.deltas += data.count(TEXT_DELTA, 0, cut)
        if self.detail:
            self.frames += data.count(b"\n\n", 0, cut) + 1
            self.data_frames += data.count(b"data: [", 0, cut)
            self.chunks += data.count(b'{"type":', 0, cut)
            at = data.rfind(b"id: ", 0, cut)
            if at >= 0 and (at == 0 or data[at - 1] == 10):
                nl = data.find(b"\n", at, cut)
                self.last_id = int(data[at + 4:nl if nl >= 0 else cut])
        if not self.t_first_data and data.find(b"data: [", 0, cut) >= 0:
            self._first_data(data, cut)
        # The terminal frame is the stream's last and short: look only near the end.
        ev = data.rfind(b"\nevent: ", max(0, cut - TAIL), cut)
        if ev >= 0:
            nl = data.find(b"\n", ev + 8)
            name = data[ev + 8:nl if nl >= 0 else cut]
            if name == b"done":
                self.done = True
            elif name == b"error":
                start = data.find(b"data: ", ev)
                self.error = data[start + 6:cut].decode(errors="replace") if start >= 0 else ""
            else:
                return
            id_at = data.rfind(b"id: ", 0, ev)
            if id_at >= 0:
                self.last_id = int(data[id_at + 4:ev])
            if self.on_end is not None:
                self.on_end()

    def _first_data(self, data: bytes, cut: int) -> None:
        self.t_first_data = time.perf_counter()
        at = data.find(b"data: [", 0, cut)
        begin = data.rfind(b"\n\n", 0, at) + 2 if data.rfind(b"\n\n", 0, at) >= 0 else 0
        end = data.find(b"\n\n", at)
        end = cut if end < 0 else end
        frame = data[begin:end]
        for line in frame.split(b"\n"):
            if line.startswith(b"id: "):
                self.first_frame_id = int(line[4:])
        self.first_frame_chunks = frame.count(b'{"type":')
        if self.on_first_data is not None:
            self.on_first_data()


class Pool:
    """A set of keep-alive connections to one server, reopened when one closes."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    async def connect(self) -> Connection:
        return await Connection.open(self.host, self.port)

    async def ensure(self, conn: Connection | None) -> Connection:
        if conn is None or conn.closed:
            return await self.connect()
        return conn
