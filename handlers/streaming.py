"""Base of the SSE routes: a stream slot per user, the headers, the one pump
(follow the log -> render -> send), clean-up on disconnect."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

from tornado import iostream

from handlers.base import APIHandler
from handlers.errors import ApiError
from handlers.sse import KEEPALIVE, RETRY
from runs.follow import follow_task, follow_thread
from runs.hub import Batch, EventHub, Subscription

# Query spellings of the resume cursor, besides the header: seed 002's own name, then the common one.
CURSOR_QUERY_NAMES = ("Last-Event-ID", "lastEventId")
CURSOR_PARAMETERS: list[dict[str, object]] = [
    {"name": name, "in": where, "schema": {"type": "string"}}
    for name, where in [("Last-Event-ID", "header"), *((n, "query") for n in CURSOR_QUERY_NAMES)]
]
# The surfaces that stream (their `surface`): each is counted in /metrics from the start, at 0.
STREAM_SURFACES = ("native", "app", "agent_api", "jobs")
_KEEPALIVE_FRAMES = [KEEPALIVE]


def _retrieve(future: asyncio.Future[None]) -> None:
    """A flush nobody awaits: a client gone meanwhile is no error (the pump sees it at its next send)."""
    if not future.cancelled():
        future.exception()


class StreamSlots:
    """Open streams: a cap per user, a count per surface (metrics), and a wake-up when the last one ends (drain)."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._open: dict[str, int] = {}
        self._total = 0
        self.by_surface: dict[str, int] = dict.fromkeys(STREAM_SURFACES, 0)
        self._idle: asyncio.Event | None = None

    @property
    def total(self) -> int:
        return self._total

    def acquire(self, user_id: str, surface: str) -> bool:
        held = self._open.get(user_id, 0)
        if held >= self.per_user:
            return False
        self._open[user_id] = held + 1
        self._total += 1
        self.by_surface[surface] = self.by_surface.get(surface, 0) + 1
        return True

    def release(self, user_id: str, surface: str) -> None:
        held = self._open.get(user_id, 0) - 1
        if held > 0:
            self._open[user_id] = held
        else:
            self._open.pop(user_id, None)
        self._total -= 1
        self.by_surface[surface] -= 1
        if self._total == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no stream is open (True) or `timeout` passes (False)."""
        if self._total == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._idle = None


class EventStreamHandler(APIHandler):
    """Mixed into a surface's handler: `open_stream()`, then `pump()` a followed log in its dialect.

    Frames are written one at a time, each followed by an awaited flush, so
    a slow reader holds at most one frame in server memory.  A client that
    goes away frees its slot and its subscription at once.
    """

    _sub: Subscription | None = None
    _slot: str | None = None  # the surface whose stream slot this request holds
    _held = False  # written but not flushed yet: the `retry:` frame, waiting for the first batch

    @property
    def slots(self) -> StreamSlots:
        return cast(StreamSlots, self.settings["stream_slots"])

    @property
    def hub(self) -> EventHub:
        return cast(EventHub, self.settings["hub"])

    def raw_cursor(self) -> str | None:
        """The resume cursor as sent: the `Last-Event-ID` header, else the query's `Last-Event-ID`
        (seed 002's spelling) or `lastEventId`."""
        header = self.request.headers.get("Last-Event-ID", "").strip()
        if header:
            return header
        for name in CURSOR_QUERY_NAMES:
            value = self.get_query_argument(name, None)
            if value is not None and value.strip():
                return value
        return None

    async def cursor(self, malformed_status: int = 400, beyond_ok: bool = False) -> int:
        """The event id to resume after (0: from the start).

        Not an integer → `malformed_status`; above the last id the log has
        handed out → 400 (unless `beyond_ok`: the caller answers with a
        run's terminal frame): no event could ever follow it, so such a
        stream would wait forever (and ids of 2**63 and more do not fit the store).
        """
        raw = self.raw_cursor()
        if raw is None:
            return 0
        try:
            value = max(0, int(raw.strip()))
        except ValueError:
            raise ApiError(malformed_status, "Last-Event-ID must be an event id (an integer)") from None
        if not beyond_ok and not await self.runs.in_log(value):
            raise ApiError(400, "Last-Event-ID is beyond the last event of the log")
        return value

    def stream_headers(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")

    def open_stream(self) -> None:
        """Take a stream slot (429 when the user holds too many) and send the headers' values."""
        self.take_slot()
        self.stream_headers()

    def take_slot(self) -> None:
        """Take a stream slot of the user's (429 when the user holds too many)."""
        if not self.slots.acquire(self.user_id, self.surface):
            raise ApiError(429, "too many open streams for this user", "RATE_LIMITED", retry_after=5)
        self._slot = self.surface  # released in on_finish / on_connection_close

    def keep(self, sub: Subscription) -> None:
        self._sub = sub

    async def send(self, frames: list[bytes]) -> None:
        """One write and one flush for a batch's frames, however many they are (none: nothing)."""
        if not frames:
            return
        self.write(frames[0] if len(frames) == 1 else b"".join(frames))
        self._held = False
        await self.flush()

    def task_batches(self, task_id: str, cursor: int = 0) -> AsyncIterator[Batch | None]:
        """The task's batches after `cursor` (runs.follow.follow_task); a client that goes away ends them."""
        return follow_task(self.runs, self.hub, task_id, cursor, self.settings["keepalive_s"], self.keep)

    def thread_batches(self, thread_id: str, cursor: int, *, active: bool, idle_limit_s: float) -> AsyncIterator[Batch | None]:
        """The thread's batches after `cursor` (runs.follow.follow_thread); a client that goes away ends them."""
        return follow_thread(self.runs, self.hub, thread_id, cursor, active=active, idle_limit_s=idle_limit_s,
                             keepalive_s=self.settings["keepalive_s"], on_subscribed=self.keep)

    async def pump(
        self,
        follow: AsyncIterator[Batch | None],
        render: Callable[[Batch], list[bytes]],
        *,
        retry: bool = False,
        admits: Callable[[Batch], Awaitable[bool]] | None = None,
    ) -> None:
        """Send each followed batch as `render` frames it (a keep-alive for None), then end the response.

        `retry`: a `retry:` frame first.  `admits(batch)`: False ends the stream
        before that batch.  A client that goes away ends the pump quietly.
        """
        try:
            if retry:
                # Sent with the first batch when the log has one at once (one write instead of
                # two), else on its own before the stream waits for one.
                self.write(RETRY)
                self._held = True
                asyncio.get_running_loop().call_soon(self._flush_held)
            async for batch in follow:
                if batch is None:
                    frames = _KEEPALIVE_FRAMES
                elif admits is not None and not await admits(batch):
                    break
                else:
                    frames = render(batch)
                del batch  # an idle stream keeps no events alive
                await self.send(frames)
                del frames
        except iostream.StreamClosedError:
            return
        self.end()

    def _flush_held(self) -> None:
        """Send what `write` holds (the headers and the `retry:` frame) unless a batch took it along."""
        if not self._held or self._finished or self.request.connection.stream.closed():  # type: ignore[union-attr]
            return
        self._held = False
        self.flush().add_done_callback(_retrieve)

    def end(self) -> None:
        """End the response (the chunked terminator) unless the client is already gone."""
        if not self.request.connection.stream.closed():  # type: ignore[union-attr]
            self.finish()

    def _release(self) -> None:
        if self._slot is not None:
            surface, self._slot = self._slot, None
            self.slots.release(self.user_id, surface)

    def on_connection_close(self) -> None:
        if self._sub is not None:
            self._sub.close()
        self._release()

    def on_finish(self) -> None:
        super().on_finish()
        self._release()
