"""Plans and credits per user id: the `user_plans` row and the `credit_ledger` (SPEC section 10).

The store knows no plan configuration: callers (runs/plans.py) say which
balance a new user starts with.  A balance never goes below zero (the
table's CHECK holds it too); every change of one is a ledger row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiosqlite

from store.db import WriteTx, now_ms

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class UserPlanRow:
    user_id: str
    plan: str | None  # None: the default plan
    credits: int | None  # None: not yet given the plan's starting balance


_GET = "SELECT user_id, plan, credits FROM user_plans WHERE user_id = ?"


def _row(rows: Any) -> UserPlanRow | None:
    rows = list(rows)
    return UserPlanRow(*rows[0]) if rows else None


def get_tx(tx: WriteTx, user_id: str) -> UserPlanRow | None:
    return _row(tx.fetchall(_GET, (user_id,)))


async def get(conn: aiosqlite.Connection, user_id: str) -> UserPlanRow | None:
    return _row(await conn.execute_fetchall(_GET, (user_id,)))


def _ledger(tx: WriteTx, user_id: str, delta: int, balance: int, reason: str, actor: str,
            task_id: str | None = None, note: str | None = None) -> None:
    tx.execute(
        "INSERT INTO credit_ledger (user_id, delta, balance, reason, actor, task_id, note, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (user_id, delta, balance, reason, actor, task_id, note, now_ms()),
    )


def initialise(tx: WriteTx, user_id: str, plan: str | None, credits: int) -> None:
    """Give a user seen for the first time (no row, or a row without a balance) `credits`, on `plan`
    when the row is new; the ledger records the starting balance."""
    now = now_ms()
    cur = tx.execute(
        "INSERT INTO user_plans (user_id, plan, credits, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (user_id) DO UPDATE SET credits = excluded.credits, updated_at = excluded.updated_at"
        " WHERE user_plans.credits IS NULL",
        (user_id, plan, credits, now, now),
    )
    if cur.rowcount == 1:
        _ledger(tx, user_id, credits, credits, "initial", "system")


def debit(tx: WriteTx, user_id: str, amount: int, reason: str, actor: str, task_id: str | None) -> int | None:
    """Take `amount` from an initialised balance: the new balance, or None (nothing taken) when it is too low."""
    cur = tx.execute(
        "UPDATE user_plans SET credits = credits - ?, updated_at = ? WHERE user_id = ? AND credits >= ?",
        (amount, now_ms(), user_id, amount),
    )
    if cur.rowcount != 1:
        return None
    balance = int(tx.fetchone("SELECT credits FROM user_plans WHERE user_id = ?", (user_id,))[0])
    _ledger(tx, user_id, -amount, balance, reason, actor, task_id)
    return balance


def adjust(tx: WriteTx, user_id: str, delta: int, reason: str, actor: str,
           task_id: str | None = None, note: str | None = None) -> tuple[int, int]:
    """Add `delta` (negative: take) to an initialised balance, stopping at zero: (old, new).
    The ledger records the change made, and the requested one in `note` when zero stopped it."""
    old = int(tx.fetchone("SELECT credits FROM user_plans WHERE user_id = ?", (user_id,))[0])
    new = max(0, old + delta)
    tx.execute("UPDATE user_plans SET credits = ?, updated_at = ? WHERE user_id = ?", (new, now_ms(), user_id))
    if new - old != delta:
        note = f"{note + '; ' if note else ''}asked {delta:+d}, stopped at zero"
    _ledger(tx, user_id, new - old, new, reason, actor, task_id, note)
    return old, new


def set_plan(tx: WriteTx, user_id: str, plan: str, actor: str, note: str | None = None) -> None:
    """Put an initialised user on `plan` (the balance stays); the ledger records it with delta 0."""
    tx.execute("UPDATE user_plans SET plan = ?, updated_at = ? WHERE user_id = ?", (plan, now_ms(), user_id))
    balance = int(tx.fetchone("SELECT credits FROM user_plans WHERE user_id = ?", (user_id,))[0])
    _ledger(tx, user_id, 0, balance, "plan", actor, note=note or f"plan {plan}")


def day_start(ms: int) -> int:
    """The start (UTC midnight) of the day holding `ms`, in epoch milliseconds."""
    return ms - ms % DAY_MS


_RUNS_SINCE = "SELECT COUNT(*) FROM tasks WHERE user_id = ? AND created_at >= ?"


def runs_since_tx(tx: WriteTx, user_id: str, since_ms: int) -> int:
    return int(tx.fetchone(_RUNS_SINCE, (user_id, since_ms))[0])


async def runs_since(conn: aiosqlite.Connection, user_id: str, since_ms: int) -> int:
    rows = list(await conn.execute_fetchall(_RUNS_SINCE, (user_id, since_ms)))
    return int(rows[0][0])


async def ledger(conn: aiosqlite.Connection, user_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """The user's latest ledger rows, newest first."""
    rows = await conn.execute_fetchall(
        "SELECT id, delta, balance, reason, actor, task_id, note, created_at FROM credit_ledger"
        " WHERE user_id = ? ORDER BY id DESC LIMIT ?", (user_id, limit))
    keys = ("id", "delta", "balance", "reason", "actor", "task_id", "note", "created_at")
    return [dict(zip(keys, r, strict=True)) for r in rows]
