"""The accounts service: sign-up by mailed code, sessions with rotating refresh tokens, profiles.

Decisions (SPEC section 9, seed 004):
- Passwords need 8 to 1024 characters (stricter than the seed's 6), hashed with Argon2id off the loop.
- No account enumeration: a sign-up for an email that has an account answers 202 like any other
  (the password is hashed anyway, for the timing) and mails a "you already have an account" notice.
  Login answers the same 401 for an unknown email and a wrong password (a dummy hash is checked).
- A sign-up for a username that an account already has → 409 USERNAME_TAKEN (usernames are public).
- Codes: 6 digits from `secrets`, stored as HMAC-SHA256(pepper, email:code), valid 10 minutes,
  dead after 5 wrong tries.  Mails to one email are sent at most once per 60 s: a resend (or a
  repeated sign-up) within that cooldown still answers 204/202 and sends nothing (no 429, so
  the answer tells nothing about the email).
- A code verifies exactly the request it was mailed for (SPEC 13): a sign-up for an email whose
  pending sign-up has not expired never changes its username, password or redirect; it acts as a
  resend of that request's code (even when wrong guesses killed the code: a stranger must not be
  able to kill a code and then put their own request in its place).  Once it has expired, a new
  sign-up replaces the pending one as a whole, with a new code (the old one stays dead).  The
  mail names the username, so the owner of the mailbox sees which sign-up a code confirms.
- Links in mail come from the configured public URL, never from the request; `redirect_to` must
  be on its origin or on `[accounts] redirect_origins` (default http://localhost:3000).
- When a mail cannot be sent (SMTP down, or it would send the SMTP password in clear) the route
  answers 502 and the email's cooldown is lifted, so the same request can be retried.
- Refresh tokens: 32 random bytes (url-safe base64), stored as sha256, 30 days, rotated on
  every use; reusing a rotated one revokes its whole family (the live token too).  Logout
  revokes the family; an unknown refresh token also answers 204.
- At most 10 failed logins or code checks a minute per email (then 429 + Retry-After); per IP
  60 sign-ups/resends and 120 logins/code checks a minute.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from argon2 import PasswordHasher

from accounts.mail import Mailer, MailRefused, OutboxMailer, make_mailer
from accounts.passwords import Passwords, make_hasher
from auth import Authenticator
from auth.keys import load_or_create_secret
from auth.ratelimit import SlidingWindow, retry_after
from handlers.errors import ApiError
from store import accounts as sql
from store.db import Database, WriteTx, now_ms
from store.errors import Conflict

log = logging.getLogger("parley.accounts")

ACCESS_TTL_S = 3600
REFRESH_TTL_MS = 30 * 24 * 3600 * 1000
CODE_TTL_MS = 10 * 60 * 1000
CODE_MAX_TRIES = 5
MAIL_COOLDOWN_MS = 60 * 1000
FAILURES_PER_EMAIL = 10
SIGNUPS_PER_IP = 60
LOGINS_PER_IP = 120
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_EMAIL = 254
MAX_BIO = 200
MAX_URL = 2048
DEFAULT_REDIRECT_ORIGINS = ("http://localhost:3000",)

USERNAME = re.compile(r"[A-Za-z0-9_]{3,30}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
CODE = re.compile(r"[0-9]{6}")


class AccountError(ApiError):
    """An answer of the accounts surface (rendered as RFC 7807 by the handlers)."""


def invalid(errors: list[dict[str, str]]) -> AccountError:
    return AccountError(422, "; ".join(f"{e['field']}: {e['message']}" for e in errors), "VALIDATION_ERROR",
                        errors=errors)


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FailureWindow:
    """Failures per key in a sliding window; `blocked` tells how long to wait once `limit` is reached."""

    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._fails: dict[str, deque[float]] = {}

    def _live(self, key: str, now: float) -> deque[float]:
        fails = self._fails.setdefault(key, deque())
        while fails and fails[0] <= now - self.window_s:
            fails.popleft()
        return fails

    def blocked(self, key: str) -> float:
        now = time.monotonic()
        fails = self._live(key, now)
        if not fails:
            self._fails.pop(key, None)
            return 0.0
        if len(fails) >= self.limit:
            return max(0.001, fails[0] + self.window_s - now)
        return 0.0

    def fail(self, key: str) -> None:
        now = time.monotonic()
        self._live(key, now).append(now)
        if len(self._fails) > 10_000:  # sweep stale keys now and then
            for k in [k for k, v in self._fails.items() if not v or v[-1] <= now - self.window_s]:
                del self._fails[k]


# -- validation -----------------------------------------------------------------

def check_email(value: Any, errors: list[dict[str, str]], field: str = "email") -> str:
    if not isinstance(value, str) or not value.strip():
        errors.append({"field": field, "message": "an email address is required"})
        return ""
    email = value.strip().lower()
    if len(email) > MAX_EMAIL or not EMAIL.fullmatch(email):
        errors.append({"field": field, "message": "not a valid email address"})
    return email


def check_username(value: Any, errors: list[dict[str, str]], field: str = "username") -> str:
    if not isinstance(value, str) or not USERNAME.fullmatch(value):
        errors.append({"field": field, "message": "3 to 30 characters: letters, digits and _"})
        return ""
    return value


def check_password(value: Any, errors: list[dict[str, str]], field: str = "password") -> str:
    if not isinstance(value, str) or not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        errors.append({"field": field, "message": f"{MIN_PASSWORD} to {MAX_PASSWORD} characters"})
        return ""
    return value


def check_token(value: Any, errors: list[dict[str, str]], field: str = "refresh_token") -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 512:
        errors.append({"field": field, "message": "a refresh token is required"})
        return ""
    return value


def profile(user: dict[str, Any]) -> dict[str, Any]:
    return {"id": user["id"], "username": user["username"], "avatar_url": user["avatar_url"], "bio": user["bio"]}


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    """Everything behind the accounts routes; the handlers only parse and render."""

    def __init__(self, db: Database, auth: Authenticator, data_dir: Path, smtp: dict[str, Any] | None = None,
                 admins: list[str] | None = None, *, hasher: PasswordHasher | None = None,
                 argon2: dict[str, Any] | None = None, mailer: Mailer | None = None,
                 public_url: str | None = None, redirect_origins: list[str] | None = None) -> None:
        self.db = db
        self.auth = auth
        self.data_dir = data_dir
        self.mailer = mailer or make_mailer(smtp, data_dir)
        self.passwords = Passwords(hasher or make_hasher(argon2))
        self.admins = {a.strip().lower() if "@" in a else a.strip() for a in admins or []}
        self.public_url = public_url.rstrip("/") if public_url else None
        allowed = [*(redirect_origins or DEFAULT_REDIRECT_ORIGINS), *([self.public_url] if self.public_url else [])]
        self.redirect_origins = {o for o in map(_origin, allowed) if o is not None}
        self._pepper = load_or_create_secret(data_dir / "keys" / "accounts-pepper.secret")
        self.failures = FailureWindow(FAILURES_PER_EMAIL)
        self.signups_per_ip = SlidingWindow(SIGNUPS_PER_IP)
        self.logins_per_ip = SlidingWindow(LOGINS_PER_IP)
        self._notices: dict[str, int] = {}

    @property
    def mail_delivery(self) -> str:
        """`outbox` when codes are written to data_dir/outbox (dev mode), else `smtp`."""
        return "outbox" if isinstance(self.mailer, OutboxMailer) else "smtp"

    def dev_code(self, email: str) -> str | None:
        """Dev mode only: the newest code written to the outbox for `email` (None without one)."""
        return self.mailer.latest_code(email) if isinstance(self.mailer, OutboxMailer) else None

    def close(self) -> None:
        self.passwords.close()

    # -- helpers --------------------------------------------------------------

    def code_hash(self, email: str, code: str) -> str:
        return hmac.new(self._pepper, f"{email}:{code}".encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def new_code() -> str:
        return f"{secrets.randbelow(1_000_000):06d}"

    def limit_ip(self, kind: str, ip: str) -> None:
        window = self.signups_per_ip if kind == "signup" else self.logins_per_ip
        wait = window.hit(ip or "?")
        if wait:
            raise AccountError(429, f"too many requests: at most {window.limit} a minute", "RATE_LIMITED",
                               retry_after=retry_after(wait))

    def _check_failures(self, email: str) -> None:
        wait = self.failures.blocked(email)
        if wait:
            raise AccountError(429, "too many failed attempts for this email; try again later", "RATE_LIMITED",
                               retry_after=retry_after(wait))

    def is_admin(self, user_id: str, email: str | None = None) -> bool:
        return user_id in self.admins or (email is not None and email.lower() in self.admins)

    def redirect_allowed(self, url: str) -> bool:
        """Whether `url` is on the public URL's origin or an allowed one (never judged by the request's Host)."""
        if any(c.isspace() or ord(c) < 0x20 for c in url):
            return False
        origin = _origin(url)
        return origin is not None and origin in self.redirect_origins

    @staticmethod
    def _new_refresh(tx: WriteTx, user_id: str, family_id: str | None = None, parent: str | None = None) -> str:
        token = secrets.token_urlsafe(32)
        sql.insert_refresh(tx, _sha256(token), user_id, family_id or uuid.uuid4().hex, parent,
                           now_ms() + REFRESH_TTL_MS)
        return token

    def _token_body(self, user: dict[str, Any], refresh_token: str) -> dict[str, Any]:
        return {
            "access_token": self.auth.issue_jwt(user["id"], ttl_s=ACCESS_TTL_S, email=user["email"]),
            "refresh_token": refresh_token,
            "expires_in": ACCESS_TTL_S,
            "token_type": "bearer",
            "user": {"id": user["id"], "email": user["email"]},
        }

    async def _send(self, to: str, subject: str, body: str, code: str | None = None) -> None:
        """Send, or raise 502: a sign-up whose code never left must say so (the same for every email)."""
        try:
            await self.mailer.send(to, subject, body, code)
        except Exception as exc:
            if isinstance(exc, MailRefused):
                log.error("mail to %s not sent: %s", to, exc)
            else:
                log.exception("sending mail to %s failed", to)
            raise AccountError(502, "the mail could not be sent; try again later", "MAIL_FAILED",
                               title="Bad Gateway") from None

    async def user(self, column: str, value: str) -> dict[str, Any] | None:
        return await self.db.read(lambda conn: sql.user_by(conn, column, value))

    # -- sign-up --------------------------------------------------------------

    async def start_signup(self, body: dict[str, Any]) -> str:
        errors: list[dict[str, str]] = []
        username = check_username(body.get("username"), errors)
        email = check_email(body.get("email"), errors)
        password = check_password(body.get("password"), errors)
        redirect_to = body.get("redirect_to")
        if redirect_to is not None and (not isinstance(redirect_to, str) or len(redirect_to) > MAX_URL
                                        or not self.redirect_allowed(redirect_to)):
            errors.append({"field": "redirect_to", "message": "must be a URL on an allowed origin"})
        if errors:
            raise invalid(errors)
        password_hash = await self.passwords.hash(password)  # always: same timing for existing emails
        if await self.user("email", email) is not None:
            await self._notice(email)
            return email
        taken = await self.user("username", username)
        if taken is not None:
            raise AccountError(409, "this username is taken", "USERNAME_TAKEN",
                               errors=[{"field": "username", "message": "taken"}])
        code = self.new_code()
        code_hash = self.code_hash(email, code)

        def store(tx: WriteTx) -> dict[str, Any] | None:
            now = now_ms()
            p = sql.tx_pending(tx, email)
            if p is not None and p["expires_at"] > now:
                return self._renew(tx, p, code_hash, now)  # a live request is never changed, only resent
            new = {"email": email, "username": username, "password_hash": password_hash, "code_hash": code_hash,
                   "expires_at": now + CODE_TTL_MS, "attempts": 0, "last_sent_at": now, "redirect_to": redirect_to,
                   "created_at": now}
            sql.upsert_pending(tx, new)
            return new

        pending = await self.db.write(store)
        if pending is not None:
            await self._send_code(pending, code)
        return email

    @staticmethod
    def _renew(tx: WriteTx, pending: dict[str, Any], code_hash: str, now: int) -> dict[str, Any] | None:
        """A new code for the same pending request (the old one dies), unless a mail went out within the cooldown."""
        if now - pending["last_sent_at"] < MAIL_COOLDOWN_MS:
            return None
        renewed = {**pending, "code_hash": code_hash, "expires_at": now + CODE_TTL_MS, "attempts": 0,
                   "last_sent_at": now}
        sql.upsert_pending(tx, renewed)
        return renewed

    async def _send_code(self, pending: dict[str, Any], code: str) -> None:
        """Mail `code` for the pending request; when that fails, lift the cooldown so that a retry can mail one."""
        email, redirect_to = pending["email"], pending["redirect_to"] or self._page_url()
        text = (f"Hello,\n\nyour Parley verification code for {email} is:\n\n    {code}\n\n"
                f"It confirms the sign-up of the username {pending['username']} and is valid for "
                f"{CODE_TTL_MS // 60000} minutes.")
        if redirect_to:
            text += f"\nEnter it at {redirect_to}"
        text += "\n\nIf you did not ask for it, ignore this message."
        try:
            await self._send(email, f"Your Parley code: {code}", text, code)
        except AccountError:
            await self.db.write(lambda tx: tx.execute(
                "UPDATE pending_signups SET last_sent_at = 0 WHERE email = ? AND code_hash = ?",
                (email, pending["code_hash"])))
            raise

    def _page_url(self) -> str | None:
        return f"{self.public_url}/ui/" if self.public_url else None

    async def _notice(self, email: str) -> None:
        now = now_ms()
        if now - self._notices.get(email, 0) < MAIL_COOLDOWN_MS:
            return
        self._notices[email] = now
        if len(self._notices) > 10_000:
            self._notices = {k: v for k, v in self._notices.items() if now - v < MAIL_COOLDOWN_MS}
        text = (f"Hello,\n\nsomeone (maybe you) tried to sign up to Parley with {email}, which already has "
                "an account.\nSign in with your password instead; if it was not you, ignore this message.")
        if self.public_url:
            text += f"\n\n{self._page_url()}"
        try:
            await self._send(email, "You already have a Parley account", text)
        except AccountError:
            self._notices.pop(email, None)
            raise

    async def resend(self, body: dict[str, Any]) -> None:
        errors: list[dict[str, str]] = []
        email = check_email(body.get("email"), errors)
        if errors:
            raise invalid(errors)
        code = self.new_code()
        code_hash = self.code_hash(email, code)

        def renew(tx: WriteTx) -> dict[str, Any] | None:
            p = sql.tx_pending(tx, email)
            return None if p is None else self._renew(tx, p, code_hash, now_ms())

        pending = await self.db.write(renew)
        if pending is not None:
            await self._send_code(pending, code)

    async def verify(self, body: dict[str, Any]) -> dict[str, Any]:
        errors: list[dict[str, str]] = []
        email = check_email(body.get("email"), errors)
        code = body.get("token")
        if not isinstance(code, str) or not CODE.fullmatch(code):
            errors.append({"field": "token", "message": "a 6-digit code"})
        if errors:
            raise invalid(errors)
        assert isinstance(code, str)
        self._check_failures(email)
        given = self.code_hash(email, code)

        def check(tx: WriteTx) -> tuple[str, dict[str, Any] | None, str | None]:
            now = now_ms()
            p = sql.tx_pending(tx, email)
            if p is None or p["attempts"] >= CODE_MAX_TRIES or p["expires_at"] <= now:
                return "invalid", None, None
            if not hmac.compare_digest(p["code_hash"], given):
                tx.execute("UPDATE pending_signups SET attempts = attempts + 1 WHERE email = ?", (email,))
                return "invalid", None, None
            sql.delete_pending(tx, email)
            if sql.tx_user_by(tx, "email", email) is not None:
                return "invalid", None, None
            if sql.tx_user_by(tx, "username", p["username"]) is not None:
                return "username_taken", None, None
            user = {"id": str(uuid.uuid4()), "email": email, "username": p["username"],
                    "password_hash": p["password_hash"], "created_at": now, "email_confirmed_at": now}
            sql.insert_user(tx, user)
            return "ok", user, self._new_refresh(tx, user["id"])

        status, user, refresh = await self.db.write(check)
        if status == "username_taken":
            raise AccountError(409, "the username was taken meanwhile; sign up again with another one",
                               "USERNAME_TAKEN")
        if status != "ok" or user is None or refresh is None:
            self.failures.fail(email)
            raise AccountError(401, "the code is invalid or has expired", "INVALID_CODE")
        log.info("account %s created for %s", user["id"], email)
        return self._token_body(user, refresh)

    # -- sessions -------------------------------------------------------------

    async def login(self, body: dict[str, Any]) -> dict[str, Any]:
        errors: list[dict[str, str]] = []
        email = check_email(body.get("email"), errors)
        password = body.get("password")
        if not isinstance(password, str) or not 1 <= len(password) <= MAX_PASSWORD:
            errors.append({"field": "password", "message": "a password is required"})
        if errors:
            raise invalid(errors)
        assert isinstance(password, str)
        self._check_failures(email)
        user = await self.user("email", email)
        ok = await self.passwords.verify(user["password_hash"] if user else None, password)
        if not ok or user is None:
            self.failures.fail(email)
            raise AccountError(401, "invalid email or password", "INVALID_CREDENTIALS")
        if self.passwords.needs_rehash(user["password_hash"]):
            new_hash = await self.passwords.hash(password)
            await self.db.write(lambda tx: sql.update_user(tx, user["id"], {"password_hash": new_hash}))
            log.info("password hash of %s upgraded to the current argon2 parameters", user["id"])
        refresh = await self.db.write(lambda tx: self._new_refresh(tx, user["id"]))
        return self._token_body(user, refresh)

    async def refresh(self, body: dict[str, Any]) -> dict[str, Any]:
        errors: list[dict[str, str]] = []
        token = check_token(body.get("refresh_token"), errors)
        if errors:
            raise invalid(errors)
        token_hash = _sha256(token)

        def rotate(tx: WriteTx) -> tuple[str, dict[str, Any] | None, str | None]:
            row = sql.refresh_row(tx, token_hash)
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
            sql.mark_rotated(tx, token_hash)
            return "ok", user, self._new_refresh(tx, user["id"], row["family_id"], token_hash)

        status, user, new = await self.db.write(rotate)
        if status == "reused":
            log.warning("a rotated refresh token was reused: its family is revoked")
        if status != "ok" or user is None or new is None:
            raise AccountError(401, "invalid refresh token", "INVALID_REFRESH_TOKEN")
        return self._token_body(user, new)

    async def logout(self, body: dict[str, Any]) -> None:
        errors: list[dict[str, str]] = []
        token = check_token(body.get("refresh_token"), errors)
        if errors:
            raise invalid(errors)
        token_hash = _sha256(token)

        def revoke(tx: WriteTx) -> None:
            row = sql.refresh_row(tx, token_hash)
            if row is not None:
                sql.revoke_family(tx, row["family_id"])

        await self.db.write(revoke)

    # -- users ----------------------------------------------------------------

    async def lookup(self, caller_id: str, email_param: str | None) -> dict[str, Any]:
        errors: list[dict[str, str]] = []
        email = check_email(email_param, errors)
        if errors:
            raise invalid(errors)
        caller = await self.user("id", caller_id)
        admin = self.is_admin(caller_id, caller["email"] if caller else None)
        if not admin and (caller is None or caller["email"] != email):
            raise AccountError(403, "you may look up only your own account", "FORBIDDEN")
        target = caller if caller is not None and caller["email"] == email else await self.user("email", email)
        if target is None:
            raise AccountError(404, "no such user", "USER_NOT_FOUND")
        return {"id": target["id"], "email": target["email"], "created_at": iso(target["created_at"]),
                "email_confirmed_at": iso(target["email_confirmed_at"])}

    async def me(self, user_id: str) -> dict[str, Any]:
        user = await self.user("id", user_id)
        if user is None:
            raise AccountError(404, "no local account for this identity", "USER_NOT_FOUND")
        return profile(user)

    async def update_me(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        errors: list[dict[str, str]] = []
        changes: dict[str, Any] = {}
        known = {"username", "avatar_url", "bio"}
        for field in sorted(set(body) - known):
            errors.append({"field": field, "message": "unknown field"})
        if "username" in body:
            changes["username"] = check_username(body["username"], errors)
        if "avatar_url" in body:
            url = body["avatar_url"]
            if url is None or url == "":
                changes["avatar_url"] = None
            elif not isinstance(url, str) or len(url) > MAX_URL or not _http_url(url):
                errors.append({"field": "avatar_url", "message": "an http(s) URL"})
            else:
                changes["avatar_url"] = url
        if "bio" in body:
            bio = body["bio"]
            if bio is None:
                changes["bio"] = None
            elif not isinstance(bio, str) or len(bio) > MAX_BIO:
                errors.append({"field": "bio", "message": f"at most {MAX_BIO} characters"})
            else:
                changes["bio"] = bio
        if errors:
            raise invalid(errors)
        try:
            user = await self.db.write(lambda tx: sql.update_user(tx, user_id, changes))
        except Conflict:
            raise AccountError(409, "this username is taken", "USERNAME_TAKEN",
                               errors=[{"field": "username", "message": "taken"}]) from None
        if user is None:
            raise AccountError(404, "no local account for this identity", "USER_NOT_FOUND")
        return profile(user)

    async def by_username(self, username: str) -> dict[str, Any]:
        errors: list[dict[str, str]] = []
        check_username(username, errors)
        if errors:
            raise invalid(errors)
        user = await self.user("username", username)
        if user is None:
            raise AccountError(404, "no such user", "USER_NOT_FOUND")
        return profile(user)


def _origin(url: str) -> str | None:
    """`scheme://host[:port]` of an http(s) URL, lower case (None for anything else)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.username is not None:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = 80 if parts.scheme.lower() == "http" else 443
    return f"{parts.scheme.lower()}://{host.lower()}" + (f":{port}" if port not in (None, default) else "")


def _http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not any(c.isspace() for c in url)
