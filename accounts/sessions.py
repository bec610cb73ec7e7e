"""Sessions (SPEC section 9): an access token and a refresh token, issued by a sign-in or a confirmed sign-up.

- Refresh tokens: 32 random bytes (url-safe base64), stored as sha256, 30 days, rotated on
  every use; reusing a rotated one revokes its whole family (the live token too).  Logout
  revokes the family; an unknown refresh token is signed out all the same.
- A sign-in refuses an unknown email and a wrong password alike (INVALID_CREDENTIALS; a dummy
  hash is checked so the time tells nothing either).
"""
from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from typing import Any

from accounts.checks import check_email, check_login_password, check_token
from accounts.errors import INVALID_CREDENTIALS, INVALID_REFRESH_TOKEN, AccountError, invalid
from accounts.limits import Limits
from accounts.passwords import Passwords
from accounts.users import user_by
from auth import Authenticator
from store import Store
from store import accounts as sql
from store.db import WriteTx, now_ms

log = logging.getLogger("parley.accounts")

ACCESS_TTL_S = 3600
REFRESH_TTL_MS = 30 * 24 * 3600 * 1000


def token_hash(token: str) -> str:
    """How a refresh token is stored: its sha256 (the token itself is never written)."""
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Sign-in, refresh-token families and sign-out."""

    def __init__(self, db: Store, auth: Authenticator, passwords: Passwords, limits: Limits) -> None:
        self.db = db
        self.auth = auth
        self.passwords = passwords
        self.limits = limits

    @staticmethod
    def new_refresh(tx: WriteTx, user_id: str, family_id: str | None = None, parent: str | None = None) -> str:
        """Store a refresh token of `family_id` (a new family without one) and give it back."""
        token = secrets.token_urlsafe(32)
        sql.insert_refresh(tx, token_hash(token), user_id, family_id or uuid.uuid4().hex, parent,
                           now_ms() + REFRESH_TTL_MS)
        return token

    def tokens(self, user: dict[str, Any], refresh_token: str) -> dict[str, Any]:
        """The answer of a sign-in: a new access token beside `refresh_token`."""
        return {
            "access_token": self.auth.issue_jwt(user["id"], ttl_s=ACCESS_TTL_S, email=user["email"]),
            "refresh_token": refresh_token,
            "expires_in": ACCESS_TTL_S,
            "token_type": "bearer",
            "user": {"id": user["id"], "email": user["email"]},
        }

    async def login(self, body: dict[str, Any]) -> dict[str, Any]:
        """Sign in with email and password (upgrading an old password hash on the way)."""
        errors: list[dict[str, str]] = []
        email = check_email(body.get("email"), errors)
        password = check_login_password(body.get("password"), errors)
        if errors:
            raise invalid(errors)
        await self.limits.check_failures(email)
        user = await user_by(self.db, "email", email)
        ok = await self.passwords.verify(user["password_hash"] if user else None, password)
        if not ok or user is None:
            await self.limits.count_failure(email)
            raise AccountError(INVALID_CREDENTIALS, "invalid email or password")
        if self.passwords.needs_rehash(user["password_hash"]):
            new_hash = await self.passwords.hash(password)
            await self.db.write(lambda tx: sql.update_user(tx, user["id"], {"password_hash": new_hash}))
            log.info("password hash of %s upgraded to the current argon2 parameters", user["id"])
        refresh = await self.db.write(lambda tx: self.new_refresh(tx, user["id"]))
        return self.tokens(user, refresh)

    async def refresh(self, body: dict[str, Any]) -> dict[str, Any]:
        """New tokens for a live refresh token, which is rotated; INVALID_REFRESH_TOKEN for any other."""
        errors: list[dict[str, str]] = []
        token = check_token(body.get("refresh_token"), errors)
        if errors:
            raise invalid(errors)
        hashed = token_hash(token)
        status, user, new = await self.db.write(lambda tx: self._rotate(tx, hashed))
        if status == "reused":
            log.warning("a rotated refresh token was reused: its family is revoked")
        if status != "ok" or user is None or new is None:
            raise AccountError(INVALID_REFRESH_TOKEN, "invalid refresh token")
        return self.tokens(user, new)

    def _rotate(self, tx: WriteTx, hashed: str) -> tuple[str, dict[str, Any] | None, str | None]:
        """("ok", user, new token), or ("invalid" | "reused", None, None): a reuse revokes the family, committed."""
        row = sql.refresh_row(tx, hashed)
        if row is None or row["revoked_at"] is not None:
            return "invalid", None, None
        if row["rotated_at"] is not None:
            sql.revoke_family(tx, row["family_id"])
            return "reused", None, None
        if row["expires_at"] <= now_ms():
            return "invalid", None, None
        user = sql.tx_user_by(tx, "id", row["user_id"])
        if user is None:
            return "invalid", None, None
        sql.mark_rotated(tx, hashed)
        return "ok", user, self.new_refresh(tx, user["id"], row["family_id"], hashed)

    async def logout(self, body: dict[str, Any]) -> None:
        """Revoke the family of a refresh token (nothing for an unknown one)."""
        errors: list[dict[str, str]] = []
        token = check_token(body.get("refresh_token"), errors)
        if errors:
            raise invalid(errors)
        hashed = token_hash(token)

        def revoke(tx: WriteTx) -> None:
            row = sql.refresh_row(tx, hashed)
            if row is not None:
                sql.revoke_family(tx, row["family_id"])

        await self.db.write(revoke)
