"""SQLite store: one writer with group commit, readers on their own connections.

The store speaks SQL and Python values only; it raises `NotFound` and
`Conflict`, never an HTTP error.
"""
from store.db import Database, WriteTx
from store.errors import Conflict, NotFound, StoreError
from store.events import Event

__all__ = ["Conflict", "Database", "Event", "NotFound", "StoreError", "WriteTx"]
