"""The run manager: starts runs under the per-thread lock, runs agents in the
background, aborts, parks and resumes them, recovers after a crash, drains.

Every status change and its event are written in one transaction, so the
task row and the event log never disagree.  Its pieces: runs/start.py (the
start's transaction), runs/runner.py (one activation of an agent),
runs/transitions.py (park, signal, end), runs/reruns.py (replay, retry),
runs/titles.py (naming threads), runs/agent_catalog.py (the agents users may
run), runs/reads.py (what surfaces read), runs/errors.py (its refusals,
re-exported here with StartRequest for the surfaces).
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from agents import AgentDef, AgentRegistry
from agents.context import Parked, Resume
from runs import reruns
from runs.agent_catalog import MAX_AGENTS_PER_USER, AgentCatalog
from runs.assemble import MessageAssembler
from runs.errors import (
    Draining,
    Forbidden,
    Invalid,
    PlanRefused,
    RunError,
    SignalRefused,
    ThreadBusy,
    TooManyAgents,
    TooManyRunning,
)
from runs.hub import EventHub
from runs.leases import LEASE_S, Leases
from runs.plans import PlanConfig, Plans
from runs.reads import RunReads
from runs.runner import Runner
from runs.start import StartRequest, text_message, write_start
from runs.titles import ThreadTitles, message_title
from runs.transitions import encodable, resumed_after_park, write_end, write_park, write_signal
from store import Conflict, NotFound, Store, WriteTx
from store import health as health_sql
from store import tasks as tasks_sql
from store import threads as threads_sql
from store.db import now_ms
from store.ids import uuid7
from store.tasks import TaskRow

__all__ = [
    "MAX_AGENTS_PER_USER", "Draining", "Forbidden", "Invalid", "PlanRefused", "RunError", "RunManager",
    "SignalRefused", "StartRequest", "ThreadBusy", "TooManyAgents", "TooManyRunning", "text_message",
]

log = logging.getLogger("parley.runs")

ENDED_KEPT = 4096  # rows of ended runs kept for the streams opened right after the end


class RunManager(RunReads):
    """The one owner of runs: what starts, wakes and ends them, and the store's side of it
    that the surfaces use (the reads it inherits from RunReads, threads, agents)."""

    def __init__(self, db: Store, hub: EventHub, agents: AgentRegistry, *, demo_delay_ms: float = 15.0,
                 plans: PlanConfig | None = None, lease_s: float = LEASE_S) -> None:
        super().__init__(db)
        self.hub = hub
        self.agents = agents
        self.plans = Plans(db, plans)
        self.demo_delay_s = demo_delay_ms / 1000.0
        self.draining = False
        self._runners: dict[str, Runner] = {}
        self.runs_started = 0  # on this instance (metrics)
        self.runs_finished: dict[tuple[str, str], int] = {}  # ended by this instance, by (status, reason)
        self._ended: OrderedDict[str, TaskRow] = OrderedDict()  # rows of runs that ended here lately
        self._tasks: set[asyncio.Future[Any]] = set()
        self.titles = ThreadTitles(db, agents)
        self.catalog = AgentCatalog(db, agents)
        self.leases = Leases(db, self.end_expired, lease_s)
        db.on_commit = hub.publish
        db.on_gap = hub.resync
        db.on_control = self._on_control

    # -- tasks -------------------------------------------------------------

    async def owned_task(self, task_id: str, user_id: str, fresh: bool = True) -> TaskRow:
        """The task if it is the user's (Forbidden otherwise).

        With `fresh=False` a task running in this process, or one that ended in it lately, is
        answered from memory: its owner and ids are right, its status may lag a commit (an
        ended task's status is final).
        """
        task = None if fresh else self._in_memory(task_id)
        if task is None:
            task = await self.get_task(task_id)
        if task.user_id != user_id:
            raise Forbidden("task belongs to another user")
        return task

    def _in_memory(self, task_id: str) -> TaskRow | None:
        runner = self._runners.get(task_id)
        return runner.task if runner is not None else self._ended.get(task_id)

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

    # -- agents (runs/agent_catalog.py) ---------------------------------------

    async def load_agents(self) -> None:
        """Register the agents users created through the API (kept in the store)."""
        await self.catalog.load()

    async def visible_agents(self, user_id: str) -> list[AgentDef]:
        """Shared agents (built in or configured) and the user's own."""
        return await self.catalog.visible(user_id)

    async def agent_for(self, agent_id: str, user_id: str) -> AgentDef:
        """The agent if this user may use it: NotFound, or Forbidden for another user's."""
        return await self.catalog.agent_for(agent_id, user_id)

    async def create_agent(self, user_id: str, spec: dict[str, Any]) -> AgentDef:
        """Store a new agent owned by `user_id` (Conflict, TooManyAgents)."""
        return await self.catalog.create(user_id, spec)

    # -- starting -----------------------------------------------------------

    async def start_run(self, req: StartRequest, task_id: str | None = None) -> TaskRow:
        """Store the user message and the task under the thread's lock, then run it.

        Raises Draining, Forbidden (PlanRefused when the user's plan does not allow the run),
        Invalid, ThreadBusy (with the live task's id) or TooManyRunning (the plan's `max_running`),
        in the order runs/start.py gives.
        """
        if self.draining:
            raise Draining("the server is draining")
        try:
            agent = await self.agent_for(req.agent_id, req.user_id)
        except NotFound:
            raise Invalid(f"unknown agent: {req.agent_id}") from None
        new_id = task_id or uuid7()
        title = message_title(req.message)

        def _start(tx: WriteTx) -> TaskRow:
            return write_start(tx, req, agent.id, new_id, title, self.plans, self.leases)

        try:
            # first: a new run's start depends on no queued write (another run's end that a client
            # saw is committed), so it never waits behind the backlog of events other runs queued.
            task = await self.db.write(_start, first=True)
        except Conflict as exc:  # the unique index refused a second live task
            live = await self.db.read(lambda c: tasks_sql.live_for_thread(c, req.thread_id))
            raise ThreadBusy(live.id if live else "") from exc
        self.runs_started += 1
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
            if runner.task.terminal:  # its stream, opened after the end, needs no read of the row
                self._ended[task_id] = runner.task
                if len(self._ended) > ENDED_KEPT:
                    self._ended.popitem(last=False)
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
        only_if: Callable[[WriteTx], bool] | None = None, values: dict[str, Any] | None = None,
        queued: Callable[[], None] | None = None,
    ) -> bool:
        """End the task with its one terminal event; False when it had already ended.  `values`:
        more columns the end stores; `queued` is called right after the end is queued (a runner's
        `end_values` and `end_queued`).

        A live task must not stay live because this write failed (the group commit it shared
        failed as a whole, or its parts could not be stored): it is tried once more, with the
        reply rebuilt from the events that did commit when the parts were at fault.
        """
        try:
            ended = await self._write_end(task, status, reason, message, parts, only_if, values, queued)
        except Exception:
            log.exception("ending task %s failed; trying once more", task.id)
            if not encodable(parts):
                parts = await self._reply_from_log(task.id)
            ended = await self._write_end(task, status, reason, message, parts, only_if, values, queued)
        if ended:  # a runner's row answers reads from memory (owned_task): it is over from now on
            task.status = status
            key = (status, "" if status == "completed" else reason)
            self.runs_finished[key] = self.runs_finished.get(key, 0) + 1
        if ended and status == "completed" and not self.draining:
            self.titles.name_after(task, parts or [])
        return ended

    async def _reply_from_log(self, task_id: str) -> list[dict[str, Any]] | None:
        try:
            return MessageAssembler().apply_all(await self.task_events(task_id)).parts
        except Exception:
            log.exception("reading the log of task %s failed; it ends without its reply", task_id)
            return None

    async def _write_end(
        self, task: TaskRow, status: str, reason: str, message: str, parts: list[dict[str, Any]] | None,
        only_if: Callable[[WriteTx], bool] | None = None, values: dict[str, Any] | None = None,
        queued: Callable[[], None] | None = None,
    ) -> bool:
        def _finish(tx: WriteTx) -> bool:
            return write_end(tx, task, status, reason, message, parts, only_if, **(values or {}))

        written = self.db.submit(_finish)
        if queued is not None:
            queued()
        return bool(await asyncio.shield(written))

    async def park(self, runner: Runner, parked: Parked) -> None:
        """Park the task at `parked` (or, when its signal came early, wake it again at once)."""
        task, parts = runner.task, runner.assembler.parts

        def _park(tx: WriteTx) -> TaskRow | None:
            return write_park(tx, task, parked, parts)

        runner.park_write = asyncio.ensure_future(self.db.write(_park))
        woken = await asyncio.shield(runner.park_write)
        if woken is not None:
            await self._resume(woken)

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

    @property
    def titles_in_flight(self) -> int:
        return self.titles.in_flight

    async def wait_titles(self, timeout: float = 30.0) -> None:
        """Wait for the runs in flight to end and for the title requests they start (tests)."""
        runs = [r.future for r in self._runners.values() if r.future is not None]
        if runs:
            await asyncio.wait(runs, timeout=timeout)
        await self.titles.wait(timeout)

    # -- running an ended task again (runs/reruns.py) --------------------------------

    async def replay(self, task_id: str, user_id: str) -> TaskRow:
        """Run an ended task again from its record, as a new task on a new thread."""
        return await reruns.replay(self, task_id, user_id)

    async def retry(self, task_id: str, user_id: str) -> TaskRow:
        """Run again, on its thread, a task that failed `insufficient_credits`."""
        return await reruns.retry(self, task_id, user_id)

    # -- signals ----------------------------------------------------------------

    async def signal(self, task_id: str, correlation_key: str, payload: Any) -> TaskRow:
        """Wake a parked task with a signal.

        A repeat of a signal already taken is answered and nothing runs
        twice; a signal for the next park of a task that has not parked yet
        is kept and taken when it parks.  Refusals: SignalRefused with
        JOB_NOT_PARKED or INVALID_SIGNAL_KEY; NotFound; TooManyRunning when waking the task
        would pass its user's `max_running` (the signal is not taken: send it again later).
        """

        def _signal(tx: WriteTx) -> tuple[TaskRow, bool]:
            return write_signal(tx, task_id, correlation_key, payload, self.leases, self._admit_wake)

        task, woke = await self.db.write(_signal)
        if woke:
            await self._resume(task)
        return task

    def _admit_wake(self, tx: WriteTx, task: TaskRow) -> None:
        """A parked run woken by its signal runs again, so it counts against the plan's
        `max_running` like a start (else parking runs and waking them all would pass the bound):
        TooManyRunning while the user has as many going."""
        tasks_sql.serialize_user(tx, task.user_id)  # the count holds until this signal commits
        busy = self.plans.running_refusal(tx, self.plans.plan_of(tx, task.user_id), task.user_id)
        if busy is not None:
            raise TooManyRunning(busy.message, busy.details)

    async def _resume(self, task: TaskRow) -> None:
        agent = await self.catalog.find(task.agent_id)  # created on another instance, maybe
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
            if task.state and task.state.get("resume") and task.status == "running" and resumed_after_park(events):
                # Woken by a signal but the process died before the agent finished: run it again.
                await self._resume(task)
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
        await self.titles.cancel()
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
