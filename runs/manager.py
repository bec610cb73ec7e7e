"""The run manager: starts runs under the per-thread lock, runs agents in the
background, aborts, parks and resumes them, recovers after a crash, drains.

Every status change and its event are written in one transaction, so the
task row and the event log never disagree.

With `[titles]` configured, a thread whose title was made from its first
message is named by the model after a run of it completes: a background
request, tracked here, cancelled by drain, that never touches the run.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from agents import AgentDef, AgentRegistry, titles
from agents.context import AgentError, Parked, Resume, RunContext
from agents.llm import ChatModel
from agents.replay import Recording
from runs.assemble import MessageAssembler
from runs.hub import EventHub
from runs.leases import LEASE_S, Leases
from runs.plans import PlanConfig, Plans
from store import Conflict, NotFound, Store, WriteTx
from store import agents as agents_sql
from store import events as events_sql
from store import health as health_sql
from store import messages as messages_sql
from store import tasks as tasks_sql
from store import threads as threads_sql
from store.db import now_ms
from store.event_types import JOB_PARKED, JOB_SIGNAL, RUN_ERROR, RUN_FINISHED, RUN_STARTED, TOOL_CALL_END
from store.tasks import LIVE, TaskRow

log = logging.getLogger("parley.runs")

# An agent may run ahead of the writer by this many queued events before it waits.
BACKLOG_HIGH_WATER = 2048
MAX_AGENTS_PER_USER = 100


class RunError(Exception):
    """Base of the refusals the run manager gives; surfaces map them to statuses."""


class Draining(RunError):
    """The server is draining: no new runs."""


class Forbidden(RunError):
    """The thread or task belongs to another user."""


class PlanRefused(Forbidden):
    """The user's plan does not allow this run (the agent, or no runs left today); 403 everywhere."""

    code = "PLAN_LIMIT"

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


class TooManyRunning(RunError):
    """The user already has as many runs going as the plan allows at once (parked ones do not count); 429."""

    code = "TOO_MANY_RUNNING"
    retry_after = 5  # seconds: a hint, runs end at their own pace

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


class TooManyAgents(RunError):
    """The user already has MAX_AGENTS_PER_USER agents."""

    code = "AGENT_LIMIT"


class ThreadBusy(RunError):
    """The thread already has a live task."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"thread has a live task {task_id}")
        self.task_id = task_id


class Invalid(RunError):
    """The request names something that does not fit (unknown agent, unknown rewind point)."""


class SignalRefused(RunError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def text_message(text: str) -> dict[str, Any]:
    """A new user UIMessage with one text part."""
    return {"id": f"msg_{uuid.uuid4().hex}", "role": "user", "parts": [{"type": "text", "text": text}]}


@dataclass(frozen=True)
class StartRequest:
    user_id: str
    thread_id: str
    message: dict[str, Any]  # a UIMessage with role "user"
    agent_id: str = "demo"
    rewind_from: str | None = None
    client_run_id: str | None = None
    initial_state: dict[str, Any] | None = None  # e.g. a replay's record and its signals
    retry_of: str | None = None  # a task that failed `insufficient_credits`: run its user message again


class Runner:
    """One activation of a task's agent (a resumed task gets a new runner)."""

    def __init__(self, manager: RunManager, task: TaskRow, agent: AgentDef, resume: Resume | None,
                 user_message: dict[str, Any] | None = None) -> None:
        self.manager = manager
        self.user_message = user_message
        self.task = task
        self.agent = agent
        self.resume = resume
        self.assembler = MessageAssembler()
        self.abort_as: tuple[str, str, str] | None = None
        self.future: asyncio.Future[None] | None = None
        self.park_write: asyncio.Future[TaskRow | None] | None = None  # the committing park, once started
        self._started = False
        self._db = manager.db

    # -- Sink -----------------------------------------------------------

    async def emit(self, type: str, data: dict[str, Any]) -> None:
        """Queue one event of the run.  Its data is encoded here, first: an event that cannot be
        stored (an int beyond 64 bits, an object JSON has no form for) fails this run, never
        the group commit it would share with other runs, and never reaches the reply."""
        try:
            text = orjson.dumps(data).decode()
        except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
            raise AgentError("unencodable_event",
                             f"The run produced a {type} event that cannot be stored as JSON ({exc}).") from None
        self.assembler.apply(type, data)
        self._db.append(self.task.id, self.task.thread_id, type, data, text)
        if self._db.backlog > BACKLOG_HIGH_WATER:
            await self._db.committed()

    def set_node(self, node: str | None) -> None:
        task_id = self.task.id

        def _node(tx: WriteTx) -> None:
            tasks_sql.update(tx, task_id, current_node=node)

        self._db.submit(_node)

    def correlation_key(self, node: str) -> str:
        return next_park_key(self.task)

    # -- life -----------------------------------------------------------

    def cancel(self, status: str, reason: str, message: str) -> None:
        if self.abort_as is None:
            self.abort_as = (status, reason, message)
        # A task cancelled before its first step never enters run(): let run() see abort_as instead.
        if self._started and self.future is not None and not self.future.done():
            self.future.cancel()

    async def run(self) -> None:
        """Run the agent to its end.  Whatever the agent or a tool raises, the task ends (or parks)
        with its terminal event, which frees the thread's lock."""
        task = self.task
        self._started = True
        end: tuple[str, str, str]
        try:
            if self.abort_as is not None:
                raise asyncio.CancelledError
            await self._run_agent()
        except asyncio.CancelledError:
            end = self.abort_as or ("cancelled", "cancelled", "The run was cancelled.")
        except Parked as parked:
            parked_end = await self._park(parked)
            if parked_end is None:
                return
            end = parked_end
        except AgentError as exc:
            end = ("failed", exc.reason, exc.message)
        except (GeneratorExit, KeyboardInterrupt, SystemExit):
            raise  # the process is going down: recovery ends the task at the next start
        except BaseException as exc:  # an Exception, or e.g. the BaseExceptionGroup of a task group in a tool
            log.exception("agent %s crashed on task %s", self.agent.id, task.id)
            end = ("failed", "internal_error", f"The agent crashed: {type(exc).__name__}")
        else:
            # abort_as: aborted after the agent's last await
            end = self.abort_as or ("completed", "", "")
        await self.manager.finish(task, *end, self.assembler.parts)

    async def _park(self, parked: Parked) -> tuple[str, str, str] | None:
        """Park the task; None when it parked (or woke again), else how the run must end instead."""
        try:
            await self.manager.park(self, parked)
        except asyncio.CancelledError:
            if self.abort_as is None:
                raise
            if self.abort_as[1] == "shutdown" and self.park_write is not None:
                # A drain leaves parked runs parked (SPEC 6): the park is being written (shielded),
                # so the run ends only if a signal taken with the park woke it again.
                if await self.park_write is None:
                    return None
            return self.abort_as  # aborted while parking: the park is written (shielded), end it as asked
        except Exception:
            log.exception("parking task %s failed", self.task.id)
            return ("failed", "internal_error", "The run could not be parked.")
        return None

    async def _run_agent(self) -> None:
        task = self.task
        if self.user_message is None:
            self.user_message = await self.manager.message(task.thread_id, task.user_message_id, task.id)
        own_events = await self.manager.task_events(task.id) if self.resume is not None else []
        self.assembler.apply_all(own_events)
        recording = None
        replay_of = (task.state or {}).get("replay_of")
        if replay_of:
            recording = Recording(await self.manager.task_events(replay_of)).advance_past(own_events)
        if self.resume is None:
            # Queued ahead of the agent's first events, committed with them: no extra wait.
            self._db.submit(lambda tx: tasks_sql.update_if(tx, task.id, ("pending",), status="running", started_at=now_ms()))
        ctx = RunContext(
            self,
            task_id=task.id,
            thread_id=task.thread_id,
            user_id=task.user_id,
            message_id=task.assistant_message_id,
            user_message=self.user_message,
            load_history=lambda: self.manager.history(task.thread_id),
            tools=self.manager.agents.tools_for(self.agent),
            resume=self.resume,
            demo_delay_s=self.manager.demo_delay_s,
            recording=recording,
            billing=self.manager.plans,
        )
        await self.manager.agents.runner_for(self.agent, recording)(ctx)


class RunManager:
    def __init__(self, db: Store, hub: EventHub, agents: AgentRegistry, *, demo_delay_ms: float = 15.0,
                 plans: PlanConfig | None = None, lease_s: float = LEASE_S) -> None:
        self.db = db
        self.hub = hub
        self.agents = agents
        self.plans = Plans(db, plans)
        self.demo_delay_s = demo_delay_ms / 1000.0
        self.draining = False
        self._runners: dict[str, Runner] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._titles: dict[str, asyncio.Future[None]] = {}  # thread id -> its title request
        self.leases = Leases(db, self.end_expired, lease_s)
        db.on_commit = hub.publish
        db.on_gap = hub.resync
        db.on_control = self._on_control

    # -- reads ------------------------------------------------------------

    async def get_task(self, task_id: str) -> TaskRow:
        task = await self.db.read(lambda c: tasks_sql.get(c, task_id))
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task

    async def owned_task(self, task_id: str, user_id: str, fresh: bool = True) -> TaskRow:
        """The task if it is the user's (Forbidden otherwise).

        With `fresh=False` a task running in this process is answered from
        memory: its owner and ids are right, its status may lag a commit.
        """
        runner = None if fresh else self._runners.get(task_id)
        task = runner.task if runner is not None else await self.get_task(task_id)
        if task.user_id != user_id:
            raise Forbidden("task belongs to another user")
        return task

    async def current_task(self, thread_id: str, user_id: str) -> TaskRow | None:
        await self.check_thread(thread_id, user_id)
        return await self.db.read(lambda c: tasks_sql.live_for_thread(c, thread_id))

    async def check_thread(self, thread_id: str, user_id: str) -> bool:
        """True when the thread exists and is the user's; Forbidden when it is another's."""
        thread = await self.db.read(lambda c: threads_sql.get(c, thread_id))
        if thread is None:
            return False
        if thread.user_id != user_id:
            raise Forbidden("thread belongs to another user")
        return True

    async def thread_messages(self, thread_id: str, user_id: str) -> list[dict[str, Any]]:
        if not await self.check_thread(thread_id, user_id):
            return []
        return await self.history(thread_id)

    async def history(self, thread_id: str) -> list[dict[str, Any]]:
        return await self.db.read(lambda c: messages_sql.list_for_thread(c, thread_id))

    async def message(self, thread_id: str, message_id: str | None, task_id: str | None = None) -> dict[str, Any] | None:
        """The thread's message with this id: the one `task_id` stored (a task's own user message,
        which an edit under the same id does not change), else the live one."""
        if message_id is None:
            return None
        return await self.db.read(lambda c: messages_sql.get(c, thread_id, message_id, task_id))

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

    async def last_event(self, task_id: str) -> Any:
        return await self.db.read(lambda c: events_sql.last_for_task(c, task_id))

    async def thread_events_after(self, thread_id: str, after: int, limit: int) -> list[Any]:
        """The events of every task of the thread after `after`, in id order."""
        return await self.db.read(lambda c: events_sql.for_thread(c, thread_id, after, limit))

    async def thread_run_start(self, thread_id: str) -> int | None:
        """The id of the `run.started` event of the thread's latest task (None: no task yet)."""
        return await self.db.read(lambda c: events_sql.last_run_start(c, thread_id))

    async def history_day(self, thread_id: str, before_ms: int | None) -> tuple[int | None, list[dict[str, Any]], bool]:
        """One UTC day of the thread's messages (store/messages.py `day_before`)."""
        return await self.db.read(lambda c: messages_sql.day_before(c, thread_id, before_ms))

    # -- threads --------------------------------------------------------------

    async def create_thread(self, user_id: str, thread_id: str, title: str | None,
                            title_source: str = "message") -> threads_sql.ThreadRow:
        """A new thread of the user's (Conflict when the id is taken); a `given` title is never replaced."""
        return await self.db.write(lambda tx: threads_sql.create(tx, thread_id, user_id, title, title_source))

    async def probe_read(self) -> None:
        """One trivial read of the store (a health check)."""
        await self.db.read(health_sql.read_probe)

    async def probe_write(self) -> None:
        """One trivial write transaction of the store, committed (a health check)."""
        await self.db.write(health_sql.write_probe)

    async def list_threads(self, user_id: str) -> list[threads_sql.ThreadRow]:
        return await self.db.read(lambda c: threads_sql.for_user(c, user_id))

    async def threads_page(self, user_id: str, offset: int, limit: int) -> list[threads_sql.ThreadRow]:
        """The user's threads, most recently active first: `limit` of them after the first `offset`."""
        return await self.db.read(lambda c: threads_sql.page_for_user(c, user_id, offset, limit))

    async def last_messages(self, thread_ids: list[str], per_thread: int) -> dict[str, list[dict[str, Any]]]:
        """The last `per_thread` messages in force of each thread, oldest first (threads without any are absent)."""
        return await self.db.read(lambda c: messages_sql.last_for_threads(c, thread_ids, per_thread))

    async def delete_thread(self, thread_id: str, user_id: str) -> None:
        """Soft-delete the user's thread, stopping its live run first (NotFound, Forbidden)."""
        thread = await self.db.read(lambda c: threads_sql.get(c, thread_id))
        if thread is None or thread.deleted_at is not None:
            raise NotFound(f"thread {thread_id} not found")
        if thread.user_id != user_id:
            raise Forbidden("thread belongs to another user")
        live = await self.db.read(lambda c: tasks_sql.live_for_thread(c, thread_id))
        if live is not None:
            await self.abort(live.id)
        await self.db.write(lambda tx: threads_sql.soft_delete(tx, thread_id))

    # -- agents ---------------------------------------------------------------

    async def load_agents(self) -> None:
        """Register the agents created through the API (kept in the store).

        Built-in and configured agents own their ids: a stored agent whose id one of them has
        (the config named it after a user created it) is left out, with a warning.
        """
        for row in await self.db.read(agents_sql.all_agents):
            shared = self.agents.get(row["id"])
            if shared is not None and shared.extra.get("owner") is None:
                log.warning("agent %r of user %r is not loaded: the configuration defines an agent with that id",
                            row["id"], row["user_id"])
                continue
            self.agents.add(_agent_from_row(row))

    def visible_agents(self, user_id: str) -> list[AgentDef]:
        """Shared agents (built in or configured) and the user's own."""
        return [a for a in self.agents.all() if a.extra.get("owner") in (None, user_id)]

    def agent_for(self, agent_id: str, user_id: str) -> AgentDef:
        """The agent if this user may use it: NotFound, or Forbidden for another user's."""
        agent = self.agents.get(agent_id)
        if agent is None:
            raise NotFound(f"agent {agent_id} not found")
        if agent.extra.get("owner") not in (None, user_id):
            raise Forbidden(f"agent {agent_id} belongs to another user")
        return agent

    async def create_agent(self, user_id: str, spec: dict[str, Any]) -> AgentDef:
        """Store a new agent owned by `user_id`: Conflict when the id is taken (by a built-in,
        configured or stored agent), TooManyAgents when the user has MAX_AGENTS_PER_USER."""
        if self.agents.get(spec["id"]) is not None:
            raise Conflict(f"agent {spec['id']} already exists")
        row = {**spec, "user_id": user_id}

        def _insert(tx: WriteTx) -> None:
            if agents_sql.count_for_user_tx(tx, user_id) >= MAX_AGENTS_PER_USER:
                raise TooManyAgents(f"a user may create at most {MAX_AGENTS_PER_USER} agents")
            agents_sql.insert(tx, row)

        await self.db.write(_insert)
        agent = _agent_from_row(row)
        self.agents.add(agent)
        return agent

    async def agent_tasks(self, agent_id: str, user_id: str, status: str | None) -> list[TaskRow]:
        return await self.db.read(lambda c: tasks_sql.for_agent(c, agent_id, user_id, status))

    async def agent_counts(self, agent_id: str, user_id: str) -> dict[str, int]:
        return await self.db.read(lambda c: tasks_sql.counts_for_agent(c, agent_id, user_id))

    # -- starting -----------------------------------------------------------

    async def start_run(self, req: StartRequest, task_id: str | None = None) -> TaskRow:
        """Store the user message and the task under the thread's lock, then run it.

        Raises Draining, Forbidden (PlanRefused when the user's plan does not allow the run),
        Invalid, ThreadBusy (with the live task's id) or TooManyRunning (the plan's `max_running`).
        The plan is checked in the transaction that takes the lock, after the owner check and
        before the lock (403 before 409); the user's running runs are counted in it too, after the
        lock, so that concurrent starts never get past the limit.
        """
        if self.draining:
            raise Draining("the server is draining")
        try:
            agent = self.agent_for(req.agent_id, req.user_id)
        except NotFound:
            raise Invalid(f"unknown agent: {req.agent_id}") from None
        task_id = task_id or str(uuid.uuid4())
        title = _title(req.message)

        def _start(tx: WriteTx) -> TaskRow:
            thread = threads_sql.ensure(tx, req.thread_id, req.user_id, title)
            if thread.user_id != req.user_id:
                raise Forbidden("thread belongs to another user")
            refusal = self.plans.admit(tx, req.user_id, agent.id)
            if refusal is not None:
                raise PlanRefused(refusal.message, refusal.details)
            live = tasks_sql.live_for_thread_tx(tx, req.thread_id)
            if live is not None:
                raise ThreadBusy(live.id)
            busy = self.plans.running_refusal(tx, req.user_id)
            if busy is not None:
                raise TooManyRunning(busy.message, busy.details)
            msg_id = req.message["id"]
            if req.retry_of is not None:
                _claim_retry(tx, req.retry_of, task_id)
            elif req.rewind_from is not None:
                try:
                    messages_sql.supersede_from(tx, req.thread_id, req.rewind_from)
                except NotFound:
                    raise Invalid(f"rewindFrom names no message of this thread: {req.rewind_from}") from None
            if req.retry_of is not None:  # the failed task's user message is stored; the reply goes last
                seq = messages_sql.next_seq(tx, req.thread_id) - 1
            else:
                if messages_sql.exists(tx, req.thread_id, msg_id):
                    raise Invalid(f"message id {msg_id} already exists in this thread")
                seq = messages_sql.next_seq(tx, req.thread_id)
                messages_sql.put(tx, req.thread_id, msg_id, seq, "user", req.message["parts"], task_id, req.message.get("metadata"))
            task = TaskRow(
                id=task_id, thread_id=req.thread_id, user_id=req.user_id, agent_id=agent.id, status="pending",
                created_at=now_ms(), started_at=None, finished_at=None, current_node=None, error=None, parked=None,
                state=req.initial_state, user_message_id=msg_id, assistant_message_id=f"msg_{uuid.uuid4().hex}",
                assistant_seq=seq + 1, client_run_id=req.client_run_id,
            )
            tasks_sql.insert(tx, task)
            self.leases.claim(tx, task_id)
            tx.event(task_id, req.thread_id, RUN_STARTED, {"messageId": task.assistant_message_id, "agentId": agent.id})
            return task

        try:
            task: TaskRow = await self.db.write(_start)
        except Conflict as exc:  # the unique index refused a second live task
            live = await self.db.read(lambda c: tasks_sql.live_for_thread(c, req.thread_id))
            raise ThreadBusy(live.id if live else "") from exc
        self._spawn(task, agent, None, req.message)
        return task

    def _spawn(self, task: TaskRow, agent: AgentDef, resume: Resume | None,
               user_message: dict[str, Any] | None = None) -> Runner:
        runner = Runner(self, task, agent, resume, user_message)
        self._runners[task.id] = runner
        runner.future = asyncio.ensure_future(runner.run())
        runner.future.add_done_callback(lambda f: self._runner_done(task.id, runner, f))
        return runner

    def _runner_done(self, task_id: str, runner: Runner, fut: asyncio.Future[None]) -> None:
        if self._runners.get(task_id) is runner:
            del self._runners[task_id]
        if not fut.cancelled() and fut.exception() is not None:
            log.error("runner for task %s failed", task_id, exc_info=fut.exception())

    def _background(self, coro: Any) -> None:
        """Run `coro` without waiting for it, keeping a reference until it is done."""
        fut = asyncio.ensure_future(coro)
        self._tasks.add(fut)
        fut.add_done_callback(self._tasks.discard)

    @property
    def live_runs(self) -> int:
        return len(self._runners)

    # -- ending ---------------------------------------------------------------

    async def finish(
        self, task: TaskRow, status: str, reason: str, message: str, parts: list[dict[str, Any]] | None,
        only_if: Callable[[WriteTx], bool] | None = None,
    ) -> bool:
        """End the task with its one terminal event; False when it had already ended.

        A live task must not stay live because this write failed (the group commit it shared
        failed as a whole, or its parts could not be stored): it is tried once more, with the
        reply rebuilt from the events that did commit when the parts were at fault.
        """
        try:
            ended = await self._write_end(task, status, reason, message, parts, only_if)
        except Exception:
            log.exception("ending task %s failed; trying once more", task.id)
            if not _encodable(parts):
                parts = await self._reply_from_log(task.id)
            ended = await self._write_end(task, status, reason, message, parts, only_if)
        if ended and status == "completed":
            self._name_thread_after(task, parts or [])
        return ended

    async def _reply_from_log(self, task_id: str) -> list[dict[str, Any]] | None:
        try:
            return MessageAssembler().apply_all(await self.task_events(task_id)).parts
        except Exception:
            log.exception("reading the log of task %s failed; it ends without its reply", task_id)
            return None

    async def _write_end(
        self, task: TaskRow, status: str, reason: str, message: str, parts: list[dict[str, Any]] | None,
        only_if: Callable[[WriteTx], bool] | None = None,
    ) -> bool:
        def _finish(tx: WriteTx) -> bool:
            if only_if is not None and not only_if(tx):
                return False
            error = None if status == "completed" else {"reason": reason, "message": message}
            if not tasks_sql.update_if(
                tx, task.id, LIVE, status=status, finished_at=now_ms(), error=error, parked=None
            ):
                return False
            if parts:
                messages_sql.put(tx, task.thread_id, task.assistant_message_id, task.assistant_seq, "assistant", parts, task.id)
            if status == "completed":
                tx.event(task.id, task.thread_id, RUN_FINISHED, {})
            else:
                tx.event(task.id, task.thread_id, RUN_ERROR, {"status": status, "reason": reason, "message": message})
            return True

        return bool(await asyncio.shield(self.db.write(_finish)))

    async def park(self, runner: Runner, parked: Parked) -> None:
        """Park the task at `parked` (or, when its signal came early, wake it again at once)."""
        task = runner.task
        parts = runner.assembler.parts
        key = parked.correlation_key
        info = {"correlationKey": key, "prompt": parked.prompt}

        def _park(tx: WriteTx) -> TaskRow | None:
            current = tasks_sql.get_tx(tx, task.id)
            if current is None or current.status != "running":
                return None
            state = dict(current.state or {})
            state["parks"] = int(state.get("parks", 0)) + 1
            state["pending"] = parked.state
            tx.event(task.id, task.thread_id, JOB_PARKED, {"node": parked.node, **info})
            early = dict(state.get("early", {}))
            if key in early:  # the signal arrived before the park: take it now
                payload = early.pop(key)
                state["early"] = early
                state["taken"] = [*state.get("taken", []), key]
                state["resume"] = {"correlationKey": key, "payload": payload}
                tasks_sql.update(tx, task.id, state=state, current_node=parked.node)
                tx.event(task.id, task.thread_id, JOB_SIGNAL, {"correlationKey": key, "payload": payload})
                current.state = state
                return current
            tasks_sql.update(tx, task.id, status="parked", parked=info, state=state, current_node=parked.node)
            parts_now = [*parts, {"type": "data-parked", "data": {"node": parked.node, **info}}]
            messages_sql.put(tx, task.thread_id, task.assistant_message_id, task.assistant_seq, "assistant", parts_now, task.id)
            return None

        runner.park_write = asyncio.ensure_future(self.db.write(_park))
        woken = await asyncio.shield(runner.park_write)
        if woken is not None:
            self._resume(woken)

    async def abort(self, task_id: str, status: str = "cancelled", reason: str = "cancelled",
                    message: str = "The run was cancelled.") -> None:
        """Stop a task that has not ended (idempotent); returns once its terminal event is committed."""
        runner = self._runners.get(task_id)
        if runner is not None:
            runner.cancel(status, reason, message)
            if runner.future is not None:
                await asyncio.wait([runner.future], timeout=10)
            return
        task = await self.get_task(task_id)
        if task.live and not await self._abort_elsewhere(task, status, reason, message):
            await self.finish(task, status, reason, message, None)

    async def _abort_elsewhere(self, task: TaskRow, status: str, reason: str, message: str) -> bool:
        """A task another instance is running: ask it to stop the run (its runner writes the end,
        so nothing it emits can follow the terminal event) and wait for the end.  False when no
        live instance holds it: the caller ends it here."""
        if not self.db.shared or task.status not in ("pending", "running"):
            return False
        owner, lease_until = await self.db.read(lambda c: tasks_sql.owner_of(c, task.id))
        if owner in (None, self.db.instance) or (lease_until or 0) < now_ms():
            return False
        sub = self.hub.subscribe_task(task.id)
        try:
            await self.db.send_control({"abort": task.id, "status": status, "reason": reason, "message": message})
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.leases.lease_s + self.leases.every_s
            while loop.time() < deadline:
                if (await self.get_task(task.id)).terminal:
                    return True
                await sub.wait(min(1.0, deadline - loop.time()))
                sub.take()
            return (await self.get_task(task.id)).terminal
        finally:
            self.hub.unsubscribe(sub)

    def _on_control(self, message: dict[str, Any]) -> None:
        """A request from an instance sharing the store: stop a run this instance is running."""
        task_id = message.get("abort")
        runner = self._runners.get(task_id) if isinstance(task_id, str) else None
        if runner is not None:
            runner.cancel(str(message.get("status", "cancelled")), str(message.get("reason", "cancelled")),
                          str(message.get("message", "The run was cancelled.")))

    async def end_expired(self) -> int:
        """End the live tasks whose lease ran out (their instance is gone): `failed`/`interrupted`."""
        now = now_ms()
        expired = await self.db.read(lambda c: tasks_sql.expired(c, now))
        ended = 0
        for task in expired:
            parts = MessageAssembler().apply_all(await self.task_events(task.id)).parts

            def still_expired(tx: WriteTx, task_id: str = task.id) -> bool:  # not renewed since it was read
                return tasks_sql.lease_expired_tx(tx, task_id, now_ms())

            if await self.finish(task, "failed", "interrupted", "The instance running the task stopped.", parts,
                                 only_if=still_expired):
                ended += 1
        if ended:
            log.info("ended %d task(s) of instances that stopped", ended)
        return ended

    # -- titles ------------------------------------------------------------------

    def _name_thread_after(self, task: TaskRow, parts: list[dict[str, Any]]) -> None:
        """Ask the titles model (if configured) to name the thread of a task that just completed.

        At most one request per completed run and one at a time per thread; none for
        a replay (it must never call a model) or while draining.
        """
        model = self.agents.title_model()
        if (model is None or self.draining or (task.state or {}).get("replay_of")
                or task.thread_id in self._titles):
            return
        thread_id = task.thread_id
        fut = asyncio.ensure_future(self._name_thread(thread_id, _text(parts), model))
        self._titles[thread_id] = fut
        fut.add_done_callback(lambda f: self._title_done(thread_id, f))

    def _title_done(self, thread_id: str, fut: asyncio.Future[None]) -> None:
        if self._titles.get(thread_id) is fut:
            del self._titles[thread_id]
        if not fut.cancelled() and fut.exception() is not None:
            log.error("naming thread %s failed", thread_id, exc_info=fut.exception())

    async def _name_thread(self, thread_id: str, reply: str, model: ChatModel) -> None:
        thread = await self.db.read(lambda c: threads_sql.get(c, thread_id))
        if thread is None or thread.deleted_at is not None or thread.title_source != "message":
            return
        first = next((m for m in await self.history(thread_id) if m["role"] == "user"), None)
        question = _text(first["parts"]) if first is not None else ""
        if not question:
            return
        try:
            title = await titles.ask_title(model, question, reply)
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
    def titles_in_flight(self) -> int:
        return len(self._titles)

    async def wait_titles(self, timeout: float = 30.0) -> None:
        """Wait for the runs in flight to end and for the title requests they start (tests)."""
        runs = [r.future for r in self._runners.values() if r.future is not None]
        if runs:
            await asyncio.wait(runs, timeout=timeout)
        if self._titles:
            await asyncio.wait(list(self._titles.values()), timeout=timeout)

    # -- replay -----------------------------------------------------------------

    async def replay(self, task_id: str, user_id: str) -> TaskRow:
        """Run an ended task again from its record, as a new task on a new thread: the agent runs,
        the model and the tools do not (agents/replay.py); recorded signals answer its parks."""
        original = await self.owned_task(task_id, user_id)
        if original.live:
            raise Invalid(f"job {task_id} is {original.status}; only an ended job can be replayed")
        recording = Recording(await self.task_events(task_id))
        message = await self.message(original.thread_id, original.user_message_id, original.id)
        parts = message["parts"] if message else [{"type": "text", "text": ""}]
        new_id = str(uuid.uuid4())
        early = {f"approval-{new_id}-{n}": payload for n, payload in enumerate(recording.signals, 1)}
        req = StartRequest(
            user_id, f"replay-{new_id}", {"id": f"msg_{uuid.uuid4().hex}", "role": "user", "parts": parts},
            original.agent_id, initial_state={"replay_of": task_id, "early": early},
        )
        return await self.start_run(req, task_id=new_id)

    # -- retry after insufficient credits --------------------------------------------

    async def retry(self, task_id: str, user_id: str) -> TaskRow:
        """Run again a task that failed `insufficient_credits`, once the balance covers the tool that
        stopped it: a new task on the same thread that re-runs the same user message (not stored
        again; the failed task's partial reply stays in the history).  A task is retried at most once.

        Raises NotFound, Forbidden, Invalid (not retryable, or the balance is still too low), and
        whatever start_run raises (Draining, PlanRefused, ThreadBusy).
        """
        original = await self.owned_task(task_id, user_id)
        _check_retryable(original)
        tool = next((e.data.get("toolName") for e in reversed(await self.task_events(task_id))
                     if e.type == TOOL_CALL_END), None)
        prices = self.plans.config.prices
        needed = self.plans.config.price(str(tool)) if tool else max(prices.values(), default=0)
        usage = await self.plans.usage(user_id)
        if usage.credits < needed:
            raise Invalid(f"the balance is {usage.credits} and the run needs {needed} credit(s): add credits first")
        message = await self.message(original.thread_id, original.user_message_id, original.id)
        if message is None:
            raise Invalid(f"task {task_id} has no user message to run again")
        req = StartRequest(
            user_id, original.thread_id, {k: message[k] for k in ("id", "role", "parts")}, original.agent_id,
            initial_state={"retry_of": task_id}, retry_of=task_id,
        )
        return await self.start_run(req)

    # -- signals ----------------------------------------------------------------

    async def signal(self, task_id: str, correlation_key: str, payload: Any) -> TaskRow:
        """Wake a parked task with a signal.

        A repeat of a signal already taken is answered and nothing runs
        twice; a signal for the next park of a task that has not parked yet
        is kept and taken when it parks.  Refusals: SignalRefused with
        JOB_NOT_PARKED or INVALID_SIGNAL_KEY; NotFound.
        """

        def _signal(tx: WriteTx) -> tuple[TaskRow, bool]:
            task = tasks_sql.get_tx(tx, task_id)
            if task is None:
                raise NotFound(f"task {task_id} not found")
            state = dict(task.state or {})
            taken = state.get("taken", [])
            early = dict(state.get("early", {}))
            if correlation_key in taken or correlation_key in early:
                return task, False
            if task.status in ("pending", "running") and correlation_key == next_park_key(task):
                early[correlation_key] = payload
                state["early"] = early
                tasks_sql.update(tx, task_id, state=state)
                task.state = state
                return task, False
            if task.status != "parked":
                raise SignalRefused("JOB_NOT_PARKED", f"job {task_id} is {task.status}, not parked")
            if not task.parked or task.parked.get("correlationKey") != correlation_key:
                raise SignalRefused("INVALID_SIGNAL_KEY", "correlation_key does not match the parked step")
            state["taken"] = [*taken, correlation_key]
            state["resume"] = {"correlationKey": correlation_key, "payload": payload}
            tasks_sql.update(tx, task_id, status="running", parked=None, state=state)
            self.leases.claim(tx, task_id)
            tx.event(task_id, task.thread_id, JOB_SIGNAL, {"correlationKey": correlation_key, "payload": payload})
            task.status, task.parked, task.state = "running", None, state
            return task, True

        task, woke = await self.db.write(_signal)
        if woke:
            self._resume(task)
        return task

    def _resume(self, task: TaskRow) -> None:
        agent = self.agents.get(task.agent_id)
        state = task.state or {}
        if agent is None:
            self._background(self.finish(task, "failed", "agent_missing", f"agent {task.agent_id} no longer exists", None))
            return
        sig = state.get("resume", {})
        self._spawn(task, agent, Resume(sig.get("correlationKey", ""), sig.get("payload"), state.get("pending", {})))

    # -- recovery and drain -----------------------------------------------------

    async def recover(self) -> int:
        """After a crash: tasks left pending/running end `failed`/`interrupted`; parked ones stay.

        On a store that other instances share, only the tasks whose lease ran out are this
        instance's to end (the others are running elsewhere); the leases' sweep starts here."""
        if self.db.shared:
            self.leases.start()
            return await self.end_expired()
        stale = await self.db.read(lambda c: tasks_sql.with_status(c, ("pending", "running")))
        for task in stale:
            events = await self.task_events(task.id)
            if task.state and task.state.get("resume") and task.status == "running" and _resumed_after_park(events):
                # Woken by a signal but the process died before the agent finished: run it again.
                self._resume(task)
                continue
            parts = MessageAssembler().apply_all(events).parts
            await self.finish(task, "failed", "interrupted", "The server stopped while the run was in progress.", parts)
        if stale:
            log.info("recovered %d interrupted task(s)", len(stale))
        return len(stale)

    async def drain(self, timeout: float) -> None:
        """Refuse new runs, give live runs `timeout` seconds, then end them `failed`/`shutdown`.
        Title requests are cancelled at once: a title is never worth a slower shutdown."""
        self.draining = True
        naming = list(self._titles.values())
        for fut in naming:
            fut.cancel()
        if naming:
            await asyncio.wait(naming, timeout=5)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._runners and loop.time() < deadline:
            futures = [r.future for r in self._runners.values() if r.future is not None]
            await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
        for runner in list(self._runners.values()):
            runner.cancel("failed", "shutdown", "The server shut down before the run finished.")
        leftovers = [r.future for r in self._runners.values() if r.future is not None]
        if leftovers:
            await asyncio.wait(leftovers, timeout=10)
        await self.leases.stop()
        await self.db.committed()


def _agent_from_row(row: dict[str, Any]) -> AgentDef:
    return AgentDef(
        id=row["id"], name=row["name"], type=row["type"], description=row.get("description", ""),
        llm=row.get("llm"), tools=tuple(row.get("tools", ())), instructions=row.get("instructions", ""),
        extra={"owner": row["user_id"]},
    )


def _encodable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _check_retryable(task: TaskRow) -> None:
    if task.status != "failed" or (task.error or {}).get("reason") != "insufficient_credits":
        raise Invalid("this task is not retryable: only a run that failed for insufficient credits is")
    retried_by = (task.state or {}).get("retried_by")
    if retried_by:
        raise Invalid(f"this task was already retried as task {retried_by}")


def _claim_retry(tx: WriteTx, task_id: str, new_id: str) -> None:
    """Mark the failed task retried by `new_id`, in the transaction that starts it (Invalid if it was)."""
    task = tasks_sql.get_tx(tx, task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    _check_retryable(task)
    tasks_sql.update(tx, task_id, state={**(task.state or {}), "retried_by": new_id})


def next_park_key(task: TaskRow) -> str:
    """The correlation key of the task's next park: `approval-<taskId>-<n>` (known in advance,
    so that a signal sent before the park can be kept for it)."""
    return f"approval-{task.id}-{int((task.state or {}).get('parks', 0)) + 1}"


def _resumed_after_park(events: list[Any]) -> bool:
    last_signal = max((i for i, e in enumerate(events) if e.type == JOB_SIGNAL), default=-1)
    return last_signal >= 0 and not any(e.terminal for e in events[last_signal:])


def _text(parts: list[dict[str, Any]]) -> str:
    """The text parts of a message, joined, whitespace collapsed."""
    return " ".join(" ".join(str(p.get("text", "")) for p in parts if p.get("type") == "text").split())


def _title(message: dict[str, Any]) -> str | None:
    return titles.shorten(_text(message.get("parts", [])))
