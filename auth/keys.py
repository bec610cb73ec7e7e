"""The server's own keys and secrets, made on first start and kept where every instance finds them.

With the store of one process (SQLite) they are files under data_dir/keys (mode 0600); when
instances share the store (PostgreSQL) they are rows of its `secrets` table (store/secrets.py),
so that a token, a stream token or a signed URL made by one instance is accepted by all
(SPEC section 14).  Their values are never logged.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from store import Store
from store import secrets as secrets_sql

# The names of the server's secrets (file names under data_dir/keys, or rows of `secrets`).
SIGNING_KEY = "signing-key.pem"  # ES256, PKCS#8 PEM: signs the JWTs this server issues
STREAM_TOKEN = "stream-token.secret"  # HMAC key of stream tokens
ATTACHMENT_URL = "attachment-url.secret"  # HMAC key of signed attachment URLs and owner folders
ACCOUNTS_PEPPER = "accounts-pepper.secret"  # HMAC key of sign-up codes


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class SigningKey:
    """An ES256 key pair with a stable `kid` (the RFC 7638 thumbprint of its public JWK)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self.private_key = private_key
        self.public_key = private_key.public_key()
        numbers = self.public_key.public_numbers()
        self._x = b64url(numbers.x.to_bytes(32, "big"))
        self._y = b64url(numbers.y.to_bytes(32, "big"))
        canonical = json.dumps({"crv": "P-256", "kty": "EC", "x": self._x, "y": self._y}, separators=(",", ":"))
        self.kid = b64url(hashlib.sha256(canonical.encode()).digest())

    @classmethod
    def from_pem(cls, pem: bytes, where: str = "the signing key") -> SigningKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{where} is not an EC private key")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        return cls.from_pem(_load_or_create(path, new_signing_pem), str(path))

    def public_jwk(self) -> dict[str, Any]:
        return {"kty": "EC", "crv": "P-256", "x": self._x, "y": self._y, "kid": self.kid, "alg": "ES256", "use": "sig"}


def new_signing_pem() -> bytes:
    """A new ES256 private key, as unencrypted PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_secret() -> bytes:
    return secrets.token_bytes(32)


def load_or_create_secret(path: Path, size: int = 32) -> bytes:
    return _load_or_create(path, lambda: secrets.token_bytes(size))


def _load_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    if path.exists():
        return path.read_bytes()
    value = make()
    _write_private(path, value)
    return value


class Secrets(Protocol):
    """Where the server keeps its secrets."""

    async def get_or_make(self, name: str, make: Callable[[], bytes]) -> bytes:
        """The secret called `name`; made with `make()` and kept the first time it is asked for."""
        ...


class SecretFiles:
    """Secrets as files of one directory, mode 0600: the store of one process (SQLite)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def get_or_make(self, name: str, make: Callable[[], bytes]) -> bytes:
        return _load_or_create(self.directory / name, make)  # a few small files, once at start


class StoredSecrets:
    """Secrets in the store: the same for every instance that shares it (PostgreSQL)."""

    def __init__(self, db: Store) -> None:
        self.db = db

    async def get_or_make(self, name: str, make: Callable[[], bytes]) -> bytes:
        kept = await secrets_sql.get(self.db, name)
        return kept if kept is not None else await secrets_sql.keep_first(self.db, name, make())


def secrets_for(db: Store, keys_dir: Path) -> Secrets:
    """The store's secrets when instances share it, else files under `keys_dir`."""
    return StoredSecrets(db) if db.shared else SecretFiles(keys_dir)


async def signing_key(keys: Secrets) -> SigningKey:
    return SigningKey.from_pem(await keys.get_or_make(SIGNING_KEY, new_signing_pem))


async def secret(keys: Secrets, name: str) -> bytes:
    """The 32-byte secret called `name`."""
    return await keys.get_or_make(name, new_secret)
