"""The accounts surface's answer to each refusal of the accounts service: its status, in one table.

The body is the surface's RFC 7807 problem (`handlers.errors.error_body`): the refusal's code,
message and details (`errors`, `retry_after`, which also sets Retry-After).
"""
from __future__ import annotations

import logging

from accounts import errors
from accounts.errors import AccountError
from handlers.errors import ApiError

log = logging.getLogger("parley.accounts")

STATUS: dict[str, int] = {
    errors.VALIDATION_ERROR: 422,
    errors.USERNAME_TAKEN: 409,
    errors.INVALID_CODE: 401,
    errors.INVALID_CREDENTIALS: 401,
    errors.INVALID_REFRESH_TOKEN: 401,
    errors.RATE_LIMITED: 429,
    errors.FORBIDDEN: 403,
    errors.USER_NOT_FOUND: 404,
    errors.MAIL_FAILED: 502,
}
# the titles of statuses that `error_body` does not name
TITLE: dict[str, str] = {errors.MAIL_FAILED: "Bad Gateway"}


def problem(exc: AccountError) -> ApiError:
    """The error answering `exc` on the accounts surface."""
    status = STATUS.get(exc.code)
    if status is None:
        log.error("no status for the accounts refusal %s: %s", exc.code, exc.message)
        return ApiError(500, "internal server error")
    title = TITLE.get(exc.code)
    return ApiError(status, exc.message, exc.code, **({"title": title} if title else {}), **exc.details)
