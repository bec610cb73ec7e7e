"""The checks of what a client sends to the accounts routes: each appends its complaint to `errors`.

A check returns the normalised value (an email lower-cased), or an empty one when it failed, so that
a route can check every field and answer all the complaints at once (`errors.invalid`).
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

MIN_PASSWORD = 8  # stricter than seed 004's 6
MAX_PASSWORD = 1024
MAX_EMAIL = 254
MAX_BIO = 200
MAX_URL = 2048

USERNAME = re.compile(r"[A-Za-z0-9_]{3,30}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
CODE = re.compile(r"[0-9]{6}")


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
    """A new password: `MIN_PASSWORD` to `MAX_PASSWORD` characters."""
    if not isinstance(value, str) or not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        errors.append({"field": field, "message": f"{MIN_PASSWORD} to {MAX_PASSWORD} characters"})
        return ""
    return value


def check_login_password(value: Any, errors: list[dict[str, str]], field: str = "password") -> str:
    """A password to sign in with: any non-empty one up to `MAX_PASSWORD` (older rules may have allowed it)."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_PASSWORD:
        errors.append({"field": field, "message": "a password is required"})
        return ""
    return value


def check_code(value: Any, errors: list[dict[str, str]], field: str = "token") -> str:
    """A mailed verification code: 6 digits."""
    if not isinstance(value, str) or not CODE.fullmatch(value):
        errors.append({"field": field, "message": "a 6-digit code"})
        return ""
    return value


def check_token(value: Any, errors: list[dict[str, str]], field: str = "refresh_token") -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 512:
        errors.append({"field": field, "message": "a refresh token is required"})
        return ""
    return value


def check_avatar_url(value: Any, errors: list[dict[str, str]]) -> str | None:
    """An http(s) URL, or None (from null or "") to have none."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_URL or not is_http_url(value):
        errors.append({"field": "avatar_url", "message": "an http(s) URL"})
        return None
    return value


def check_bio(value: Any, errors: list[dict[str, str]]) -> str | None:
    """At most `MAX_BIO` characters, or None to have none."""
    if value is not None and (not isinstance(value, str) or len(value) > MAX_BIO):
        errors.append({"field": "bio", "message": f"at most {MAX_BIO} characters"})
        return None
    return value


def origin(url: str) -> str | None:
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


def is_http_url(url: str) -> bool:
    """Whether `url` is an absolute http(s) URL without whitespace."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not any(c.isspace() for c in url)
