"""The ids the server makes (store/ids.py): RFC 9562 version 7 UUIDs, in time order."""
from __future__ import annotations

import os
import re
import time
import uuid

import pytest

from store.ids import random_hex, uuid7, uuid7_hex


def test_a_uuid7_is_a_version_7_uuid_of_now():
    before = time.time_ns() // 1_000_000
    text = uuid7()
    after = time.time_ns() // 1_000_000
    u = uuid.UUID(text)
    assert str(u) == text and u.version == 7 and u.variant == uuid.RFC_4122
    assert before <= u.int >> 80 <= after  # the first 48 bits: Unix time in milliseconds
    assert re.fullmatch(r"[0-9a-f]{32}", uuid7_hex()) and uuid.UUID(uuid7_hex()).version == 7


def test_uuid7s_sort_in_the_order_they_were_made_across_milliseconds():
    made = []
    for _ in range(5):
        made.append(uuid7())
        time.sleep(0.002)
    assert made == sorted(made)
    assert len({uuid7() for _ in range(20_000)}) == 20_000


def test_the_random_bits_differ_within_one_millisecond():
    ids = [uuid.UUID(uuid7()).int for _ in range(1000)]
    assert len({i & ((1 << 74) - 1) for i in ids}) == 1000  # rand_a and rand_b (without version/variant)


def test_random_hex():
    assert re.fullmatch(r"[0-9a-f]{16}", random_hex(16)) and len(random_hex(11)) == 11
    assert len({random_hex(16) for _ in range(10_000)}) == 10_000


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_never_repeats_the_parents_ids():
    uuid7()  # the parent has a block of random bytes under way
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, then exit without running the test process's cleanup
        os.close(read)
        os.write(write, "\n".join(uuid7() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    child = {uuid.UUID(i).int & ((1 << 74) - 1) for i in b"".join(chunks).decode().split()}
    parent = {uuid.UUID(uuid7()).int & ((1 << 74) - 1) for _ in range(50)}
    assert len(child) == 50 and not child & parent
