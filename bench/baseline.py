"""The bare Tornado baseline: the same HTTP and SSE I/O as Parley, with no Parley logic.

    python bench/baseline.py --host 127.0.0.1 --port PORT

Endpoints (any auth headers are ignored):
- `POST /task`: parses the JSON body, answers 201 `{"taskId": uuid4}`.
- `GET /stream?n=N&per=K&prefix=P`: `retry:` hint, then N `text-delta`
  chunks in frames of K chunks (`id: <id>\\ndata: [chunk, ...]\\n\\n`, the
  same shape and size as Parley's native frames), preceded by P other
  chunks (Parley's `start`/`start-step`/`text-start`), write + `await flush()`
  per frame, then `id: N\\nevent: done\\ndata: \\n\\n`, and the response ends.
  Frames are built once per (n, per, prefix) and cached: this measures I/O only.
- `GET /idle`: headers, `retry:` hint and one small data frame (like the
  replay a parked run's stream gets), then holds the response open until the
  client goes away.
- `GET /health`: `{"status": "ok"}`.
"""
from __future__ import annotations

import argparse
import asyncio
import resource
import uuid
from functools import lru_cache

import orjson  # Parley's JSON library too, so both pay the same for JSON
from tornado import iostream, web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

PART_ID = "txt_0123456789abcdef"  # Parley's part ids: "txt_" + 16 hex digits
FIRST_ID = 1000  # ids of a few digits, like a Parley server that ran a little


@lru_cache(maxsize=8)
def frames_for(n: int, per: int, prefix: int) -> tuple[bytes, ...]:
    """Parley-shaped frames: `prefix` opening chunks, then n text-delta chunks, `per` per frame."""
    head = [
        b'{"type":"start","messageId":"msg_0123456789abcdef0123456789abcdef"}',
        b'{"type":"start-step"}',
        b'{"type":"text-start","id":"%s"}' % PART_ID.encode(),
    ][: max(0, prefix)]
    chunks = head + [b'{"type":"text-delta","id":"%s","delta":"%d "}' % (PART_ID.encode(), k) for k in range(1, n + 1)]
    per = max(1, per)
    out = []
    for start in range(0, len(chunks), per):
        batch = chunks[start:start + per]
        out.append(b"id: %d\ndata: [" % (FIRST_ID + start + len(batch)) + b",".join(batch) + b"]\n\n")
    out.append(b"id: %d\ndata: [{\"type\":\"finish\"}]\n\n" % (FIRST_ID + len(chunks) + 1))
    return tuple(out)


class Base(web.RequestHandler):
    def check_xsrf_cookie(self) -> None:  # pragma: no cover - xsrf is off anyway
        pass

    def write_json(self, value: object, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(value))


class TaskHandler(Base):
    def post(self) -> None:
        body = orjson.loads(self.request.body or b"{}")
        if not isinstance(body, dict):
            self.write_json({"error": "object expected"}, 422)
            return
        self.write_json({"taskId": str(uuid.uuid4())}, 201)


class HealthHandler(Base):
    def get(self) -> None:
        self.write_json({"status": "ok"})


class SSEBase(Base):
    def start_stream(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")


class StreamHandler(SSEBase):
    async def get(self) -> None:
        n = int(self.get_query_argument("n", "1"))
        per = int(self.get_query_argument("per", "1"))
        prefix = int(self.get_query_argument("prefix", "3"))
        frames = frames_for(n, per, prefix)
        self.start_stream()
        try:
            self.write(b"retry: 2000\n\n")
            await self.flush()
            for frame in frames:
                self.write(frame)
                await self.flush()
            self.write(b"id: %d\nevent: done\ndata: \n\n" % (FIRST_ID + n + prefix + 1))
            self.finish()
        except iostream.StreamClosedError:
            return


class IdleHandler(SSEBase):
    _closed: asyncio.Future[None] | None = None

    async def get(self) -> None:
        self._closed = asyncio.get_running_loop().create_future()
        self.start_stream()
        try:
            self.write(b"retry: 2000\n\n")
            self.write(b'id: 7\ndata: [{"type":"start","messageId":"msg_0123456789abcdef0123456789abcdef"},{"type":"start-step"}]\n\n')
            await self.flush()
            await self._closed
        except iostream.StreamClosedError:
            return

    def on_connection_close(self) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)


def make_app() -> web.Application:
    return web.Application(
        [(r"/task", TaskHandler), (r"/stream", StreamHandler), (r"/idle", IdleHandler), (r"/health", HealthHandler)],
        compress_response=False,
        log_function=lambda handler: None,
    )


async def main(host: str, port: int) -> None:
    sockets = bind_sockets(port, host)
    server = HTTPServer(make_app(), idle_connection_timeout=75, body_timeout=60, max_header_size=64 * 1024)
    server.add_sockets(sockets)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="bare Tornado baseline for Parley's benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(args.host, args.port))
