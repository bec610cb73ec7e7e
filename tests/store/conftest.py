"""Fixtures of the store tests: `db`, an open SQLite store in a data dir of its own."""
import pytest

from store import Database


@pytest.fixture
def db(io_loop, tmp_path):
    """The SQLite store of the data dir tmp_path/data, open for the whole test (so its -wal and -shm are there)."""
    database = Database(tmp_path / "data" / "parley.db")
    io_loop.run_sync(database.open)
    yield database
    io_loop.run_sync(database.close)
