"""Local accounts (SPEC section 9, seed 004): sign-up by mailed code, sessions, profiles."""
from __future__ import annotations

from accounts.service import AccountError, Accounts

__all__ = ["AccountError", "Accounts"]
