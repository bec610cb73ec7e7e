"""Base of the SSE routes: a stream slot per user, the headers, clean-up on disconnect."""
from __future__ import annotations

from typing import cast

from handlers.base import APIHandler
from handlers.errors import ApiError
from handlers.sse import StreamSlots
from runs.hub import EventHub, Subscription


class EventStreamHandler(APIHandler):
    """Mixed into a surface's handler: `open_stream()`, `send()`, `end()`.

    Frames are written one at a time, each followed by an awaited flush, so
    a slow reader holds at most one frame in server memory.  A client that
    goes away frees its slot and its subscription at once.
    """

    _sub: Subscription | None = None
    _slot = False

    @property
    def slots(self) -> StreamSlots:
        return cast(StreamSlots, self.settings["stream_slots"])

    @property
    def hub(self) -> EventHub:
        return cast(EventHub, self.settings["hub"])

    def cursor(self) -> int:
        raw = self.request.headers.get("Last-Event-ID") or self.get_query_argument("lastEventId", None) or "0"
        try:
            return max(0, int(raw.strip()))
        except ValueError:
            raise ApiError(400, "Last-Event-ID must be an event id (an integer)") from None

    def stream_headers(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")

    def open_stream(self) -> None:
        """Take a stream slot (429 when the user holds too many) and send the headers' values."""
        if not self.slots.acquire(self.user_id):
            raise ApiError(429, "too many open streams for this user", "RATE_LIMITED", retry_after=5)
        self._slot = True
        self.stream_headers()

    def keep(self, sub: Subscription) -> None:
        self._sub = sub

    async def send(self, frames: list[bytes]) -> None:
        for frame in frames:
            self.write(frame)
            await self.flush()

    def end(self) -> None:
        """End the response (the chunked terminator) unless the client is already gone."""
        if not self.request.connection.stream.closed():  # type: ignore[union-attr]
            self.finish()

    def _release(self) -> None:
        if self._slot:
            self._slot = False
            self.slots.release(self.user_id)

    def on_connection_close(self) -> None:
        if self._sub is not None:
            self._sub.close()
        self._release()

    def on_finish(self) -> None:
        super().on_finish()
        self._release()
