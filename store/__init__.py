"""The store: one writer with group commit, readers on their own connections; SQLite
(store/db.py, the default) or PostgreSQL (store/postgres.py), behind one interface (`Store`).

The store speaks SQL and Python values only; it raises `NotFound` and
`Conflict`, never an HTTP error.
"""
from store.db import Database, WriteTx
from store.errors import Conflict, NotFound, StoreError
from store.events import Event
from store.writer import GroupCommitStore as Store

__all__ = ["Conflict", "Database", "Event", "NotFound", "Store", "StoreError", "WriteTx"]
