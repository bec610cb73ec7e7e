"""The server's own keys, created in the data dir on first start (mode 0600)."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


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
    def load_or_create(cls, path: Path) -> SigningKey:
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{path} is not an EC private key")
            return cls(key)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(path, pem)
        return cls(key)

    def public_jwk(self) -> dict[str, Any]:
        return {"kty": "EC", "crv": "P-256", "x": self._x, "y": self._y, "kid": self.kid, "alg": "ES256", "use": "sig"}


def load_or_create_secret(path: Path, size: int = 32) -> bytes:
    if path.exists():
        return path.read_bytes()
    secret = secrets.token_bytes(size)
    _write_private(path, secret)
    return secret
