"""Errors the store raises; callers map them to their own surface."""


class StoreError(Exception):
    """Base class of store errors."""


class NotFound(StoreError):
    """The row asked for does not exist."""


class Conflict(StoreError):
    """A uniqueness rule refused the write (e.g. a second live task on a thread)."""

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.details = details
