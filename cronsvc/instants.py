"""How cronsvc writes and reads an instant, wherever it goes: API answers,
webhook bodies, execution records, log lines and the command line's tables."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache


def _naive_utc(instant: datetime) -> datetime:
    """A naive instant is taken as UTC."""
    if instant.tzinfo is not None and instant.tzinfo is not UTC:
        instant = instant.astimezone(UTC)
    return instant.replace(tzinfo=None)


@lru_cache(maxsize=256)
def rfc3339(instant: datetime) -> str:
    """`2026-01-01T00:00:00.000Z`, years before 1000 padded to four digits.
    Cached: the dispatcher writes one into every fire's body, and the jobs of
    one burst share their tick."""
    # isoformat pads the year (strftime's %Y does not on glibc) and costs half as much.
    return _naive_utc(instant).isoformat(timespec="milliseconds") + "Z"


def rfc3339_seconds(instant: datetime) -> str:
    """`2026-01-01T00:00:00Z`: what people read in a table, and what the command
    line sends for "2h ago"."""
    return _naive_utc(instant).replace(microsecond=0).isoformat() + "Z"


class NoOffset(ValueError):
    """A date and time without a UTC offset: not an instant."""


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 instant as an aware datetime in UTC. Raises `NoOffset` for
    a time without an offset, ValueError for text that is no instant at all,
    and OverflowError when the offset carries it out of the years 1 to 9999."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise NoOffset(f"{text!r} carries no UTC offset")
    return value.astimezone(UTC)
