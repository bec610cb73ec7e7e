"""Local accounts (SPEC section 9): users, pending sign-ups and refresh-token families.

Write functions take the writer's `WriteTx` (synchronous, in the writer's
thread); read functions take a reader connection.  Emails are lower-cased
by the caller.  Functions that must commit even when the caller answers an
error (a wrong code counts, a reused refresh token revokes its family)
return a status instead of raising.
"""
from __future__ import annotations

from typing import Any

import aiosqlite

from store.db import WriteTx, now_ms
from store.errors import Conflict

USER_COLUMNS = "id, email, username, password_hash, avatar_url, bio, plan, created_at, email_confirmed_at"


def user_row(row: Any) -> dict[str, Any]:
    return {
        "id": row[0], "email": row[1], "username": row[2], "password_hash": row[3], "avatar_url": row[4],
        "bio": row[5], "plan": row[6], "created_at": row[7], "email_confirmed_at": row[8],
    }


# -- users ---------------------------------------------------------------------

def insert_user(tx: WriteTx, user: dict[str, Any]) -> None:
    if tx.fetchone("SELECT 1 FROM users WHERE email = ?", (user["email"],)):
        raise Conflict("email already registered")
    if tx.fetchone("SELECT 1 FROM users WHERE username = ?", (user["username"],)):
        raise Conflict("username taken")
    tx.execute(
        f"INSERT INTO users ({USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (user["id"], user["email"], user["username"], user["password_hash"], user.get("avatar_url"),
         user.get("bio"), user.get("plan", "free"), user.get("created_at", now_ms()), user.get("email_confirmed_at")),
    )


def tx_user_by(tx: WriteTx, column: str, value: str) -> dict[str, Any] | None:
    assert column in ("id", "email", "username")
    row = tx.fetchone(f"SELECT {USER_COLUMNS} FROM users WHERE {column} = ?", (value,))
    return user_row(row) if row else None


def update_user(tx: WriteTx, user_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
    """Apply `changes` (username, avatar_url, bio, plan, password_hash); Conflict when the username is taken."""
    allowed = ("username", "avatar_url", "bio", "plan", "password_hash")
    sets = {k: v for k, v in changes.items() if k in allowed}
    if "username" in sets:
        row = tx.fetchone("SELECT id FROM users WHERE username = ?", (sets["username"],))
        if row and row[0] != user_id:
            raise Conflict("username taken")
    if sets:
        assignments = ", ".join(f"{k} = ?" for k in sets)
        tx.execute(f"UPDATE users SET {assignments} WHERE id = ?", (*sets.values(), user_id))
    return tx_user_by(tx, "id", user_id)


async def user_by(conn: aiosqlite.Connection, column: str, value: str) -> dict[str, Any] | None:
    assert column in ("id", "email", "username")
    rows = list(await conn.execute_fetchall(f"SELECT {USER_COLUMNS} FROM users WHERE {column} = ?", (value,)))
    return user_row(rows[0]) if rows else None


async def all_users(conn: aiosqlite.Connection) -> list[dict[str, Any]]:
    return [user_row(r) for r in await conn.execute_fetchall(f"SELECT {USER_COLUMNS} FROM users ORDER BY created_at")]


# -- pending sign-ups ---------------------------------------------------------

PENDING_COLUMNS = "email, username, password_hash, code_hash, expires_at, attempts, last_sent_at, redirect_to, created_at"
_PENDING_FIELDS = [c.strip() for c in PENDING_COLUMNS.split(",")]


def pending_row(row: Any) -> dict[str, Any]:
    return dict(zip(PENDING_COLUMNS.split(", "), row, strict=True))


def tx_pending(tx: WriteTx, email: str) -> dict[str, Any] | None:
    row = tx.fetchone(f"SELECT {PENDING_COLUMNS} FROM pending_signups WHERE email = ?", (email,))
    return pending_row(row) if row else None


def upsert_pending(tx: WriteTx, p: dict[str, Any]) -> None:
    tx.execute(
        f"INSERT INTO pending_signups ({PENDING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (email) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _PENDING_FIELDS[1:]),
        (p["email"], p["username"], p["password_hash"], p["code_hash"], p["expires_at"], p.get("attempts", 0),
         p["last_sent_at"], p.get("redirect_to"), p.get("created_at", now_ms())),
    )


def delete_pending(tx: WriteTx, email: str) -> None:
    tx.execute("DELETE FROM pending_signups WHERE email = ?", (email,))


def count_wrong_code(tx: WriteTx, email: str) -> None:
    """One more wrong try at the pending sign-up's code."""
    tx.execute("UPDATE pending_signups SET attempts = attempts + 1 WHERE email = ?", (email,))


def lift_mail_cooldown(tx: WriteTx, email: str, code_hash: str) -> None:
    """Let the next sign-up or resend mail a code at once (only while `code_hash` is still the pending one)."""
    tx.execute("UPDATE pending_signups SET last_sent_at = 0 WHERE email = ? AND code_hash = ?", (email, code_hash))


# -- refresh tokens -----------------------------------------------------------

def insert_refresh(tx: WriteTx, token_hash: str, user_id: str, family_id: str, parent_hash: str | None,
                   expires_at: int) -> None:
    tx.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, family_id, parent_hash, created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (token_hash, user_id, family_id, parent_hash, now_ms(), expires_at),
    )


def refresh_row(tx: WriteTx, token_hash: str) -> dict[str, Any] | None:
    row = tx.fetchone(
        "SELECT token_hash, user_id, family_id, parent_hash, created_at, expires_at, rotated_at, revoked_at "
        "FROM refresh_tokens WHERE token_hash = ?", (token_hash,))
    if row is None:
        return None
    keys = ("token_hash", "user_id", "family_id", "parent_hash", "created_at", "expires_at", "rotated_at", "revoked_at")
    return dict(zip(keys, row, strict=True))


def mark_rotated(tx: WriteTx, token_hash: str) -> None:
    tx.execute("UPDATE refresh_tokens SET rotated_at = ? WHERE token_hash = ?", (now_ms(), token_hash))


def revoke_family(tx: WriteTx, family_id: str) -> int:
    return tx.execute("UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
                      (now_ms(), family_id)).rowcount


def revoke_user(tx: WriteTx, user_id: str) -> int:
    return tx.execute("UPDATE refresh_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                      (now_ms(), user_id)).rowcount
