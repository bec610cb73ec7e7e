"""Signed attachment URLs (SPEC sections 8, 13): a capability to read one stored file until a time.

The signature is an HMAC-SHA256, keyed by a server secret kept under
data-dir/keys (mode 0600), over the bucket, the path and the expiry, and
is compared in constant time.  Whoever holds the URL may read the file
until it expires: the URL is the credential, so it needs no other.

The same secret names the uploader's folder in attachment paths (another
HMAC, under its own message prefix), so that a path shows who uploaded the
file to nobody without the secret, not even to someone who guesses user ids.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

import orjson

from auth.keys import b64url

FILE_ROUTE = "/api/v1/agent/attachments/file"


class UrlSigner:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def signature(self, bucket: str, path: str, exp: int) -> str:
        # A JSON array keeps the three fields apart whatever characters they hold.
        message = b"attachment-url:" + orjson.dumps([bucket, path, exp])
        return b64url(hmac.new(self._secret, message, hashlib.sha256).digest())

    def owner_folder(self, user_id: str) -> str:
        """The folder of `user_id`'s attachments: 32 hex digits that only the secret's holder can compute."""
        message = b"attachment-folder:" + user_id.encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    def url(self, bucket: str, path: str, ttl_s: int, now: float | None = None) -> tuple[str, int]:
        """A URL (relative to the server) reading `path` of `bucket` for `ttl_s` seconds, and its expiry (epoch s)."""
        exp = int(time.time() if now is None else now) + ttl_s
        query = urlencode({"bucket": bucket, "path": path, "exp": exp, "sig": self.signature(bucket, path, exp)})
        return f"{FILE_ROUTE}?{query}", exp

    def verify(self, bucket: str, path: str, exp: int, sig: str) -> bool:
        """True when `sig` signs exactly these three values (expiry is the caller's check)."""
        return hmac.compare_digest(sig.encode(), self.signature(bucket, path, exp).encode())
