"""The accounts service (SPEC section 9, seed 004): the one object behind the accounts routes.

`Accounts` puts together the parts, each in its own module:
- signup.py: sign-up by mailed code (start, resend, verify);
- sessions.py: sign-in, rotating refresh-token families, sign-out;
- users.py: the lookup by email and the profiles;
- limits.py: the rate limits per client address and the failures per email;
- checks.py and errors.py: what a request may hold, and the refusals (`AccountError`, a code and
  details, which the accounts handlers turn into statuses).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from accounts.checks import origin
from accounts.limits import Limits
from accounts.mail import Mailer, OutboxMailer, make_mailer
from accounts.passwords import Passwords, make_hasher
from accounts.sessions import Sessions
from accounts.signup import Signups
from accounts.users import Users, user_by
from auth import Authenticator
from auth.keys import ACCOUNTS_PEPPER, load_or_create_secret
from auth.ratelimit import IN_MEMORY, Windows
from store import Store

DEFAULT_REDIRECT_ORIGINS = ("http://localhost:3000",)


class Accounts:
    """Everything behind the accounts routes; the handlers only parse and render."""

    def __init__(self, db: Store, auth: Authenticator, data_dir: Path, smtp: dict[str, Any] | None = None,
                 admins: list[str] | None = None, *, hasher: PasswordHasher | None = None,
                 argon2: dict[str, Any] | None = None, mailer: Mailer | None = None,
                 public_url: str | None = None, redirect_origins: list[str] | None = None,
                 pepper: bytes | None = None, windows: Windows = IN_MEMORY) -> None:
        """`pepper` keys the sign-up codes' hashes (default: data_dir/keys/accounts-pepper.secret);
        `windows` keeps the rate limits (default: in memory)."""
        self.db = db
        self.auth = auth
        self.data_dir = data_dir
        self.mailer = mailer or make_mailer(smtp, data_dir)
        self.passwords = Passwords(hasher or make_hasher(argon2))
        self.limits = Limits(windows)
        self.users = Users(db, {a.strip().lower() if "@" in a else a.strip() for a in admins or []})
        self.sessions = Sessions(db, auth, self.passwords, self.limits)
        public_url = public_url.rstrip("/") if public_url else None
        allowed = [*(redirect_origins or DEFAULT_REDIRECT_ORIGINS), *([public_url] if public_url else [])]
        self.signups = Signups(db, self.passwords, self.mailer, self.sessions, self.limits,
                               pepper=pepper or load_or_create_secret(data_dir / "keys" / ACCOUNTS_PEPPER),
                               public_url=public_url,
                               redirect_origins={o for o in map(origin, allowed) if o is not None})

    @property
    def admins(self) -> set[str]:
        """The user ids and emails that may look up any account."""
        return self.users.admins

    @admins.setter
    def admins(self, admins: set[str]) -> None:
        self.users.admins = admins

    @property
    def mail_delivery(self) -> str:
        """`outbox` when codes are written to data_dir/outbox (dev mode), else `smtp`."""
        return "outbox" if isinstance(self.mailer, OutboxMailer) else "smtp"

    def dev_code(self, email: str) -> str | None:
        """Dev mode only: the newest code written to the outbox for `email` (None without one)."""
        return self.mailer.latest_code(email) if isinstance(self.mailer, OutboxMailer) else None

    def close(self) -> None:
        self.passwords.close()

    async def limit_ip(self, kind: str, ip: str) -> None:
        """Count a request of `kind` ("signup" or "login") from `ip`; RATE_LIMITED past the limit."""
        await self.limits.count_request(kind, ip)

    def is_admin(self, user_id: str, email: str | None = None) -> bool:
        return self.users.is_admin(user_id, email)

    def redirect_allowed(self, url: str) -> bool:
        """Whether `url` is on the public URL's origin or an allowed one (never judged by the request's Host)."""
        return self.signups.redirect_allowed(url)

    async def user(self, column: str, value: str) -> dict[str, Any] | None:
        """The account whose `column` (id, email or username) is `value`, or None."""
        return await user_by(self.db, column, value)

    # -- sign-up ----------------------------------------------------------------

    async def start_signup(self, body: dict[str, Any]) -> str:
        return await self.signups.start(body)

    async def resend(self, body: dict[str, Any]) -> None:
        await self.signups.resend(body)

    async def verify(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.signups.verify(body)

    # -- sessions ---------------------------------------------------------------

    async def login(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.sessions.login(body)

    async def refresh(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.sessions.refresh(body)

    async def logout(self, body: dict[str, Any]) -> None:
        await self.sessions.logout(body)

    # -- users ------------------------------------------------------------------

    async def lookup(self, caller_id: str, email_param: str | None) -> dict[str, Any]:
        return await self.users.lookup(caller_id, email_param)

    async def me(self, user_id: str) -> dict[str, Any]:
        return await self.users.me(user_id)

    async def update_me(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.users.update_me(user_id, body)

    async def by_username(self, username: str) -> dict[str, Any]:
        return await self.users.by_username(username)
