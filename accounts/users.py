"""Users and their profiles: the lookup by email, your own profile, another user's public one."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from accounts.checks import check_avatar_url, check_bio, check_email, check_username
from accounts.errors import FORBIDDEN, USER_NOT_FOUND, USERNAME_TAKEN, AccountError, invalid
from store import Store
from store import accounts as sql
from store.errors import Conflict

PROFILE_FIELDS = {"username", "avatar_url", "bio"}


def iso(ms: int | None) -> str | None:
    """A time in ms since the epoch as ISO 8601 UTC with milliseconds (`...T12:00:00.000Z`)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def profile(user: dict[str, Any]) -> dict[str, Any]:
    """The public part of an account."""
    return {"id": user["id"], "username": user["username"], "avatar_url": user["avatar_url"], "bio": user["bio"]}


async def user_by(db: Store, column: str, value: str) -> dict[str, Any] | None:
    """The account whose `column` (id, email or username) is `value`, or None."""
    return await db.read(lambda conn: sql.user_by(conn, column, value))


class Users:
    """The users routes: `admins` (ids or emails) may look up anyone."""

    def __init__(self, db: Store, admins: set[str]) -> None:
        self.db = db
        self.admins = admins

    def is_admin(self, user_id: str, email: str | None = None) -> bool:
        return user_id in self.admins or (email is not None and email.lower() in self.admins)

    async def lookup(self, caller_id: str, email_param: str | None) -> dict[str, Any]:
        """The account of an email: your own, or anyone's for an admin (FORBIDDEN otherwise)."""
        errors: list[dict[str, str]] = []
        email = check_email(email_param, errors)
        if errors:
            raise invalid(errors)
        caller = await user_by(self.db, "id", caller_id)
        admin = self.is_admin(caller_id, caller["email"] if caller else None)
        if not admin and (caller is None or caller["email"] != email):
            raise AccountError(FORBIDDEN, "you may look up only your own account")
        target = caller if caller is not None and caller["email"] == email else await user_by(self.db, "email", email)
        if target is None:
            raise AccountError(USER_NOT_FOUND, "no such user")
        return {"id": target["id"], "email": target["email"], "created_at": iso(target["created_at"]),
                "email_confirmed_at": iso(target["email_confirmed_at"])}

    async def me(self, user_id: str) -> dict[str, Any]:
        user = await user_by(self.db, "id", user_id)
        if user is None:
            raise AccountError(USER_NOT_FOUND, "no local account for this identity")
        return profile(user)

    async def update_me(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Change the fields of `body` (username, avatar_url, bio; null or "" clears the URL, null the bio)."""
        changes = profile_changes(body)
        try:
            user = await self.db.write(lambda tx: sql.update_user(tx, user_id, changes))
        except Conflict:
            raise AccountError(USERNAME_TAKEN, "this username is taken",
                               errors=[{"field": "username", "message": "taken"}]) from None
        if user is None:
            raise AccountError(USER_NOT_FOUND, "no local account for this identity")
        return profile(user)

    async def by_username(self, username: str) -> dict[str, Any]:
        errors: list[dict[str, str]] = []
        check_username(username, errors)
        if errors:
            raise invalid(errors)
        user = await user_by(self.db, "username", username)
        if user is None:
            raise AccountError(USER_NOT_FOUND, "no such user")
        return profile(user)


def profile_changes(body: dict[str, Any]) -> dict[str, Any]:
    """The changes a profile update asks for, checked (VALIDATION_ERROR naming every bad or unknown field)."""
    errors: list[dict[str, str]] = [{"field": field, "message": "unknown field"}
                                    for field in sorted(set(body) - PROFILE_FIELDS)]
    changes: dict[str, Any] = {}
    if "username" in body:
        changes["username"] = check_username(body["username"], errors)
    if "avatar_url" in body:
        changes["avatar_url"] = check_avatar_url(body["avatar_url"], errors)
    if "bio" in body:
        changes["bio"] = check_bio(body["bio"], errors)
    if errors:
        raise invalid(errors)
    return changes

