"""Leases: which instance runs which task, when many instances share one store (SPEC section 14).

The instance that starts (or wakes) a task claims it in the same transaction, with a lease of
`lease_s` seconds (15 by default); its heartbeat renews the leases of all the tasks it runs every
third of that.  Every instance sweeps as often for live (not parked) tasks whose lease ran out and
ends them `failed`/`interrupted`, so the runs of an instance that died (kill -9, a lost host) end
within lease + a third, their streams get their terminal event on every instance and their
threads are free.  Parked tasks belong to no instance.  A store of one process (SQLite) needs none of this:
it ends what it left running when it starts again (RunManager.recover).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from store import Store, WriteTx
from store import tasks as tasks_sql
from store.db import now_ms

log = logging.getLogger("parley.runs")

LEASE_S = 15.0


class Leases:
    """The heartbeat and the sweep of one instance (started only on a shared store)."""

    def __init__(self, db: Store, end_expired: Callable[[], Awaitable[int]], lease_s: float = LEASE_S) -> None:
        self.db = db
        self.lease_s = lease_s
        self.every_s = lease_s / 3  # heartbeat and sweep: a lease outlives two missed heartbeats
        self._end_expired = end_expired
        self._loops: list[asyncio.Task[None]] = []

    def until(self) -> int:
        """The end of a lease taken or renewed now (epoch ms)."""
        return now_ms() + int(self.lease_s * 1000)

    def claim(self, tx: WriteTx, task_id: str) -> None:
        """This instance runs the task from now on (inside the start's or the wake-up's transaction)."""
        if self.db.shared:
            tasks_sql.claim(tx, task_id, self.db.instance, self.until())

    def start(self) -> None:
        if self.db.shared and not self._loops:
            self._loops = [asyncio.ensure_future(self._every(self.every_s, self._renew, "heartbeat")),
                           asyncio.ensure_future(self._every(self.every_s, self._end_expired, "lease sweep"))]

    async def stop(self) -> None:
        for loop in self._loops:
            loop.cancel()
        if self._loops:
            await asyncio.wait(self._loops)
        self._loops = []

    async def _renew(self) -> int:
        instance, until = self.db.instance, self.until()
        renewed: int = await self.db.write(lambda tx: tasks_sql.renew(tx, instance, until))
        return renewed

    @staticmethod
    async def _every(seconds: float, step: Callable[[], Awaitable[int]], name: str) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is briefly unreachable: the next round tries again
                log.warning("%s failed", name, exc_info=True)
