"""`python server.py backup DEST` (`parley backup DEST`): a consistent copy of a live SQLite data dir.

    backup [--config FILE] [--data-dir DIR] DEST

The store is copied with SQLite's online backup API into DEST/parley.db while the server
keeps writing; then every other file of the data dir (keys, attachments, documents, the
dev outbox) is copied beside it, but the lock file, the store's -wal/-shm files and the
temporary `.part` files of uploads still being written.  Restoring is using DEST as the
data dir (SPEC section 15): the restored server's crash recovery ends the runs that were
live at the backup, as after any restart.

The store comes first: an attachment's or a document's file is written before its row
commits (runs/files.py), so every file the copied store names was complete when the copy
of the files began.  A file deleted in between (a document deleted during the backup)
is missing from the copy while its row is in it.

With the PostgreSQL store there is nothing here to copy consistently: the database is
backed up with pg_dump, and the data dir's few files beside it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import stat
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from store.lock import LOCK_FILE

STORE_FILE = "parley.db"
# Never copied: the store (copied through SQLite), its WAL and shared memory, the server's lock.
_SKIPPED = frozenset({STORE_FILE, f"{STORE_FILE}-wal", f"{STORE_FILE}-shm", f"{STORE_FILE}-journal", LOCK_FILE})
PAGES_PER_STEP = 1024  # 4 MiB of 4 KiB pages between pauses
STEP_PAUSE_S = 0.005


class BackupRefused(Exception):
    """The backup cannot be made as asked; the message says why."""


@dataclass
class Summary:
    events: int = 0
    last_event_id: int = 0
    files: int = 0
    bytes: int = 0

    def line(self, data_dir: Path, dest: Path, seconds: float) -> str:
        return (f"backed up {data_dir} to {dest}: {self.events} events (last id {self.last_event_id}), "
                f"{self.files} files, {self.bytes} bytes in {seconds:.1f}s")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="server.py backup",
                                description="copy a live SQLite data dir consistently to DEST (restore: use DEST "
                                            "as the data dir)")
    p.add_argument("dest", type=Path, metavar="DEST", help="a directory that does not exist yet, or an empty one")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the data dir to copy (default: the server's: PARLEY_DATA_DIR, the config file, ./data)")
    p.add_argument("--config", type=Path, default=None,
                   help="the server's TOML config file: its data_dir and store (default: PARLEY_CONFIG)")
    return p


def main(argv: list[str]) -> int:
    """Back up the server's data dir, as `--config`/`--data-dir` name it, to DEST; 0 when done,
    1 when refused or failed (DEST is then left as it was), 2 for a usage or config error."""
    from config import parse_config, redacted  # the server's settings, read as the server reads them

    args = parser().parse_args(argv)
    given = [*(["--config", str(args.config)] if args.config else []),
             *(["--data-dir", str(args.data_dir)] if args.data_dir else [])]
    try:
        cfg = parse_config(given)
    except (OSError, ValueError) as exc:
        print(f"server.py backup: error: config: {exc}", file=sys.stderr)
        return 2
    data_dir = cfg.data_dir.resolve()
    if cfg.store != "sqlite":
        print(f"server.py backup: the store is PostgreSQL ({redacted(cfg.store)}): back it up with pg_dump "
              f"(pg_dump --format=custom --file parley.dump URL), and copy the data dir {data_dir} beside it",
              file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        summary = back_up(data_dir, args.dest)
    except (BackupRefused, OSError, sqlite3.Error) as exc:
        print(f"server.py backup: error: {exc}", file=sys.stderr)
        return 1
    print(summary.line(data_dir, args.dest.resolve(), time.monotonic() - started), flush=True)
    return 0


def back_up(data_dir: Path, dest: Path) -> Summary:
    """Copy the SQLite data dir to `dest` (missing or empty; made 0700, its files 0600).

    BackupRefused when it cannot be done as asked; on a failure half way, what was
    written to `dest` is removed again."""
    store = data_dir / STORE_FILE
    if not store.is_file():
        raise BackupRefused(f"no SQLite store in {data_dir} (no {STORE_FILE})")
    dest = dest.resolve()
    if dest.is_relative_to(data_dir):
        raise BackupRefused(f"{dest} is inside the data dir {data_dir}")
    made = _prepare(dest)
    try:
        summary = Summary()
        summary.events, summary.last_event_id = copy_store(store, dest / STORE_FILE)
        summary.files, summary.bytes = 1, (dest / STORE_FILE).stat().st_size
        files, size = copy_files(data_dir, dest)
        summary.files += files
        summary.bytes += size
        _fsync(dest)
        return summary
    except BaseException:
        _undo(dest, made)
        raise


def _prepare(dest: Path) -> bool:
    """Make `dest` (0700), or check that it is an empty directory; True when it was made here."""
    try:
        dest.mkdir(mode=0o700, parents=True)
        return True
    except FileExistsError:
        if not dest.is_dir():
            raise BackupRefused(f"{dest} is not a directory") from None
    if any(dest.iterdir()):
        raise BackupRefused(f"{dest} is not empty: a backup goes into a new or an empty directory")
    dest.chmod(0o700)
    return False


def _undo(dest: Path, made: bool) -> None:
    if made:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for entry in dest.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def copy_store(source: Path, target: Path) -> tuple[int, int]:
    """Copy the live store at `source` to the new file `target` (0600) with SQLite's online
    backup API; the number of events in the copy and the last one's id.

    The copy is of one snapshot: a read transaction stays open on the source across the
    backup's steps.  Without it, every commit of the server between two steps would make
    SQLite start the copy again, and a busy server's never end.  In WAL mode a reader never
    holds up the writer; the steps and their pauses only spread the copy's reads."""
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # SQLite keeps an existing file's mode
    with closing(sqlite3.connect(f"file:{quote(str(source))}?mode=ro", uri=True, isolation_level=None, timeout=5)) as src, \
            closing(sqlite3.connect(target, isolation_level=None)) as dst:
        src.execute("BEGIN")
        events, last_id = src.execute("SELECT count(*), COALESCE(MAX(id), 0) FROM events").fetchone()
        src.backup(dst, pages=PAGES_PER_STEP, sleep=STEP_PAUSE_S)
        src.execute("COMMIT")
    return int(events), int(last_id)


def copy_files(data_dir: Path, dest: Path) -> tuple[int, int]:
    """Copy every regular file of the data dir but the store's own and the lock (directories
    0700, files 0600); the number of files and their bytes."""
    files = size = 0
    for root, dirs, names in os.walk(data_dir):
        here = Path(root)
        target = dest / here.relative_to(data_dir)
        for name in dirs:
            if not (here / name).is_symlink():
                (target / name).mkdir(mode=0o700)
        for name in names:
            if (here == data_dir and name in _SKIPPED) or name.endswith(".part"):
                continue
            copied = _copy_file(here / name, target / name)
            if copied is not None:
                files += 1
                size += copied
    return files, size


def _copy_file(source: Path, target: Path) -> int | None:
    """Copy one regular file durably; its size, or None when it is not a regular file (or is gone)."""
    try:
        if not stat.S_ISREG(source.lstat().st_mode):  # a link or a pipe is not the server's
            return None
        src = open(source, "rb")
    except FileNotFoundError:
        return None
    with src, open(target, "xb", opener=lambda path, flags: os.open(path, flags, 0o600)) as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)
        dst.flush()
        os.fsync(dst.fileno())
        return dst.tell()


def _fsync(dest: Path) -> None:
    """Sync the directories' entries too, so that the whole copy is on disk when the command returns."""
    for root, _dirs, _names in os.walk(dest):
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
