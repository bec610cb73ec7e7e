"""JWKS key sources: https:// URLs fetched asynchronously and cached, or local files.

Cached keys keep working while the endpoint is down; an unknown `kid`
triggers at most one refetch per source per minute. A fetch trusts only what
it asked for: https with a verified certificate, no redirects (a 3xx is a
failed fetch), at most MAX_JWKS_BYTES (counted while the body streams in,
after decompression), and it times out in seconds.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import orjson
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

log = logging.getLogger("parley.auth")

REFETCH_INTERVAL_S = 60.0
REFRESH_AFTER_S = 600.0
FETCH_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 256 * 1024  # a real JWKS is a few KB
ALLOWED_ALGS = frozenset({"ES256", "RS256"})


def key_alg(jwk: dict[str, Any]) -> str | None:
    """The one algorithm a JWK may verify: its `alg`, else ES256 for a P-256 EC key; RS256 only when named."""
    alg = jwk.get("alg")
    if alg is not None:
        return alg if alg in ALLOWED_ALGS else None
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        return "ES256"
    return None


def check_location(location: str) -> bool:
    """True for an https:// URL, False for a local file path; any other URL (http://, file://, …) is a ValueError."""
    if "://" not in location:
        return False
    parts = urlsplit(location)
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise ValueError(f"JWKS {location!r}: only https:// URLs (or a local file path) are trusted")
    return True


class JWKSSource:
    def __init__(self, location: str, *, ssl_context: ssl.SSLContext | None = None) -> None:
        """`ssl_context` replaces the system's trusted CAs for this source's fetches (a private CA)."""
        self.location = location
        self.is_url = check_location(location)
        self.ssl_context = ssl_context
        self.keys: dict[str, tuple[str, Any]] = {}  # kid -> (alg, key object)
        self.fetched_at = 0.0
        self._last_attempt = -REFETCH_INTERVAL_S
        self._lock = asyncio.Lock()

    def _load(self, body: bytes) -> None:
        doc = orjson.loads(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValueError("not a JWKS document (no 'keys' list)")
        keys: dict[str, tuple[str, Any]] = {}
        for jwk in doc["keys"]:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            alg = key_alg(jwk)
            if alg is None:
                continue
            try:
                keys[str(jwk.get("kid", ""))] = (alg, jwt.PyJWK(jwk, algorithm=alg).key)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                log.warning("skipping an unusable key in %s", self.location)
        self.keys = keys
        self.fetched_at = time.monotonic()

    async def refresh(self, force: bool = False) -> None:
        """Fetch again if stale (or forced by an unknown kid), at most once a minute."""
        if self._lock.locked():  # a fetch is under way: its result serves this caller too
            async with self._lock:
                return
        now = time.monotonic()
        if now - self._last_attempt < REFETCH_INTERVAL_S:
            return
        if not force and self.keys and now - self.fetched_at < REFRESH_AFTER_S:
            return
        async with self._lock:
            if time.monotonic() - self._last_attempt < REFETCH_INTERVAL_S:
                return
            self._last_attempt = time.monotonic()
            try:
                if self.is_url:
                    self._load(await self._fetch())
                else:
                    body = await asyncio.get_running_loop().run_in_executor(None, Path(self.location).read_bytes)
                    self._load(body)
            except (OSError, HTTPClientError, ValueError, TypeError, asyncio.TimeoutError) as exc:
                log.warning("JWKS %s unavailable (%s); keeping %d cached key(s)", self.location, exc, len(self.keys))

    async def _fetch(self) -> bytes:
        chunks: list[bytes] = []
        size = 0

        def collect(chunk: bytes) -> None:  # raising here aborts the fetch and closes the connection
            nonlocal size
            size += len(chunk)
            if size > MAX_JWKS_BYTES:
                raise ValueError(f"JWKS document over {MAX_JWKS_BYTES} bytes")
            chunks.append(chunk)

        resp = await AsyncHTTPClient().fetch(
            self.location, connect_timeout=FETCH_TIMEOUT_S, request_timeout=FETCH_TIMEOUT_S,
            follow_redirects=False, validate_cert=True, ssl_options=self.ssl_context,
            streaming_callback=collect, raise_error=False,
        )
        if resp.code != 200:
            why = "redirects are not followed" if 300 <= resp.code < 400 else "expected 200"
            raise ValueError(f"HTTP {resp.code} ({why})")
        return b"".join(chunks)

    async def find(self, kid: str | None) -> list[tuple[str, Any]]:
        await self.refresh()
        if kid is None:
            return list(self.keys.values())
        if kid not in self.keys:
            await self.refresh(force=True)
        found = self.keys.get(kid)
        return [found] if found else []
