"""Times in JSON bodies: ISO 8601 in UTC, with milliseconds."""
from __future__ import annotations

from datetime import UTC, datetime


def iso_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC time with milliseconds."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
