"""Sign-up by mailed code (SPEC section 9, seed 004): start, resend, verify.

- Passwords are hashed with Argon2id off the loop; a new one needs 8 to 1024 characters.
- No account enumeration: a sign-up for an email that has an account is accepted like any other
  (the password is hashed anyway, for the timing) and mails a "you already have an account" notice.
- A sign-up for a username that an account already has is refused (USERNAME_TAKEN: usernames are public).
- Codes: 6 digits from `secrets`, stored as HMAC-SHA256(pepper, email:code), valid 10 minutes,
  dead after 5 wrong tries.  Mails to one email are sent at most once per 60 s: a resend (or a
  repeated sign-up) within that cooldown is still accepted and sends nothing (it is not refused
  RATE_LIMITED, so the answer tells nothing about the email).
- A code verifies exactly the request it was mailed for (SPEC 13): a sign-up for an email whose
  pending sign-up has not expired never changes its username, password or redirect; it acts as a
  resend of that request's code (even when wrong guesses killed the code: a stranger must not be
  able to kill a code and then put their own request in its place).  Once it has expired, a new
  sign-up replaces the pending one as a whole, with a new code (the old one stays dead).  The
  mail names the username, so the owner of the mailbox sees which sign-up a code confirms.
- Links in mail come from the configured public URL, never from the request; `redirect_to` must
  be on its origin or on `[accounts] redirect_origins` (default http://localhost:3000).
- When a mail cannot be sent (SMTP down, or it would send the SMTP password in clear) the request
  is refused (MAIL_FAILED) and the email's cooldown is lifted, so the same request can be retried.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from typing import Any

from accounts.checks import MAX_URL, check_code, check_email, check_password, check_username, origin
from accounts.errors import INVALID_CODE, MAIL_FAILED, USERNAME_TAKEN, AccountError, invalid
from accounts.limits import Limits
from accounts.mail import Mailer, MailRefused
from accounts.passwords import Passwords
from accounts.sessions import Sessions
from accounts.users import user_by
from store import Store
from store import accounts as sql
from store.db import WriteTx, now_ms

log = logging.getLogger("parley.accounts")

CODE_TTL_MS = 10 * 60 * 1000
CODE_MAX_TRIES = 5
MAIL_COOLDOWN_MS = 60 * 1000


class Signups:
    """Pending sign-ups and their codes, until a right code creates the account and signs it in."""

    def __init__(self, db: Store, passwords: Passwords, mailer: Mailer, sessions: Sessions, limits: Limits,
                 pepper: bytes, public_url: str | None, redirect_origins: set[str]) -> None:
        self.db = db
        self.passwords = passwords
        self.mailer = mailer
        self.sessions = sessions
        self.limits = limits
        self.public_url = public_url
        self.redirect_origins = redirect_origins
        self._pepper = pepper

    def redirect_allowed(self, url: str) -> bool:
        """Whether `url` is on the public URL's origin or an allowed one (never judged by the request's Host)."""
        if any(c.isspace() or ord(c) < 0x20 for c in url):
            return False
        url_origin = origin(url)
        return url_origin is not None and url_origin in self.redirect_origins

    def code_hash(self, email: str, code: str) -> str:
        return hmac.new(self._pepper, f"{email}:{code}".encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def new_code() -> str:
        return f"{secrets.randbelow(1_000_000):06d}"

    # -- start and resend -------------------------------------------------------

    async def start(self, body: dict[str, Any]) -> str:
        """Start a sign-up (or resend the code of the live one for this email); the email, lower-cased."""
        email, username, password, redirect_to = self._check_start(body)
        password_hash = await self.passwords.hash(password)  # always: same timing for existing emails
        if await user_by(self.db, "email", email) is not None:
            await self._notice(email)
            return email
        if await user_by(self.db, "username", username) is not None:
            raise AccountError(USERNAME_TAKEN, "this username is taken", errors=[{"field": "username", "message": "taken"}])
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

    def _check_start(self, body: dict[str, Any]) -> tuple[str, str, str, str | None]:
        """Username, email, password and redirect of a sign-up, checked."""
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
        return email, username, password, redirect_to

    async def resend(self, body: dict[str, Any]) -> None:
        """Mail a new code for the email's pending sign-up, unless one went out within the cooldown."""
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

    @staticmethod
    def _renew(tx: WriteTx, pending: dict[str, Any], code_hash: str, now: int) -> dict[str, Any] | None:
        """A new code for the same pending request (the old one dies), unless a mail went out within the cooldown."""
        if now - pending["last_sent_at"] < MAIL_COOLDOWN_MS:
            return None
        renewed = {**pending, "code_hash": code_hash, "expires_at": now + CODE_TTL_MS, "attempts": 0,
                   "last_sent_at": now}
        sql.upsert_pending(tx, renewed)
        return renewed

    # -- verify -----------------------------------------------------------------

    async def verify(self, body: dict[str, Any]) -> dict[str, Any]:
        """Check the code, create the account and sign it in (the tokens of `Sessions.tokens`)."""
        errors: list[dict[str, str]] = []
        email = check_email(body.get("email"), errors)
        code = check_code(body.get("token"), errors)
        if errors:
            raise invalid(errors)
        await self.limits.check_failures(email)
        given = self.code_hash(email, code)
        status, user, refresh = await self.db.write(lambda tx: self._confirm(tx, email, given))
        if status == "username_taken":
            raise AccountError(USERNAME_TAKEN, "the username was taken meanwhile; sign up again with another one")
        if status != "ok" or user is None or refresh is None:
            await self.limits.count_failure(email)
            raise AccountError(INVALID_CODE, "the code is invalid or has expired")
        log.info("account %s created for %s", user["id"], email)
        return self.sessions.tokens(user, refresh)

    def _confirm(self, tx: WriteTx, email: str, given: str) -> tuple[str, dict[str, Any] | None, str | None]:
        """("ok", user, refresh token) when `given` is the live code, else ("invalid" | "username_taken", None, None).

        A wrong code is counted in the same transaction, committed although the request is refused."""
        now = now_ms()
        p = sql.tx_pending(tx, email)
        if p is None or p["attempts"] >= CODE_MAX_TRIES or p["expires_at"] <= now:
            return "invalid", None, None
        if not hmac.compare_digest(p["code_hash"], given):
            sql.count_wrong_code(tx, email)
            return "invalid", None, None
        sql.delete_pending(tx, email)
        if sql.tx_user_by(tx, "email", email) is not None:
            return "invalid", None, None
        if sql.tx_user_by(tx, "username", p["username"]) is not None:
            return "username_taken", None, None
        user = {"id": str(uuid.uuid4()), "email": email, "username": p["username"],
                "password_hash": p["password_hash"], "created_at": now, "email_confirmed_at": now}
        sql.insert_user(tx, user)
        return "ok", user, self.sessions.new_refresh(tx, user["id"])

    # -- mail -------------------------------------------------------------------

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
            await self.db.write(lambda tx: sql.lift_mail_cooldown(tx, email, pending["code_hash"]))
            raise

    async def _notice(self, email: str) -> None:
        """Tell the owner of `email` that it already has an account (at most once per cooldown)."""
        if not await self.limits.notice_due(email):
            return
        text = (f"Hello,\n\nsomeone (maybe you) tried to sign up to Parley with {email}, which already has "
                "an account.\nSign in with your password instead; if it was not you, ignore this message.")
        if self.public_url:
            text += f"\n\n{self._page_url()}"
        await self._send(email, "You already have a Parley account", text)

    async def _send(self, to: str, subject: str, body: str, code: str | None = None) -> None:
        """Send, or refuse MAIL_FAILED: a sign-up whose code never left must say so (the same for every email)."""
        try:
            await self.mailer.send(to, subject, body, code)
        except Exception as exc:
            if isinstance(exc, MailRefused):
                log.error("mail to %s not sent: %s", to, exc)
            else:
                log.exception("sending mail to %s failed", to)
            raise AccountError(MAIL_FAILED, "the mail could not be sent; try again later") from None

    def _page_url(self) -> str | None:
        return f"{self.public_url}/ui/" if self.public_url else None
