"""The refusals of the accounts service: a code that says what went wrong, never an HTTP status.

The accounts surface (handlers/accounts/problems.py) gives each code its status.
"""
from __future__ import annotations

from typing import Any

VALIDATION_ERROR = "VALIDATION_ERROR"  # details: errors=[{field, message}]
USERNAME_TAKEN = "USERNAME_TAKEN"  # details, when a field is to blame: errors=[{field, message}]
INVALID_CODE = "INVALID_CODE"
INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
INVALID_REFRESH_TOKEN = "INVALID_REFRESH_TOKEN"
RATE_LIMITED = "RATE_LIMITED"  # details: retry_after=<whole seconds>
FORBIDDEN = "FORBIDDEN"
USER_NOT_FOUND = "USER_NOT_FOUND"
MAIL_FAILED = "MAIL_FAILED"

CODES = (VALIDATION_ERROR, USERNAME_TAKEN, INVALID_CODE, INVALID_CREDENTIALS, INVALID_REFRESH_TOKEN, RATE_LIMITED,
         FORBIDDEN, USER_NOT_FOUND, MAIL_FAILED)


class AccountError(Exception):
    """A request the accounts service refuses: `code` (one of `CODES`) says why, `details` go into the answer."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def invalid(errors: list[dict[str, str]]) -> AccountError:
    """The refusal of a body whose fields fail their checks, naming each of them."""
    return AccountError(VALIDATION_ERROR, "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)
