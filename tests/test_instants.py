"""The one way cronsvc writes an instant, by table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from cronsvc.instants import NoOffset, parse_rfc3339, rfc3339, rfc3339_seconds


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


@pytest.mark.parametrize(
    ("instant", "text"),
    [
        (datetime(2026, 1, 1, 0, 0, 0, 999999, tzinfo=UTC), "2026-01-01T00:00:00Z"),
        (datetime(939, 3, 14, 5, 52, 56, tzinfo=UTC), "0939-03-14T05:52:56Z"),
        (datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1))), "2026-01-01T00:00:00Z"),
        (datetime(2026, 1, 1, 12, 0), "2026-01-01T12:00:00Z"),  # naive: taken as UTC
    ],
)
def test_to_the_second_an_instant_is_cut_not_rounded_and_written_in_utc(
    instant: datetime, text: str
) -> None:
    assert rfc3339_seconds(instant) == text


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00.123Z", datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)),
        ("2026-01-01T01:00:00+01:00", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00.000001+00:00", datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC)),
    ],
)
def test_an_instant_read_back_is_in_utc(text: str, instant: datetime) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == instant and parsed.tzinfo is UTC


def test_what_is_written_reads_back_as_the_same_instant() -> None:
    instant = datetime(2026, 3, 29, 1, 30, 0, 123000, tzinfo=UTC)
    assert parse_rfc3339(rfc3339(instant)) == instant


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("2026-01-01T00:00:00", NoOffset),
        ("yesterday", ValueError),
        ("0001-01-01T00:00:00+01:00", OverflowError),
    ],
)
def test_text_that_is_no_instant_is_refused(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_rfc3339(text)
