"""`server.py backup DEST` (store/backup.py) on a live SQLite store: what DEST holds, and what is refused.

The backup of a running server, restored and served, is tests/process/test_backup_process.py."""
import asyncio
import re
import sqlite3
import stat

import pytest

from store import backup

FILES = {
    "keys/signing-key.pem": b"-----BEGIN PRIVATE KEY-----\n",
    "keys/stream-token.secret": b"s" * 32,
    "attachments/agent-inputs/0123/note.txt": b"a note\n",
    "documents/5a0c": b"# a document\n",
    "outbox/1-mail.txt": b"To: ann@example.com\n\n123456\n",
}


@pytest.fixture
def data_dir(db):
    """The data dir of the open store `db` (tests/store/conftest.py)."""
    return db.path.parent


def write_files(data_dir, files):
    for name, data in files.items():
        (data_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / name).write_bytes(data)


def tree(root):
    return {str(p.relative_to(root)): p for p in root.rglob("*")}


def copied_events(dest):
    with sqlite3.connect(dest / "parley.db") as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return [row[0] for row in copy.execute("SELECT id FROM events ORDER BY id")]


def test_the_copy_holds_the_store_and_every_file_but_the_lock_the_wal_and_partial_uploads(io_loop, db, data_dir,
                                                                                            tmp_path, capsys):
    for i in range(300):
        db.append("task-1", "thread-1", "text.delta", {"partId": "p", "delta": f"{i} "})
    io_loop.run_sync(db.committed)
    write_files(data_dir, FILES)
    (data_dir / "parley.lock").write_text("pid 1 started now\n")
    (data_dir / "documents" / "9f1e.part").write_bytes(b"half an upl")
    (data_dir / "elsewhere").symlink_to(tmp_path)
    assert (data_dir / "parley.db-wal").exists()

    dest = tmp_path / "backups" / "monday"
    assert backup.main([str(dest), "--data-dir", str(data_dir)]) == 0

    copied = tree(dest)
    assert set(copied) == {"parley.db", *FILES, "keys", "attachments", "attachments/agent-inputs",
                           "attachments/agent-inputs/0123", "documents", "outbox"}
    assert all((dest / name).read_bytes() == data for name, data in FILES.items())
    for path in (dest, *copied.values()):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
    assert copied_events(dest) == list(range(1, 301))
    size = sum(p.stat().st_size for p in copied.values() if p.is_file())
    summary = rf"backed up {re.escape(str(data_dir.resolve()))} to {re.escape(str(dest.resolve()))}: "
    assert re.fullmatch(summary + rf"300 events \(last id 300\), {len(FILES) + 1} files, {size} bytes in \d+\.\ds\n",
                        capsys.readouterr().out)


async def test_the_copy_is_of_one_moment_while_the_writer_keeps_committing(db, data_dir, tmp_path, capsys,
                                                                            monkeypatch):
    for i in range(2000):
        db.append("task-1", "thread-1", "text.delta", {"partId": "p", "delta": f"{i:>40}"})
    await db.committed()
    writing = True

    async def keep_writing():
        while writing:
            db.append("task-1", "thread-1", "text.delta", {"partId": "p", "delta": "more"})
            await asyncio.sleep(0.001)

    writer = asyncio.ensure_future(keep_writing())
    monkeypatch.setattr(backup, "PAGES_PER_STEP", 1)  # a step per page: many commits land between steps
    dest = tmp_path / "backup"
    at_start = db.last_event_id

    def run_backup():  # the highest event id handed out as the backup returns, read in its thread
        return backup.main([str(dest), "--data-dir", str(data_dir)]), db.last_event_id

    try:
        code, at_end = await asyncio.get_running_loop().run_in_executor(None, run_backup)
    finally:
        writing = False
        await writer
    await db.committed()
    assert code == 0
    said = re.search(r": (\d+) events \(last id (\d+)\)", capsys.readouterr().out)
    assert said is not None
    events, last_id = int(said.group(1)), int(said.group(2))
    assert 2000 <= at_start <= last_id < at_end, "commits went on while the backup ran, after its moment"
    assert copied_events(dest) == list(range(1, last_id + 1)) and events == last_id


def test_dest_must_be_new_or_empty_and_outside_the_data_dir(db, data_dir, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "old.txt").write_text("kept")
    inside = data_dir / "backup"
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for dest, why in ((busy, "is not empty"), (inside, "is inside the data dir"), (a_file, "is not a directory")):
        assert backup.main([str(dest), "--data-dir", str(data_dir)]) == 1
        assert why in capsys.readouterr().err
    assert tree(busy) == {"old.txt": busy / "old.txt"} and not inside.exists()

    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    empty.chmod(0o755)
    assert backup.main([str(empty), "--data-dir", str(data_dir)]) == 0
    assert stat.S_IMODE(empty.stat().st_mode) == 0o700 and (empty / "parley.db").is_file()


def test_without_a_sqlite_store_there_is_nothing_to_back_up(tmp_path, capsys):
    assert backup.main([str(tmp_path / "b1"), "--data-dir", str(tmp_path / "nothing")]) == 1
    assert "no SQLite store" in capsys.readouterr().err and not (tmp_path / "b1").exists()

    config = tmp_path / "parley.toml"
    config.write_text('store = "postgresql://parley:hunter2@db.internal/parley"\n')
    assert backup.main([str(tmp_path / "b2"), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "pg_dump" in err and "db.internal" in err and "hunter2" not in err
    assert not (tmp_path / "b2").exists()
