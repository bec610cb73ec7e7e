"""Argon2id password hashing, always off the event loop.

Hashing runs in a small dedicated thread pool: it never blocks the loop,
and the pool size bounds the memory that concurrent hashes take
(each Argon2id hash holds `memory_cost` KiB while it runs).
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

DEFAULT_WORKERS = 4


def make_hasher(params: dict[str, Any] | None = None) -> PasswordHasher:
    """A PasswordHasher (Argon2id; RFC 9106 low-memory defaults unless `[accounts.argon2]` says otherwise)."""
    p = params or {}
    if not p:
        return PasswordHasher()
    return PasswordHasher(
        time_cost=int(p.get("time_cost", 3)),
        memory_cost=int(p.get("memory_cost", 65536)),
        parallelism=int(p.get("parallelism", 4)),
    )


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None, workers: int = DEFAULT_WORKERS) -> None:
        self.hasher = hasher or make_hasher()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._dummy: str | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def hash(self, password: str) -> str:
        result: str = await self._run(self.hasher.hash, password)
        return result

    async def verify(self, hashed: str | None, password: str) -> bool:
        """True when `password` matches; with no hash, a dummy one is checked so the timing stays alike."""
        if hashed is None:
            if self._dummy is None:
                self._dummy = await self.hash("dummy password, never matches anything")
            hashed = self._dummy
            await self._run(self._check, hashed, password)
            return False
        ok: bool = await self._run(self._check, hashed, password)
        return ok

    def _check(self, hashed: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(hashed, password))
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, hashed: str) -> bool:
        try:
            return bool(self.hasher.check_needs_rehash(hashed))
        except InvalidHashError:
            return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
