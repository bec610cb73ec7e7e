"""The store: one writer with group commit, readers on their own connections; SQLite
(store/db.py, the default) or PostgreSQL (store/postgres.py), behind one interface (`Store`).

The store speaks SQL and Python values only; it raises `NotFound` and
`Conflict`, never an HTTP error.
"""
from pathlib import Path

from store.db import Database, WriteTx
from store.errors import Conflict, NotFound, StoreError
from store.events import Event
from store.writer import GroupCommitStore as Store


def make_store(store: str, data_dir: Path) -> Store:
    """The store `--store` names, not yet opened: "sqlite" (data_dir/parley.db) or a postgresql:// URL."""
    if store == "sqlite":
        return Database(data_dir / "parley.db")
    from store.postgres import PostgresDatabase  # psycopg is imported only when it is used

    return PostgresDatabase(store)


__all__ = ["Conflict", "Database", "Event", "NotFound", "Store", "StoreError", "WriteTx", "make_store"]
