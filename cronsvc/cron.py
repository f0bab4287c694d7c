"""Cron expressions: validation and fire instants, as DESIGN.md ("Cron expressions") states.

The only module that imports croniter. croniter is asked for one thing: the next
local wall-clock time that matches, computed on naive datetimes so that it never
sees a time zone. This module turns wall-clock matches into UTC instants with
Debian cron's DST rules, and shares the results between jobs.

DST, in short. A wall time in the spring-forward gap does not exist: a fixed-time
schedule fires once at the end of the gap, a wildcard schedule not at all. A wall
time in the fall-back overlap exists twice: a fixed-time schedule fires at the
first occurrence only, a wildcard schedule at both.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
import threading
import zoneinfo
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import CroniterBadDateError, CroniterError, croniter

from cronsvc.errors import BeforeCalendar, CalendarEnds, InvalidCronExpression, InvalidTimezone

__all__ = ["CronSchedule", "load_timezone", "parse_schedule"]

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_SECOND_FIELD = ("second", 0, 59)
_FIVE_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
# Split like croniter does: a no-break space is not a field separator.
_FIELD_RE = re.compile(r"\S+", re.ASCII)
_NUMBER_RE = re.compile(r"[0-9]+")
_EQUAL_RANGE_RE = re.compile(r"(\w+)-(\w+)(?:/[0-9]+)?", re.ASCII)
# croniter's H (hashed) needs a per-job seed and R (random) differs per process:
# both would give instances of one cluster different schedules.
_HASH_OR_RANDOM_RE = re.compile(r"[hr](?:\(|/|$)", re.IGNORECASE)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_YEAR = datetime.max.year
_SECOND = timedelta(seconds=1)
_DAY_S = 86_400
CACHED_SCHEDULES = 65_536
"""Distinct (expression, zone) pairs kept parsed. A scheduler loads every job
at start-up: with more distinct schedules than the cache holds, each load
parses again (the figures: BENCHMARKS.md, "Why the constants are what they
are")."""
# A fixed start keeps validation deterministic; 50 years is croniter's own bound
# and covers the rarest dates (29 February on a fifth Monday recurs every 28 years).
_REFERENCE = datetime(2024, 1, 1)
_SEARCH_YEARS = 50

# A croniter object keeps its position between calls; one is shared per expression.
_croniter_lock = threading.Lock()


@functools.cache
def _zone_names() -> frozenset[str]:
    # available_timezones() leaves out the posix/ and right/ trees; "localtime" is the
    # host's own setting, which would differ between instances.
    return frozenset(zoneinfo.available_timezones() - {"localtime"})


@functools.lru_cache(maxsize=1024)
def load_timezone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone `name`; raises InvalidTimezone for anything else."""
    if name in _zone_names():
        with contextlib.suppress(zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            return zoneinfo.ZoneInfo(name)
    raise InvalidTimezone(
        f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin' or 'UTC'"
    )


@dataclass(frozen=True, slots=True)
class _Compiled:
    fields: tuple[str, ...]  # the user's order, macros expanded
    fixed_time: bool
    matcher: croniter[datetime]

    @property
    def text(self) -> str:
        return " ".join(self.fields)


def _single_value(item: str) -> str:
    # croniter reads an equal range ("3-3", "MON-mon", "1-1/2") as the whole field;
    # cron means the one value.
    match = _EQUAL_RANGE_RE.fullmatch(item)
    if match is None:
        return item
    low, high = match[1], match[2]
    same = (
        int(low) == int(high)
        if _NUMBER_RE.fullmatch(low) and _NUMBER_RE.fullmatch(high)
        else low.lower() == high.lower()
    )
    return low if same else item


def _check_field(position: int, spec: tuple[str, int, int], value: str, count: int) -> None:
    name, low, high = spec
    where = f"field {position} ({name})"
    for item in value.split(","):
        if _HASH_OR_RANDOM_RE.match(item):
            raise InvalidCronExpression(
                f"{where}: {item!r}: hashed (H) and random (R) values are not supported"
            )
        base, _, step = item.partition("/")
        if _NUMBER_RE.fullmatch(step) and int(step) == 0:
            raise InvalidCronExpression(f"{where}: {item!r}: a step must be at least 1")
        for bound in base.split("-"):
            if _NUMBER_RE.fullmatch(bound) and not low <= int(bound) <= high:
                raise InvalidCronExpression(f"{where}: {int(bound)} is out of range {low}-{high}")
    # Let croniter judge the field alone, so that its verdict names this field.
    probe = ["*"] * count
    probe[position - 1] = value
    try:
        croniter.expand(" ".join(probe), second_at_beginning=count == 6)
    except (CroniterError, ValueError, TypeError) as exc:
        raise InvalidCronExpression(
            f"{where}: {value!r} is not valid; use numbers, names (JAN, MON), '*', "
            "ranges a-b, lists a,b and steps /n"
        ) from exc


@functools.lru_cache(maxsize=CACHED_SCHEDULES)
def _compile(expression: str) -> _Compiled:
    text = expression.strip()
    if not text:
        raise InvalidCronExpression("the expression is empty")
    if text.startswith("@"):
        if text not in _MACROS:
            raise InvalidCronExpression(
                f"unknown macro {text!r}; the macros are {', '.join(_MACROS)}"
            )
        text = _MACROS[text]
    raw = _FIELD_RE.findall(text)
    if len(raw) not in (5, 6):
        raise InvalidCronExpression(
            f"expected 5 fields (minute hour day-of-month month day-of-week) or 6 "
            f"(second first), got {len(raw)}"
        )
    fields = tuple(",".join(_single_value(i) for i in f.split(",")) for f in raw)
    specs = (_SECOND_FIELD, *_FIVE_FIELDS) if len(fields) == 6 else _FIVE_FIELDS
    for position, (spec, value) in enumerate(zip(specs, fields, strict=True), start=1):
        _check_field(position, spec, value, len(fields))
    try:
        matcher = croniter(
            " ".join(fields),
            _REFERENCE,
            ret_type=datetime,
            second_at_beginning=len(fields) == 6,
            # Vixie/Debian: day of month OR day of week only when neither starts with '*'.
            implement_cron_bug=True,
            max_years_between_matches=_SEARCH_YEARS,
        )
    except (CroniterError, ValueError, TypeError) as exc:
        raise InvalidCronExpression(f"cannot parse {expression.strip()!r}: {exc}") from exc
    minute, hour = fields[-5], fields[-4]
    fixed = not minute.startswith("*") and not hour.startswith("*")
    return _Compiled(fields=fields, fixed_time=fixed, matcher=matcher)


def _wall_next(compiled: _Compiled, wall: datetime) -> datetime:
    """The first wall-clock match strictly after naive `wall`; the one place croniter runs."""
    with _croniter_lock:
        try:
            return compiled.matcher.get_next(datetime, start_time=wall)
        except CroniterBadDateError:
            raise _never_fires(compiled) from None
        except (OverflowError, ValueError):
            # croniter's arithmetic passes year 9999 as it searches ahead.
            if wall.year < _LAST_YEAR - _SEARCH_YEARS:
                raise
            raise _calendar_ends(compiled) from None


def _never_fires(compiled: _Compiled) -> InvalidCronExpression:
    return InvalidCronExpression(
        f"never fires: no time in {_SEARCH_YEARS} years matches {compiled.text!r}"
    )


def _calendar_ends(compiled: _Compiled) -> CalendarEnds:
    return CalendarEnds(f"no fire of {compiled.text!r} falls before the end of year {_LAST_YEAR}")


def _naive(instant: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _offset(local: datetime) -> timedelta:
    return local.utcoffset() or timedelta(0)


def _offset_change(zone: zoneinfo.ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The instant in (before, after] at which `zone` changes offset, to the second.

    The two whole-second instants are at most a few hours apart and have different
    offsets, so exactly one change lies between them.
    """
    target = _offset(after.astimezone(zone))
    low, high = (before - _EPOCH) // _SECOND, (after - _EPOCH) // _SECOND
    while high - low > 1:
        middle = (low + high) // 2
        if _offset((_EPOCH + middle * _SECOND).astimezone(zone)) == target:
            high = middle
        else:
            low = middle
    return _EPOCH + high * _SECOND


def _scan(
    compiled: _Compiled, zone: zoneinfo.ZoneInfo, after: datetime, wall: datetime
) -> datetime:
    """The earliest fire after `after` of the first wall-clock match past `wall` that has one."""
    horizon = wall.year + _SEARCH_YEARS
    while wall.year < horizon:
        wall = _wall_next(compiled, wall)
        first = wall.replace(tzinfo=zone, fold=0)
        second = wall.replace(tzinfo=zone, fold=1)
        if _offset(first) == _offset(second):
            fires = [first.astimezone(UTC)]
        elif _offset(first) > _offset(second):
            # Fall-back overlap; fold=0 is the earlier occurrence.
            fires = [first.astimezone(UTC)]
            if not compiled.fixed_time:
                fires.append(second.astimezone(UTC))
            elif fires[0] <= after:
                # `after` is in the second pass: skip to where the overlap ends.
                change = _offset_change(zone, fires[0], second.astimezone(UTC))
                end = (change + _offset(first)).replace(tzinfo=None)
                wall = max(wall, end - _SECOND)
                continue
        else:
            # Spring-forward gap; fold=0 uses the offset before it, so it is the later instant.
            change = _offset_change(zone, second.astimezone(UTC), first.astimezone(UTC))
            if compiled.fixed_time:
                fires = [change]
            else:
                wall = max(wall, _naive(change, zone) - _SECOND)
                continue
        later = [fire for fire in fires if fire > after]
        if later:
            return min(later)
    raise _never_fires(compiled)


@functools.lru_cache(maxsize=16_384)
def _next_fire(expression: str, timezone: str, after_s: int) -> datetime:
    # Fires are whole seconds, so the first fire after `after` is the first one after
    # `after` rounded down to the second: the cache key needs no finer instant.
    compiled = _compile(expression)
    zone = load_timezone(timezone)
    after = _EPOCH + after_s * _SECOND
    try:
        local = after.astimezone(zone)
    except OverflowError:
        if after.year == 1:
            raise BeforeCalendar(
                f"{after.time()} UTC on 1 January 1 is still year 0 in {timezone}"
            ) from None
        raise _calendar_ends(compiled) from None
    try:
        fire = _scan(compiled, zone, after, local.replace(tzinfo=None))
        repeat = local.replace(fold=1)
        if not compiled.fixed_time and local.fold == 0 and _offset(repeat) != _offset(local):
            # `after` is in the first pass of a fall-back overlap. The second pass comes later
            # in time but earlier on the wall clock, so the scan above cannot reach it.
            change = _offset_change(zone, after, repeat.astimezone(UTC))
            fire = min(fire, _scan(compiled, zone, after, _naive(change, zone) - _SECOND))
    except OverflowError:  # a wall time near the end of year 9999 that UTC cannot hold
        raise _calendar_ends(compiled) from None
    return fire


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A cron expression evaluated in an IANA time zone; build it with `parse_schedule`."""

    expression: str
    timezone: str

    @property
    def is_fixed_time(self) -> bool:
        """True if the minute and hour fields both start with something other than '*'."""
        return _compile(self.expression).fixed_time

    @property
    def has_seconds(self) -> bool:
        """True for a 6-field expression (seconds first)."""
        return len(_compile(self.expression).fields) == 6

    def next_after(self, after: datetime) -> datetime:
        """The first fire instant strictly after the aware datetime `after`.

        Returns an aware UTC datetime with microsecond 0. Results are cached per
        (expression, time zone, second), so jobs that share a schedule share the work.
        Raises `CalendarEnds` when no fire falls before the end of year 9999, and
        `BeforeCalendar` for an `after` whose time in the zone falls before year 1.
        """
        if after.utcoffset() is None:
            raise ValueError("`after` must be a timezone-aware datetime")
        return _next_fire(self.expression, self.timezone, (after - _EPOCH) // _SECOND)

    def iter_after(self, after: datetime) -> Iterator[datetime]:
        """Successive fire instants after `after`, strictly increasing, without end."""
        while True:
            after = self.next_after(after)
            yield after

    def next_n(self, after: datetime, n: int) -> list[datetime]:
        """The first `n` fire instants after `after`: fewer when the calendar
        ends first (`CalendarEnds`)."""
        fires: list[datetime] = []
        with contextlib.suppress(CalendarEnds):
            while len(fires) < n:
                after = self.next_after(after)
                fires.append(after)
        return fires


def _values(field: Sequence[int | str], low: int, high: int) -> list[int]:
    return list(range(low, high + 1)) if field == ["*"] else sorted(int(v) for v in field)


def _closest_gap_s(compiled: _Compiled, min_interval_s: float) -> float:
    """The smallest wall-clock gap between consecutive fires, exact below `min_interval_s`."""
    expanded, _ = croniter.expand(compiled.text, second_at_beginning=len(compiled.fields) == 6)
    seconds = _values(expanded[5], 0, 59) if len(expanded) == 6 else [0]
    minutes, hours = _values(expanded[0], 0, 59), _values(expanded[1], 0, 23)
    # Two consecutive fires of one day differ in the second, the minute or the hour:
    # the smallest step of that field less the spread of the fields below it.
    spread, gaps = 0, []
    for values, unit in ((seconds, 1), (minutes, 60), (hours, 3600)):
        steps = [b - a for a, b in itertools.pairwise(values)]
        if steps:
            gaps.append(min(steps) * unit - spread)
        spread += (values[-1] - values[0]) * unit
    gap = float(min(gaps, default=_DAY_S))
    if gap >= min_interval_s > _DAY_S - spread:
        # From one matching day's last fire to the next one's first: check a sample of days.
        dom, month, dow = compiled.fields[-3:]
        days = croniter(f"0 0 {dom} {month} {dow}", _REFERENCE, implement_cron_bug=True)
        starts = [days.get_next(datetime) for _ in range(64)]
        day_step = min((b - a).days for a, b in itertools.pairwise(starts))
        gap = min(gap, day_step * _DAY_S - spread)
    return gap


@functools.lru_cache(maxsize=CACHED_SCHEDULES)
def parse_schedule(
    expression: str, timezone: str = "UTC", *, min_interval_s: float = 1.0
) -> CronSchedule:
    """Validate `expression` in `timezone` and return its schedule.

    Raises InvalidTimezone, or InvalidCronExpression with the reason: unparsable,
    a field out of range, never fires, or fires more often than `min_interval_s`
    (judged on wall-clock spacing; a DST change may bring two fires closer once).
    """
    compiled = _compile(expression)
    load_timezone(timezone)
    schedule = CronSchedule(expression.strip(), timezone)
    schedule.next_after(_REFERENCE.replace(tzinfo=UTC))  # raises if it never fires
    gap = _closest_gap_s(compiled, min_interval_s)
    if gap < min_interval_s:
        raise InvalidCronExpression(
            f"fires {gap:g} s apart at its closest; the minimum interval is {min_interval_s:g} s"
        )
    return schedule
