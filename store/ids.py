"""Ids the server makes for rows: time-ordered UUIDs (RFC 9562 version 7).

A version 7 UUID starts with the Unix time in milliseconds, so the rows a server makes one after
another sit next to each other in every index keyed by their id (the tasks' primary key, the
events by task, ...): an insert touches the last page of the index, where a random UUID
(version 4) touches a random page, and a commit writes far fewer pages.  On a short run that is
about a fifth of the writer's time (bench/README.md).  The other 74 bits are random, from the
operating system's generator, so an id still cannot be guessed from another one.

The random bytes are read in blocks of 4 KiB (one system call per 400 ids, not one per id) and
never shared with a forked child.
"""
from __future__ import annotations

import os
import threading
import time

_BLOCK = 4096


class _Randomness:
    """Bytes of `os.urandom`, read a block at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._block = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        """In a forked child: the parent hands out the rest of this block, so drop it."""
        self._lock = threading.Lock()
        self._block, self._at = b"", 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._block):
                self._block, self._at = os.urandom(_BLOCK), 0
            out = self._block[self._at:self._at + n]
            self._at += n
            return out


_random = _Randomness()

_RAND_B = (1 << 62) - 1


def _uuid7_hex() -> str:
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(_random.take(10), "big")  # 80 bits: 12 for rand_a, 62 for rand_b
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62 | (rand & _RAND_B)
    return f"{value:032x}"


def uuid7() -> str:
    """A new version 7 UUID in its canonical text form (36 characters, lowercase)."""
    h = _uuid7_hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7_hex() -> str:
    """A new version 7 UUID as 32 hex digits (for prefixed ids such as `msg_…`)."""
    return _uuid7_hex()


def random_hex(digits: int) -> str:
    """`digits` random hex digits (ids that need to be unique only within their message, e.g. a
    part's or a tool call's)."""
    return _random.take((digits + 1) // 2).hex()[:digits]
