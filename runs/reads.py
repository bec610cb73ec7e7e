"""What the surfaces read through the run manager: tasks, threads and their messages, the
event log — as the store has them.  No lifecycle here (runs/manager.py)."""
from __future__ import annotations

from typing import Any

from runs.errors import Forbidden
from store import NotFound, Store
from store import events as events_sql
from store import messages as messages_sql
from store import tasks as tasks_sql
from store import threads as threads_sql
from store.tasks import TaskRow


class RunReads:
    """The reads of the store that surfaces make; RunManager inherits them."""

    def __init__(self, db: Store) -> None:
        self.db = db

    # -- tasks ---------------------------------------------------------------

    async def get_task(self, task_id: str) -> TaskRow:
        task = await self.db.read(lambda c: tasks_sql.get(c, task_id))
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task

    async def parked_count(self) -> int:
        """How many tasks are parked, waiting for a signal (all of the store's: they belong to no instance)."""
        return await self.db.read(lambda c: tasks_sql.count_with_status(c, "parked"))

    async def agent_tasks(self, agent_id: str, user_id: str, status: str | None) -> list[TaskRow]:
        return await self.db.read(lambda c: tasks_sql.for_agent(c, agent_id, user_id, status))

    async def agent_counts(self, agent_id: str, user_id: str) -> dict[str, int]:
        return await self.db.read(lambda c: tasks_sql.counts_for_agent(c, agent_id, user_id))

    # -- threads and their messages ------------------------------------------

    async def check_thread(self, thread_id: str, user_id: str) -> bool:
        """True when the thread exists and is the user's; Forbidden when it is another's."""
        thread = await self.db.read(lambda c: threads_sql.get(c, thread_id))
        if thread is None:
            return False
        if thread.user_id != user_id:
            raise Forbidden("thread belongs to another user")
        return True

    async def current_task(self, thread_id: str, user_id: str) -> TaskRow | None:
        await self.check_thread(thread_id, user_id)
        return await self.db.read(lambda c: tasks_sql.live_for_thread(c, thread_id))

    async def list_threads(self, user_id: str) -> list[threads_sql.ThreadRow]:
        return await self.db.read(lambda c: threads_sql.for_user(c, user_id))

    async def threads_page(self, user_id: str, offset: int, limit: int) -> list[threads_sql.ThreadRow]:
        """The user's threads, most recently active first: `limit` of them after the first `offset`."""
        return await self.db.read(lambda c: threads_sql.page_for_user(c, user_id, offset, limit))

    async def thread_messages(self, thread_id: str, user_id: str) -> list[dict[str, Any]]:
        if not await self.check_thread(thread_id, user_id):
            return []
        return await self.history(thread_id)

    async def history(self, thread_id: str) -> list[dict[str, Any]]:
        return await self.db.read(lambda c: messages_sql.list_for_thread(c, thread_id))

    async def history_day(self, thread_id: str, before_ms: int | None) -> tuple[int | None, list[dict[str, Any]], bool]:
        """One UTC day of the thread's messages (store/messages.py `day_before`)."""
        return await self.db.read(lambda c: messages_sql.day_before(c, thread_id, before_ms))

    async def message(self, thread_id: str, message_id: str | None, task_id: str | None = None) -> dict[str, Any] | None:
        """The thread's message with this id: the one `task_id` stored (a task's own user message,
        which an edit under the same id does not change), else the live one."""
        if message_id is None:
            return None
        return await self.db.read(lambda c: messages_sql.get(c, thread_id, message_id, task_id))

    async def last_messages(self, thread_ids: list[str], per_thread: int) -> dict[str, list[dict[str, Any]]]:
        """The last `per_thread` messages in force of each thread, oldest first (threads without any are absent)."""
        return await self.db.read(lambda c: messages_sql.last_for_threads(c, thread_ids, per_thread))

    # -- the event log -------------------------------------------------------

    async def task_events(self, task_id: str, after: int = 0, limit: int = 1_000_000) -> list[Any]:
        out: list[Any] = []
        cursor = after
        while len(out) < limit:
            page = await self.events_after(task_id, cursor, min(2000, limit - len(out)))
            if not page:
                break
            out.extend(page)
            cursor = page[-1].id
        return out

    async def events_after(self, task_id: str, after: int, limit: int) -> list[Any]:
        return await self.db.read(lambda c: events_sql.for_task(c, task_id, after, limit))

    async def last_event(self, task_id: str) -> Any:
        return await self.db.read(lambda c: events_sql.last_for_task(c, task_id))

    @property
    def last_event_id(self) -> int:
        """The highest event id of the whole log so far, as far as this instance knows."""
        return self.db.last_event_id

    async def in_log(self, event_id: int) -> bool:
        """Whether the log has handed out `event_id` (a resume cursor above the log is no cursor).
        Another instance may have committed ids this one has not heard of yet: the store is asked."""
        if event_id <= self.db.last_event_id:
            return True
        if not self.db.shared or event_id >= 2**63:
            return False
        return event_id <= await self.db.read(events_sql.highest_id)

    async def thread_events_after(self, thread_id: str, after: int, limit: int) -> list[Any]:
        """The events of every task of the thread after `after`, in id order."""
        return await self.db.read(lambda c: events_sql.for_thread(c, thread_id, after, limit))

    async def thread_run_start(self, thread_id: str) -> int | None:
        """The id of the `run.started` event of the thread's latest task (None: no task yet)."""
        return await self.db.read(lambda c: events_sql.last_run_start(c, thread_id))
