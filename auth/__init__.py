"""Who is calling: Bearer JWTs, the internal key, and signed stream tokens.

No HTTP framework here: the handlers pass header values in and map
`AuthError` to 401.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any

import jwt
import orjson

from auth.jwks import JWKSSource
from auth.keys import SigningKey, b64url, b64url_decode

log = logging.getLogger("parley.auth")

LEEWAY_S = 30
STREAM_TOKEN_TTL_S = 600
MAX_USER_ID = 128


class AuthError(Exception):
    """Missing or invalid credentials (401)."""


@dataclass(frozen=True)
class Identity:
    user_id: str
    via: str  # "jwt" | "internal" | "stream-token"
    claims: dict[str, Any] | None = None


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value; None for any other."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class Authenticator:
    def __init__(
        self,
        signing_key: SigningKey,
        stream_secret: bytes,
        *,
        issuer: str,
        audience: str = "authenticated",
        jwks: list[str] | None = None,
        internal_key: str | None = None,
        expected_issuer: str | None = None,
    ) -> None:
        self.signing_key = signing_key
        self.issuer = issuer
        self.audience = audience
        self.expected_issuer = expected_issuer
        self.sources = [JWKSSource(loc) for loc in jwks or []]  # ValueError for a JWKS URL that is not https://
        if self.sources and expected_issuer is None:
            log.warning("tokens signed by the keys of %s are accepted from any issuer: set --jwt-issuer to the one "
                        "issuer to trust", ", ".join(s.location for s in self.sources))
        self._internal_key = internal_key.encode() if internal_key else None
        self._stream_secret = stream_secret

    async def authenticate(self, authorization: str | None, internal_key: str | None, user_id: str | None,
                           jwt_only: bool = False) -> Identity:
        if authorization:
            token = bearer_token(authorization)
            if token is None:
                raise AuthError("Authorization must be 'Bearer <token>'")
            return await self.verify_jwt(token)
        if internal_key is not None:
            if jwt_only:
                raise AuthError("this route accepts only a JWT")
            return self.verify_internal(internal_key, user_id)
        raise AuthError("missing credentials")

    def internal_key_matches(self, key: str) -> bool:
        """Whether `key` is the internal key (compared in constant time); False when none is configured."""
        return self._internal_key is not None and hmac.compare_digest(key.encode(), self._internal_key)

    def verify_internal(self, key: str, user_id: str | None) -> Identity:
        if self._internal_key is None:
            raise AuthError("the internal key is not enabled on this server")
        if not self.internal_key_matches(key):
            raise AuthError("invalid internal key")
        if not user_id or len(user_id) > MAX_USER_ID or not user_id.isprintable():
            raise AuthError("X-User-Id is required with X-Internal-Key")
        return Identity(user_id, "internal")

    async def _candidates(self, header: dict[str, Any]) -> list[tuple[str, Any, str | None]]:
        """(algorithm, key, required issuer) of every key that may have signed the token."""
        kid = header.get("kid")
        own = ("ES256", self.signing_key.public_key, self.issuer)
        if kid == self.signing_key.kid:
            return [own]
        found: list[tuple[str, Any, str | None]] = [own] if kid is None else []
        for source in self.sources:
            found.extend((alg, key, self.expected_issuer) for alg, key in await source.find(kid))
        return found

    async def verify_jwt(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        if "crit" in header:
            raise AuthError("unsupported critical header")
        alg = header.get("alg")
        candidates = [c for c in await self._candidates(header) if c[0] == alg]
        if not candidates:
            raise AuthError("no key for this token")
        last: Exception | None = None
        for key_alg, key, issuer in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[key_alg],
                    audience=self.audience,
                    issuer=issuer,
                    leeway=LEEWAY_S,
                    options={"require": ["exp", "sub"], "verify_iss": issuer is not None},
                )
            except jwt.PyJWTError as exc:
                last = exc
                continue
            sub = claims.get("sub")
            if not isinstance(sub, str) or not sub or len(sub) > MAX_USER_ID:
                raise AuthError("invalid subject")
            return Identity(sub, "jwt", claims)
        raise AuthError(f"invalid token: {type(last).__name__}")

    def issue_jwt(self, user_id: str, ttl_s: int = 3600, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": self.audience, "sub": user_id, "iat": now, "exp": now + ttl_s, **claims}
        return jwt.encode(payload, self.signing_key.private_key, algorithm="ES256", headers={"kid": self.signing_key.kid})

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.signing_key.public_jwk()]}

    # -- stream tokens: HMAC-signed, bound to one user and one task ------------

    def stream_token(self, user_id: str, task_id: str, ttl_s: int = STREAM_TOKEN_TTL_S) -> str:
        body = b64url(orjson.dumps({"u": user_id, "t": task_id, "e": int(time.time()) + ttl_s}))
        return f"{body}.{self._mac(body)}"

    def verify_stream_token(self, token: str, task_id: str) -> Identity:
        body, _, mac = token.partition(".")
        if not body or not mac or not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            raise AuthError("invalid stream token")
        try:
            claims = orjson.loads(b64url_decode(body))
        except (ValueError, orjson.JSONDecodeError):
            raise AuthError("invalid stream token") from None
        if not isinstance(claims, dict) or claims.get("t") != task_id:
            raise AuthError("stream token is for another task")
        if not isinstance(claims.get("e"), int) or claims["e"] < time.time():
            raise AuthError("stream token expired")
        return Identity(str(claims["u"]), "stream-token")

    def _mac(self, body: str) -> str:
        return b64url(hmac.new(self._stream_secret, b"stream:" + body.encode(), hashlib.sha256).digest())
