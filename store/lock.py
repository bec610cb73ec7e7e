"""One server per SQLite data dir: an exclusive lock on data_dir/parley.lock (SPEC section 15).

Two servers on one SQLite store would each count event ids from the same maximum and
hand out the same ids.  The server takes this lock before it opens the store and keeps it
until it exits; the kernel drops a `flock` with the last descriptor of its open file, so
a server killed with SIGKILL never blocks the next one.  The file holds the owner's pid
and start time, for the message the next server prints; it is never removed (a new
server would lock a new file while an old one still held the old).

Only the serving process takes it: the admin CLI and `backup` work beside a live server
(SQLite serializes their writes).  The PostgreSQL store takes none: its instances share
the database by design, and their data dirs hold no store (section 14).
"""
from __future__ import annotations

import fcntl
import os
import time
from datetime import UTC, datetime
from pathlib import Path

LOCK_FILE = "parley.lock"
_OWNER_WRITTEN_S = 1.0  # how long the owner may take between locking the file and writing its pid


class DataDirInUse(Exception):
    """Another process holds the data dir; the message names the dir and that process."""


class DataDirLock:
    """The held lock; `release()` it on a clean exit (the kernel does when the process dies)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def lock_data_dir(data_dir: Path) -> DataDirLock:
    """Make the data dir (0700) if it is missing and take its lock; DataDirInUse when another process has it.

    The descriptor is not inherited by the programs the server starts (sandbox workers,
    MCP servers), so none of them keeps the lock after the server is gone."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirInUse(f"the data dir {data_dir} is in use by {_owner(path)}: "
                           "one server per data dir (stop it first, or give this one another --data-dir)") from None
    except BaseException:
        os.close(fd)
        raise
    started = datetime.now(UTC).isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} started {started}\n".encode(), 0)
    return DataDirLock(path, fd)


def _owner(path: Path) -> str:
    """Who holds the lock, as its file says ("pid 123 started …"); the owner writes it right after locking."""
    deadline = time.monotonic() + _OWNER_WRITTEN_S
    while True:
        try:
            text = path.read_text(errors="replace").strip()
        except OSError:
            text = ""
        if text or time.monotonic() >= deadline:
            return f"another process ({text})" if text else "another process (its pid not yet written)"
        time.sleep(0.02)
