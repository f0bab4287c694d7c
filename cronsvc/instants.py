"""How cronsvc writes an instant, wherever it goes: API answers, webhook
bodies, execution records and log lines."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache


@lru_cache(maxsize=256)
def rfc3339(instant: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a Z, `2026-01-01T00:00:00.000Z`;
    years before 1000 padded to four digits. A naive instant is taken as UTC.

    Cached: the dispatcher writes one into the body of every fire, and the
    jobs of one burst share their tick."""
    if instant.tzinfo is not UTC:
        instant = instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)
    # isoformat pads the year (strftime's %Y does not on glibc) and costs
    # half as much.
    return instant.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
