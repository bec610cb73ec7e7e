"""Local accounts (SPEC section 9, seed 004): sign-up by mailed code, sessions, profiles."""
from __future__ import annotations

from accounts.errors import AccountError
from accounts.service import Accounts

__all__ = ["AccountError", "Accounts"]
