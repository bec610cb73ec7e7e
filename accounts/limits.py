"""The rate limits of the accounts routes (SPEC section 9).

Per client address, at most 60 sign-ups and resends and 120 logins and code checks a minute;
per email, at most 10 failed logins or code checks a minute.  A refusal carries
`retry_after`, the whole seconds until the next attempt may pass.  The windows are counted
where `windows` keeps them: in memory, or in the store that instances share.
"""
from __future__ import annotations

from accounts.errors import RATE_LIMITED, AccountError
from auth.ratelimit import IN_MEMORY, Windows, retry_after

FAILURES_PER_EMAIL = 10
SIGNUPS_PER_IP = 60
LOGINS_PER_IP = 120
NOTICE_EVERY_S = 60.0  # at most one "you already have an account" mail an email per this many seconds


class Limits:
    """The accounts routes' windows: one per kind of route and client address, one of failures per email."""

    def __init__(self, windows: Windows = IN_MEMORY) -> None:
        self.failures = windows.window("accounts.failures", FAILURES_PER_EMAIL)
        self.signups_per_ip = windows.window("accounts.signups", SIGNUPS_PER_IP)
        self.logins_per_ip = windows.window("accounts.logins", LOGINS_PER_IP)
        self.notices = windows.window("accounts.notices", 1, NOTICE_EVERY_S)

    async def count_request(self, kind: str, ip: str) -> None:
        """Count a request of `kind` ("signup", else a login or code check) from `ip`; RATE_LIMITED past the limit."""
        window = self.signups_per_ip if kind == "signup" else self.logins_per_ip
        wait = await window.hit(ip or "?")
        if wait:
            raise AccountError(RATE_LIMITED, f"too many requests: at most {window.limit} a minute",
                               retry_after=retry_after(wait))

    async def check_failures(self, email: str) -> None:
        """RATE_LIMITED while `email` has had too many failed attempts in the window."""
        wait = await self.failures.blocked_for(email)
        if wait:
            raise AccountError(RATE_LIMITED, "too many failed attempts for this email; try again later",
                               retry_after=retry_after(wait))

    async def count_failure(self, email: str) -> None:
        """A wrong password or code for `email`."""
        await self.failures.record(email)

    async def notice_due(self, email: str) -> bool:
        """Whether `email` may get an "already has an account" notice now (one a cooldown, counted
        where the windows are: so also once over every instance that shares the store)."""
        return not await self.notices.hit(email)
