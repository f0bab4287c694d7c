"""Cron maths as pure functions over tables of cases (DESIGN.md, "Cron expressions").

Expected instants are worked out by hand in the comments beside them; the DST
sequences are also checked against a brute-force oracle that walks elapsed time
minute by minute (or second by second) and applies Debian cron's rules directly.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from cronsvc import cron
from cronsvc.cron import CronSchedule, load_timezone, parse_schedule
from cronsvc.errors import BeforeCalendar, CalendarEnds, InvalidCronExpression, InvalidTimezone


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def fires_between(schedule: CronSchedule, start: datetime, end: datetime) -> list[datetime]:
    """Every fire in [start, end), by iterating the schedule."""
    fires = []
    for fire in schedule.iter_after(start - timedelta(seconds=1)):
        if fire >= end:
            return fires
        fires.append(fire)
    raise AssertionError("unreachable")


def fires_on_local_day(schedule: CronSchedule, day: date) -> list[datetime]:
    zone = ZoneInfo(schedule.timezone)
    midnight = datetime.combine(day, time(), zone)
    # Adding a day to an aware datetime is wall-clock arithmetic: the next local midnight.
    return fires_between(schedule, midnight, midnight + timedelta(days=1))


# --- parsing ---------------------------------------------------------------------------

# 2026-01-01 is a Thursday, so 2026-06-15 is a Monday.
FIRST_FIRES = [
    # 6 fields put seconds first.
    ("*/1 * * * * *", utc(2026, 1, 1), [utc(2026, 1, 1, 0, 0, s) for s in (1, 2, 3)]),
    ("30 * * * * *", utc(2026, 1, 1), [utc(2026, 1, 1, 0, m, 30) for m in (0, 1, 2)]),
    ("0 30 2 * * *", utc(2026, 1, 1), [utc(2026, 1, d, 2, 30) for d in (1, 2, 3)]),
    (
        "15,45 * * * * *",
        utc(2026, 1, 1, 0, 0, 15),
        [utc(2026, 1, 1, 0, 0, 45), utc(2026, 1, 1, 0, 1, 15)],
    ),
    # 5 fields.
    ("*/15 * * * *", utc(2026, 1, 1, 10, 7), [utc(2026, 1, 1, 10, m) for m in (15, 30, 45)]),
    ("0 9 * * MON-FRI", utc(2026, 6, 19, 10), [utc(2026, 6, 22, 9), utc(2026, 6, 23, 9)]),
    ("0 0 1 JAN,jul *", utc(2026, 6, 15), [utc(2026, 7, 1), utc(2027, 1, 1)]),
    ("0 0 29 2 *", utc(2026, 1, 1), [utc(2028, 2, 29), utc(2032, 2, 29)]),
    # An equal range is that one value, as in cron (croniter alone reads it as the whole field).
    ("0 0 * * 1-1", utc(2026, 6, 15), [utc(2026, 6, 22), utc(2026, 6, 29), utc(2026, 7, 6)]),
    ("0 12 1 3-3 *", utc(2026, 1, 1), [utc(2026, 3, 1, 12), utc(2027, 3, 1, 12)]),
    ("0 0 * * 7", utc(2026, 6, 15), [utc(2026, 6, 21), utc(2026, 6, 28)]),  # 7 is Sunday too
    # Macros.
    ("@yearly", utc(2026, 6, 15), [utc(2027, 1, 1), utc(2028, 1, 1)]),
    ("@annually", utc(2026, 6, 15), [utc(2027, 1, 1), utc(2028, 1, 1)]),
    ("@monthly", utc(2026, 6, 15), [utc(2026, 7, 1), utc(2026, 8, 1)]),
    ("@weekly", utc(2026, 6, 15), [utc(2026, 6, 21), utc(2026, 6, 28)]),
    ("@daily", utc(2026, 6, 15, 10), [utc(2026, 6, 16), utc(2026, 6, 17)]),
    ("@midnight", utc(2026, 6, 15, 10), [utc(2026, 6, 16), utc(2026, 6, 17)]),
    ("@hourly", utc(2026, 6, 15, 10, 20), [utc(2026, 6, 15, 11), utc(2026, 6, 15, 12)]),
]


@pytest.mark.parametrize(("expression", "after", "expected"), FIRST_FIRES)
def test_accepted_expression_fires_as_written(
    expression: str, after: datetime, expected: list[datetime]
) -> None:
    assert parse_schedule(expression).next_n(after, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "fixed", "seconds"),
    [
        ("30 2 * * *", True, False),
        ("0 0-23 * * *", True, False),
        ("*/15 * * * *", False, False),
        ("30 * * * *", False, False),
        ("* 2 * * *", False, False),
        ("0 30 2 * * *", True, True),
        ("* 30 2 * * *", True, True),  # only minute and hour decide
        ("30 * * * * *", False, True),
        ("@daily", True, False),
        ("@hourly", False, False),
    ],
)
def test_schedule_kind(expression: str, fixed: bool, seconds: bool) -> None:
    schedule = parse_schedule(expression)
    assert (schedule.is_fixed_time, schedule.has_seconds) == (fixed, seconds)


def test_parse_strips_and_reuses_the_schedule() -> None:
    schedule = parse_schedule("  */5 * * * *\t", "Europe/Berlin")
    assert schedule == CronSchedule("*/5 * * * *", "Europe/Berlin")
    assert parse_schedule("  */5 * * * *\t", "Europe/Berlin") is schedule


REJECTED = [
    ("", {}, "empty"),
    ("   ", {}, "empty"),
    ("every minute", {}, "got 2"),
    ("* * * *", {}, "got 4"),
    ("0 0 0 1 1 * 2026", {}, "got 7"),
    ("@reboot", {}, "unknown macro '@reboot'"),
    ("@fortnightly", {}, "unknown macro"),
    ("60 * * * *", {}, "field 1 (minute): 60 is out of range 0-59"),
    ("0 24 * * *", {}, "field 2 (hour): 24 is out of range 0-23"),
    ("0 0 32 * *", {}, "field 3 (day of month): 32 is out of range 1-31"),
    ("0 0 0 * *", {}, "field 3 (day of month): 0 is out of range 1-31"),
    ("0 0 * 13 *", {}, "field 4 (month): 13 is out of range 1-12"),
    ("0 0 * 0 *", {}, "field 4 (month): 0 is out of range 1-12"),
    ("0 0 * * 8", {}, "field 5 (day of week): 8 is out of range 0-7"),
    ("5-75 * * * *", {}, "field 1 (minute): 75 is out of range 0-59"),
    ("0 1,2,99 * * *", {}, "field 2 (hour): 99 is out of range 0-23"),
    ("60 * * * * *", {}, "field 1 (second): 60 is out of range 0-59"),
    ("0 60 * * * *", {}, "field 2 (minute): 60 is out of range 0-59"),
    ("0 0 25 * * *", {}, "field 3 (hour): 25 is out of range 0-23"),
    ("0 0 0 32 * *", {}, "field 4 (day of month): 32 is out of range 1-31"),
    ("0 0 0 * 13 *", {}, "field 5 (month): 13 is out of range 1-12"),
    ("0 0 0 * * 9", {}, "field 6 (day of week): 9 is out of range 0-7"),
    ("*/0 * * * *", {}, "field 1 (minute): '*/0': a step must be at least 1"),
    ("abc * * * *", {}, "field 1 (minute): 'abc' is not valid"),
    ("0 0 * FOO *", {}, "field 4 (month): 'FOO' is not valid"),
    ("0 0 * * MONDAY", {}, "field 5 (day of week): 'MONDAY' is not valid"),
    ("1-5-7 * * * *", {}, "field 1 (minute)"),
    ("5,,6 * * * *", {}, "field 1 (minute)"),
    ("R * * * *", {}, "random (R)"),
    ("0 H * * *", {}, "field 2 (hour): 'H': hashed (H)"),
    ("0 0 30 2 *", {}, "never fires"),
    ("0 0 31 4 *", {}, "never fires"),
    ("0 0 31 2,4,6,9,11 *", {}, "never fires"),
    ("*/10 * * * * *", {"min_interval_s": 60}, "fires 10 s apart"),
    ("*/10 * * * * *", {"min_interval_s": 10.5}, "the minimum interval is 10.5 s"),
    ("* * * * *", {"min_interval_s": 120}, "fires 60 s apart"),
    ("0,59 * * * *", {"min_interval_s": 120}, "fires 60 s apart"),  # 00:59 -> 01:00
    ("58,59 59 * * * *", {"min_interval_s": 2}, "fires 1 s apart"),
    # 23:00 one day, 00:00 the next: an hour apart across midnight.
    ("0 0,23 * * *", {"min_interval_s": 7200}, "fires 3600 s apart"),
]


@pytest.mark.parametrize(("expression", "options", "reason"), REJECTED)
def test_rejected_expression_says_why(
    expression: str, options: dict[str, float], reason: str
) -> None:
    with pytest.raises(InvalidCronExpression, match=re.escape(reason)):
        parse_schedule(expression, **options)


@pytest.mark.parametrize(
    ("expression", "min_interval_s"),
    [
        ("*/10 * * * * *", 1.0),  # whole-second ticks: nothing is too frequent at 1 s
        ("* * * * * *", 1.0),
        ("*/10 * * * * *", 10.0),
        ("0 * * * * *", 60.0),
        ("* * * * *", 60.0),
        ("0 0,23 1 * *", 7200.0),  # only on the 1st: never two days running
        ("0 0 * * *", 86_400.0),
    ],
)
def test_frequent_enough_expression_is_accepted(expression: str, min_interval_s: float) -> None:
    parse_schedule(expression, min_interval_s=min_interval_s)


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "", "utc", "Europe", "../etc/passwd", "localtime", "Europe/Berlin "]
)
def test_unknown_timezone_is_rejected(name: str) -> None:
    with pytest.raises(InvalidTimezone, match="unknown time zone"):
        parse_schedule("* * * * *", name)
    with pytest.raises(InvalidTimezone):
        load_timezone(name)


def test_timezone_is_loaded() -> None:
    assert load_timezone("Asia/Kolkata").utcoffset(datetime(2026, 1, 1)) == timedelta(
        hours=5, minutes=30
    )


# --- next_after ------------------------------------------------------------------------

NEXT_AFTER = [
    # (expression, zone, after, expected)
    ("*/15 * * * *", "UTC", utc(2026, 1, 1, 10, 15), utc(2026, 1, 1, 10, 30)),  # on a tick
    ("*/15 * * * *", "UTC", utc(2026, 1, 1, 10, 14, 59, 999_999), utc(2026, 1, 1, 10, 15)),
    ("*/15 * * * *", "UTC", utc(2026, 1, 1, 10, 15, 0, 1), utc(2026, 1, 1, 10, 30)),
    ("* * * * * *", "UTC", utc(2026, 1, 1, 10, 15, 0, 500_000), utc(2026, 1, 1, 10, 15, 1)),
    ("* * * * * *", "UTC", utc(2026, 12, 31, 23, 59, 59), utc(2027, 1, 1)),
    ("0 9 * * *", "Asia/Tokyo", utc(2026, 6, 1, 12), utc(2026, 6, 2, 0)),  # UTC+9
    ("0 0 * * *", "Asia/Kolkata", utc(2026, 6, 1, 12), utc(2026, 6, 1, 18, 30)),  # UTC+5:30
    ("0 9 * * *", "America/New_York", utc(2026, 7, 1), utc(2026, 7, 1, 13)),  # EDT, UTC-4
    ("0 9 * * *", "America/New_York", utc(2026, 1, 1), utc(2026, 1, 1, 14)),  # EST, UTC-5
    # Local date decides the day: Friday 23:30 in Los Angeles (UTC-7) is Saturday in UTC.
    ("30 23 * * FRI", "America/Los_Angeles", utc(2026, 6, 15), utc(2026, 6, 20, 6, 30)),
    ("0 0 1 * *", "Pacific/Auckland", utc(2026, 6, 15), utc(2026, 6, 30, 12)),  # NZST, UTC+12
]


@pytest.mark.parametrize(("expression", "zone", "after", "expected"), NEXT_AFTER)
def test_next_after_is_the_first_fire_strictly_after(
    expression: str, zone: str, after: datetime, expected: datetime
) -> None:
    fire = parse_schedule(expression, zone).next_after(after)
    assert fire == expected
    assert fire.tzinfo is UTC
    assert fire.microsecond == 0
    assert fire > after


@pytest.mark.parametrize(
    "after",
    [
        datetime(2026, 6, 1, 12, 0, tzinfo=ZoneInfo("Europe/Berlin")),
        datetime(2026, 6, 1, 5, 0, tzinfo=ZoneInfo("America/Chicago")),  # CDT, UTC-5
        utc(2026, 6, 1, 10),
    ],
)
def test_next_after_accepts_any_zone_for_after(after: datetime) -> None:
    # All three are 10:00 UTC.
    assert parse_schedule("0 * * * *").next_after(after) == utc(2026, 6, 1, 11)


def test_next_after_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("* * * * *").next_after(datetime(2026, 1, 1))


def test_next_n_and_iter_after_are_successive_next_after() -> None:
    schedule = parse_schedule("7,37 */5 * * *", "Europe/Berlin")
    fires = schedule.next_n(utc(2026, 10, 24), 20)
    stepped, after = [], utc(2026, 10, 24)
    for _ in range(20):
        after = schedule.next_after(after)
        stepped.append(after)
    assert fires == stepped
    assert all(a < b for a, b in itertools.pairwise(fires))


@pytest.mark.parametrize(
    ("expression", "zone", "after"),
    [
        ("* * * * *", "UTC", utc(9999, 12, 31, 23, 59, 59)),
        ("0 0 1 1 *", "UTC", utc(9999, 6, 1)),
        ("* * * * *", "Asia/Tokyo", utc(9999, 12, 31, 20)),  # already year 10000 there
        ("30 23 31 12 *", "America/New_York", utc(9999, 12, 31)),  # 04:30 UTC in year 10000
    ],
)
def test_no_fire_after_the_end_of_the_calendar(expression: str, zone: str, after: datetime) -> None:
    schedule = parse_schedule(expression, zone)
    with pytest.raises(CalendarEnds, match="9999"):
        schedule.next_after(after)
    assert schedule.next_n(after, 5) == []


def test_next_n_stops_where_the_calendar_ends() -> None:
    fires = parse_schedule("0 0 * * *").next_n(utc(9999, 12, 28), 10)
    assert fires == [utc(9999, 12, 29), utc(9999, 12, 30), utc(9999, 12, 31)]


def test_fires_from_the_first_day_of_the_calendar() -> None:
    assert parse_schedule("0 0 * * *").next_after(utc(1, 1, 1)) == utc(1, 1, 2)
    with pytest.raises(BeforeCalendar, match="America/New_York"):
        parse_schedule("0 0 * * *", "America/New_York").next_after(utc(1, 1, 1))


def test_unvalidated_schedule_reports_a_bad_expression() -> None:
    with pytest.raises(InvalidCronExpression, match="out of range"):
        CronSchedule("0 25 * * *", "UTC").next_after(utc(2026, 1, 1))


# --- day of month and day of week --------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "matches"),
    [
        # Both restricted: either one matches (Vixie/Debian).
        ("0 0 13 * 5", lambda d: d.day == 13 or d.weekday() == 4),
        ("0 0 1,15 * MON", lambda d: d.day in (1, 15) or d.weekday() == 0),
        # One starts with '*': both must match.
        ("0 0 */2 * 1", lambda d: d.day % 2 == 1 and d.weekday() == 0),
        ("0 0 13 * *", lambda d: d.day == 13),
        ("0 0 * * 5", lambda d: d.weekday() == 4),
    ],
)
def test_day_of_month_and_day_of_week(expression: str, matches: Callable[[date], bool]) -> None:
    start = date(2026, 1, 1)
    expected = [
        utc(day.year, day.month, day.day)
        for day in (start + timedelta(days=n) for n in range(365))
        if matches(day)
    ]
    schedule = parse_schedule(expression)
    assert fires_between(schedule, utc(2026, 1, 1), utc(2027, 1, 1)) == expected


def test_friday_the_13th_fires_once() -> None:
    # 2026-02-13 is a Friday: both sides match, one fire.
    fires = parse_schedule("0 0 13 * 5").next_n(utc(2026, 2, 5), 3)
    assert fires == [utc(2026, 2, 6), utc(2026, 2, 13), utc(2026, 2, 20)]


# --- DST -----------------------------------------------------------------------------------

BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"
BERLIN_SPRING, BERLIN_FALL = date(2026, 3, 29), date(2026, 10, 25)  # 02:00->03:00, 03:00->02:00
NY_SPRING, NY_FALL = date(2026, 3, 8), date(2026, 11, 1)  # 02:00->03:00, 02:00->01:00

FIXED_TIME_DST = [
    # Berlin spring: 02:30 does not exist; once at 03:00 CEST = 01:00 UTC.
    ("30 2 * * *", BERLIN, BERLIN_SPRING, [utc(2026, 3, 29, 1)]),
    ("0 2 * * *", BERLIN, BERLIN_SPRING, [utc(2026, 3, 29, 1)]),
    ("0,30 2 * * *", BERLIN, BERLIN_SPRING, [utc(2026, 3, 29, 1)]),
    ("0 30 2 * * *", BERLIN, BERLIN_SPRING, [utc(2026, 3, 29, 1)]),
    ("30 3 * * *", BERLIN, BERLIN_SPRING, [utc(2026, 3, 29, 1, 30)]),  # 03:30 CEST exists
    # Berlin fall: 02:30 happens at CEST (00:30 UTC) and CET (01:30 UTC); the first only.
    ("30 2 * * *", BERLIN, BERLIN_FALL, [utc(2026, 10, 25, 0, 30)]),
    ("0 30 2 * * *", BERLIN, BERLIN_FALL, [utc(2026, 10, 25, 0, 30)]),
    ("0,30 2 * * *", BERLIN, BERLIN_FALL, [utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30)]),
    ("30 1 * * *", BERLIN, BERLIN_FALL, [utc(2026, 10, 24, 23, 30)]),  # 01:30 CEST
    # New York spring: 02:30 EST does not exist; once at 03:00 EDT = 07:00 UTC.
    ("30 2 * * *", NEW_YORK, NY_SPRING, [utc(2026, 3, 8, 7)]),
    ("0 2 * * *", NEW_YORK, NY_SPRING, [utc(2026, 3, 8, 7)]),
    ("0 30 2 * * *", NEW_YORK, NY_SPRING, [utc(2026, 3, 8, 7)]),
    # New York fall: 02:00 EDT becomes 01:00 EST, so 01:00-01:59 repeats and 02:30
    # happens once, in EST (UTC-5): 07:30 UTC.
    ("30 2 * * *", NEW_YORK, NY_FALL, [utc(2026, 11, 1, 7, 30)]),
    ("0 30 2 * * *", NEW_YORK, NY_FALL, [utc(2026, 11, 1, 7, 30)]),
    # 01:30 repeats: EDT (05:30 UTC) first, EST (06:30 UTC) not.
    ("30 1 * * *", NEW_YORK, NY_FALL, [utc(2026, 11, 1, 5, 30)]),
]


@pytest.mark.parametrize(("expression", "zone", "day", "expected"), FIXED_TIME_DST)
def test_fixed_time_schedule_fires_once_on_a_dst_day(
    expression: str, zone: str, day: date, expected: list[datetime]
) -> None:
    assert fires_on_local_day(parse_schedule(expression, zone), day) == expected


def every(start: datetime, step: timedelta, count: int) -> list[datetime]:
    return [start + n * step for n in range(count)]


QUARTER, HOUR = timedelta(minutes=15), timedelta(hours=1)
WILDCARD_DST = [
    # Local midnight to midnight is 23 h in spring and 25 h in fall; a wildcard schedule
    # keeps elapsed time, so it fires every 15 min (or hour) of it, gap or repeat.
    # Berlin spring: 00:00 CET = 23:00 UTC the day before; no 02:xx ticks.
    ("*/15 * * * *", BERLIN, BERLIN_SPRING, every(utc(2026, 3, 28, 23), QUARTER, 92)),
    ("30 * * * *", BERLIN, BERLIN_SPRING, every(utc(2026, 3, 28, 23, 30), HOUR, 23)),
    # Berlin fall: 00:00 CEST = 22:00 UTC; 02:30 fires at 00:30 and 01:30 UTC.
    ("*/15 * * * *", BERLIN, BERLIN_FALL, every(utc(2026, 10, 24, 22), QUARTER, 100)),
    ("30 * * * *", BERLIN, BERLIN_FALL, every(utc(2026, 10, 24, 22, 30), HOUR, 25)),
    # New York spring: 00:00 EST = 05:00 UTC.
    ("*/15 * * * *", NEW_YORK, NY_SPRING, every(utc(2026, 3, 8, 5), QUARTER, 92)),
    ("30 * * * *", NEW_YORK, NY_SPRING, every(utc(2026, 3, 8, 5, 30), HOUR, 23)),
    # New York fall: 00:00 EDT = 04:00 UTC.
    ("*/15 * * * *", NEW_YORK, NY_FALL, every(utc(2026, 11, 1, 4), QUARTER, 100)),
    ("30 * * * *", NEW_YORK, NY_FALL, every(utc(2026, 11, 1, 4, 30), HOUR, 25)),
    # Minute wildcard, hour fixed: no ticks when 02:xx is skipped, both passes when repeated.
    ("*/20 2 * * *", BERLIN, BERLIN_SPRING, []),
    ("*/20 2 * * *", BERLIN, BERLIN_FALL, every(utc(2026, 10, 25, 0), timedelta(minutes=20), 6)),
    ("*/20 1 * * *", NEW_YORK, NY_FALL, every(utc(2026, 11, 1, 5), timedelta(minutes=20), 6)),
]


@pytest.mark.parametrize(("expression", "zone", "day", "expected"), WILDCARD_DST)
def test_wildcard_schedule_keeps_elapsed_time_on_a_dst_day(
    expression: str, zone: str, day: date, expected: list[datetime]
) -> None:
    fires = fires_on_local_day(parse_schedule(expression, zone), day)
    assert fires == expected
    local_hours = {fire.astimezone(ZoneInfo(zone)).hour for fire in fires}
    if day in (BERLIN_SPRING, NY_SPRING):
        assert 2 not in local_hours  # the gap has no ticks


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        # Late in the first pass of Berlin's repeated hour (02:50 CEST), the next quarter
        # is the start of the second pass (02:00 CET), not 03:00.
        ("*/15 * * * *", BERLIN, utc(2026, 10, 25, 0, 50), utc(2026, 10, 25, 1)),
        ("*/15 * * * *", BERLIN, utc(2026, 10, 25, 1, 50), utc(2026, 10, 25, 2)),
        ("* * * * * *", BERLIN, utc(2026, 10, 25, 0, 59, 59), utc(2026, 10, 25, 1)),
        ("* * * * * *", BERLIN, utc(2026, 3, 29, 0, 59, 59), utc(2026, 3, 29, 1)),
        # In the second pass (02:10 CET) a fixed 02:30 has already fired: next is tomorrow.
        ("30 2 * * *", BERLIN, utc(2026, 10, 25, 1, 10), utc(2026, 10, 26, 1, 30)),
        # Just before the gap, a fixed 02:30 fires at its end.
        ("30 2 * * *", BERLIN, utc(2026, 3, 29, 0, 59, 59), utc(2026, 3, 29, 1)),
        ("30 2 * * *", BERLIN, utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)),
    ],
)
def test_next_after_around_a_transition(
    expression: str, zone: str, after: datetime, expected: datetime
) -> None:
    assert parse_schedule(expression, zone).next_after(after) == expected


def _field_matches(field: str, value: int) -> bool:
    """Plain cron fields only: '*', '*/n', 'a', 'a-b' and lists of them."""
    for item in field.split(","):
        base, _, step = item.partition("/")
        low, _, high = base.partition("-")
        first, last = (0, 59) if base == "*" else (int(low), int(high or low))
        if first <= value <= last and (value - first) % int(step or 1) == 0:
            return True
    return False


def oracle(expression: str, zone_name: str, start: datetime, end: datetime) -> list[datetime]:
    """Debian cron's DST rules applied by walking elapsed time, one tick at a time."""
    fields = expression.split()
    second = fields[0] if len(fields) == 6 else "0"
    minute, hour = fields[-5], fields[-4]
    fixed = not minute.startswith("*") and not hour.startswith("*")
    step = timedelta(seconds=1 if len(fields) == 6 else 60)
    zone = ZoneInfo(zone_name)

    def matches(wall: datetime) -> bool:
        return (
            _field_matches(second, wall.second)
            and _field_matches(minute, wall.minute)
            and _field_matches(hour, wall.hour)
        )

    fires, instant = [], start
    previous = (start - step).astimezone(zone).replace(tzinfo=None)
    while instant < end:
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None)
        hit = matches(wall) and (not fixed or local.fold == 0)
        skipped = previous + step
        while fixed and skipped < wall:  # the clock jumped over these wall times
            hit = hit or matches(skipped)
            skipped += step
        if hit:
            fires.append(instant)
        previous, instant = wall, instant + step
    return fires


TRANSITIONS = [
    (BERLIN, utc(2026, 3, 29, 1)),
    (BERLIN, utc(2026, 10, 25, 1)),
    (NEW_YORK, utc(2026, 3, 8, 7)),
    (NEW_YORK, utc(2026, 11, 1, 6)),
    ("Australia/Lord_Howe", utc(2026, 4, 4, 15)),  # a 30-minute shift, back
    ("Australia/Lord_Howe", utc(2026, 10, 3, 15, 30)),  # and forward
    ("Antarctica/Troll", utc(2026, 3, 29, 1)),  # a 2-hour shift, forward
    ("Antarctica/Troll", utc(2026, 10, 25, 1)),  # and back
]
MINUTE_EXPRESSIONS = [
    "30 2 * * *",
    "0 2 * * *",
    "0,30 1,2 * * *",
    "45 1,2,3 * * *",
    "15 0-5 * * *",
    "*/15 * * * *",
    "30 * * * *",
    "59 * * * *",
    "*/7 1-2 * * *",
    "0 */2 * * *",
]
SECOND_EXPRESSIONS = ["* * * * * *", "0 30 2 * * *", "*/20 59 1 * * *", "30 0-59 1-2 * * *"]


def _matches_oracle(expression: str, zone: str, start: datetime, end: datetime) -> None:
    assert (
        start.astimezone(ZoneInfo(zone)).utcoffset() != end.astimezone(ZoneInfo(zone)).utcoffset()
    )
    fires = fires_between(parse_schedule(expression, zone), start, end)
    assert fires == oracle(expression, zone, start, end)


@pytest.mark.parametrize(("zone", "change"), TRANSITIONS)
@pytest.mark.parametrize("expression", MINUTE_EXPRESSIONS)
def test_minute_schedule_matches_the_oracle_across_a_transition(
    expression: str, zone: str, change: datetime
) -> None:
    _matches_oracle(expression, zone, change - timedelta(hours=14), change + timedelta(hours=14))


@pytest.mark.parametrize(("zone", "change"), TRANSITIONS)
@pytest.mark.parametrize("expression", SECOND_EXPRESSIONS)
def test_second_schedule_matches_the_oracle_across_a_transition(
    expression: str, zone: str, change: datetime
) -> None:
    _matches_oracle(expression, zone, change - timedelta(hours=1), change + timedelta(hours=1))


# --- the shared cache ----------------------------------------------------------------------


def test_next_after_is_computed_once_per_expression_zone_and_instant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    real = cron._wall_next

    def counting(compiled: cron._Compiled, wall: datetime) -> datetime:
        nonlocal calls
        calls += 1
        return real(compiled, wall)

    monkeypatch.setattr(cron, "_wall_next", counting)
    cron._next_fire.cache_clear()
    one = CronSchedule("*/5 * * * *", "Europe/Berlin")
    other = CronSchedule("*/5 * * * *", "Europe/Berlin")
    assert one is not other
    tick = utc(2026, 6, 1, 10, 2)

    first = one.next_after(tick)
    computed = calls
    assert first == utc(2026, 6, 1, 10, 5)
    assert computed >= 1
    assert one.next_after(tick) == first
    assert other.next_after(tick) == first
    assert other.next_after(tick.astimezone(ZoneInfo("Asia/Tokyo"))) == first  # same instant
    assert calls == computed

    assert one.next_after(tick + timedelta(minutes=5)) == utc(2026, 6, 1, 10, 10)
    assert calls > computed
    assert CronSchedule("*/5 * * * *", "UTC").next_after(tick) == first
    assert calls > computed + 1  # another zone is another computation


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # 3600 matching wall times in Berlin's spring gap (02:00:00-02:59:59) have no tick.
        ("* * * * * *", utc(2026, 3, 29, 0, 59, 59), utc(2026, 3, 29, 1)),
        # In the second pass of 02:00-02:59 (fall), a fixed schedule has fired already
        # for each of its 3600 matches: the next is 02:00:00 CET the next day.
        ("* 0-59 2 * * *", utc(2026, 10, 25, 1), utc(2026, 10, 26, 1)),
    ],
)
def test_a_gap_or_repeat_is_passed_in_one_step(
    monkeypatch: pytest.MonkeyPatch, expression: str, after: datetime, expected: datetime
) -> None:
    schedule = parse_schedule(expression, BERLIN)
    calls = 0
    real = cron._wall_next

    def counting(compiled: cron._Compiled, wall: datetime) -> datetime:
        nonlocal calls
        calls += 1
        return real(compiled, wall)

    monkeypatch.setattr(cron, "_wall_next", counting)
    cron._next_fire.cache_clear()
    assert schedule.next_after(after) == expected
    assert calls <= 3
