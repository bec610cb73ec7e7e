"""Thread titles: the title a new thread gets from its first message, and the one the
titles model gives it after a run of it completes (with `[titles]` configured).

Naming is a background request per thread, tracked here and cancelled by a drain;
whatever happens to it never touches the run (agents/titles.py asks the model).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from agents import AgentRegistry
from agents.context import AgentError
from agents.llm import ChatModel
from agents.titles import ask_title, shorten
from store import Store
from store import messages as messages_sql
from store import threads as threads_sql
from store.tasks import TaskRow

log = logging.getLogger("parley.runs")


def message_text(parts: list[dict[str, Any]]) -> str:
    """The text parts of a message, joined, whitespace collapsed."""
    return " ".join(" ".join(str(p.get("text", "")) for p in parts if p.get("type") == "text").split())


def message_title(message: dict[str, Any]) -> str | None:
    """The title of a thread that this message starts: its text, shortened."""
    return shorten(message_text(message.get("parts", [])))


class ThreadTitles:
    """The title requests in flight, one at most per thread."""

    def __init__(self, db: Store, agents: AgentRegistry) -> None:
        self.db = db
        self.agents = agents
        self._requests: dict[str, asyncio.Future[None]] = {}  # thread id -> its title request

    def name_after(self, task: TaskRow, parts: list[dict[str, Any]]) -> None:
        """Ask the titles model (if configured) to name the thread of a task that just completed
        with the reply `parts`.

        At most one request per completed run and one at a time per thread; none for
        a replay (it must never call a model).
        """
        model = self.agents.title_model()
        if model is None or (task.state or {}).get("replay_of") or task.thread_id in self._requests:
            return
        thread_id = task.thread_id
        fut = asyncio.ensure_future(self._name_thread(thread_id, message_text(parts), model))
        self._requests[thread_id] = fut
        fut.add_done_callback(lambda f: self._done(thread_id, f))

    def _done(self, thread_id: str, fut: asyncio.Future[None]) -> None:
        if self._requests.get(thread_id) is fut:
            del self._requests[thread_id]
        if not fut.cancelled() and fut.exception() is not None:
            log.error("naming thread %s failed", thread_id, exc_info=fut.exception())

    async def _name_thread(self, thread_id: str, reply: str, model: ChatModel) -> None:
        thread = await self.db.read(lambda c: threads_sql.get(c, thread_id))
        if thread is None or thread.deleted_at is not None or thread.title_source != "message":
            return
        history = await self.db.read(lambda c: messages_sql.list_for_thread(c, thread_id))
        first = next((m for m in history if m["role"] == "user"), None)
        question = message_text(first["parts"]) if first is not None else ""
        if not question:
            return
        try:
            title = await ask_title(model, question, reply)
        except AgentError as exc:
            log.info("thread %s keeps its title: the titles model failed (%s): %s", thread_id, exc.reason, exc.message)
            return
        except Exception as exc:  # whatever goes wrong here must not reach the run
            log.info("thread %s keeps its title: the titles request failed (%s)", thread_id, type(exc).__name__)
            return
        if title is None:
            log.info("thread %s keeps its title: the titles model answered no usable title", thread_id)
            return
        await self.db.write(lambda tx: threads_sql.set_llm_title(tx, thread_id, title))

    @property
    def in_flight(self) -> int:
        return len(self._requests)

    async def wait(self, timeout: float) -> None:
        """Wait for the requests in flight (tests)."""
        if self._requests:
            await asyncio.wait(list(self._requests.values()), timeout=timeout)

    async def cancel(self) -> None:
        """Cancel the requests in flight, giving each a moment to unwind (a drain)."""
        naming = list(self._requests.values())
        for fut in naming:
            fut.cancel()
        if naming:
            await asyncio.wait(naming, timeout=5)
