"""The one way cronsvc writes an instant, by table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from cronsvc.instants import rfc3339


@pytest.mark.parametrize(
    ("instant", "text"),
    [
        (datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01T00:00:00.000Z"),
        (datetime(2026, 3, 29, 1, 30, 0, 123999, tzinfo=UTC), "2026-03-29T01:30:00.123Z"),
        (datetime(939, 3, 14, 5, 52, 56, tzinfo=UTC), "0939-03-14T05:52:56.000Z"),
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00.000Z"),
        (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "9999-12-31T23:59:59.999Z"),
        (
            datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1))),
            "2026-01-01T00:00:00.000Z",
        ),
        (datetime(2026, 1, 1, 12, 0), "2026-01-01T12:00:00.000Z"),  # naive: taken as UTC
    ],
)
def test_every_instant_is_written_in_utc_with_milliseconds_and_a_z(
    instant: datetime, text: str
) -> None:
    assert rfc3339(instant) == text
