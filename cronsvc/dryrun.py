"""A dry run of a job write: which fields change, and how its next fires move.

Pure: the API asks it what a create, replace or patch would do, and writes
nothing. A job's fires are its schedule's next instants after the instant
its schedule runs from (none while it is paused). Two listings of fires are
compared over the span both cover: an instant in both is kept; between two
kept instants (or before the first, or after the last) the fires that only
the old listing has are paired in order with those only the new one has,
each pair a fire that moved; what is left over disappeared or appeared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cronsvc.cron import CronSchedule

SECRET_FIELD = "secret"
ALERT_SECRET_FIELD = "alerts.secret"


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One field that a write changes. `before` is absent (`has_before`
    False) for a job not yet created; a secret's values are never kept,
    only that it changes (`redacted`)."""

    field: str
    before: Any = None
    after: Any = None
    has_before: bool = True
    redacted: bool = False


def changes(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    *,
    secret_before: str | None,
    secret_after: str | None,
    alert_secret_before: str | None = None,
    alert_secret_after: str | None = None,
) -> list[Change]:
    """The fields of `after` (a job's writable fields, as sent on the wire)
    that differ from `before` (None for a create), in `after`'s order, and
    the secret, then the alert policy's secret, last if they change (a create
    that sets one changes it)."""
    found: list[Change] = []
    keys = list(after) + [k for k in (before or {}) if k not in after]
    for key in keys:
        new = after.get(key)
        if before is None:
            found.append(Change(field=key, after=new, has_before=False))
        elif before.get(key) != new or type(before.get(key)) is not type(new):
            found.append(Change(field=key, before=before.get(key), after=new))
    if secret_before != secret_after:
        found.append(Change(field=SECRET_FIELD, has_before=before is not None, redacted=True))
    if alert_secret_before != alert_secret_after:
        found.append(Change(field=ALERT_SECRET_FIELD, has_before=before is not None, redacted=True))
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class Fire:
    """A fire instant, in UTC and on the clocks of the job's zone.
    `dst_change`: the zone's offset differs from the previous fire's (from
    the starting instant's, for the first)."""

    utc: datetime
    local: datetime
    dst_change: bool


def fires(schedule: CronSchedule | None, after: datetime, count: int) -> list[Fire]:
    """The first `count` fires after `after` (none for None, a paused job;
    fewer when the calendar ends first)."""
    if schedule is None:
        return []
    zone = ZoneInfo(schedule.timezone)
    offset = after.astimezone(zone).utcoffset()
    listed = []
    for instant in schedule.next_n(after, count):
        local = instant.astimezone(zone)
        listed.append(Fire(utc=instant, local=local, dst_change=local.utcoffset() != offset))
        offset = local.utcoffset()
    return listed


@dataclass(frozen=True, slots=True, kw_only=True)
class Move:
    before: datetime
    after: datetime

    @property
    def by(self) -> timedelta:
        return self.after - self.before


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    moved: list[Move]
    appeared: list[datetime]
    disappeared: list[datetime]


def compare(
    before: Sequence[datetime], after: Sequence[datetime], *, until: datetime | None = None
) -> Comparison:
    """The fires of `before` and `after` (sorted instants) that move, appear
    or disappear, up to `until` inclusive (None: the listings are complete).
    Instants after `until` are ignored: one listing may not reach them."""
    old = {t for t in before if until is None or t <= until}
    new = {t for t in after if until is None or t <= until}
    moved: list[Move] = []
    appeared: list[datetime] = []
    disappeared: list[datetime] = []
    gone: list[datetime] = []
    came: list[datetime] = []

    def settle() -> None:
        moved.extend(Move(before=b, after=a) for b, a in zip(gone, came, strict=False))
        disappeared.extend(gone[len(came) :])
        appeared.extend(came[len(gone) :])
        gone.clear()
        came.clear()

    for instant in sorted(old | new):
        if instant in old and instant in new:
            settle()
        elif instant in old:
            gone.append(instant)
        else:
            came.append(instant)
    settle()
    return Comparison(moved=moved, appeared=appeared, disappeared=disappeared)


@dataclass(frozen=True, slots=True, kw_only=True)
class FirePlan:
    """The next fires before and after a write, and how they differ."""

    before: list[Fire]
    after: list[Fire]
    comparison: Comparison


def plan_fires(
    before: CronSchedule | None,
    before_from: datetime,
    after: CronSchedule | None,
    after_from: datetime,
    count: int,
) -> FirePlan:
    """The next `count` fires of each schedule (None: not firing) from its
    starting instant, and their comparison up to where both listings reach.
    The comparison is worked out over twice as many fires, so that a fire
    near the end of the listings pairs with the one it moved to beyond them."""
    old = fires(before, before_from, 2 * count)
    new = fires(after, after_from, 2 * count)
    shown_old, shown_new = old[:count], new[:count]
    comparison = compare(
        [f.utc for f in old], [f.utc for f in new], until=_reach(old, new, 2 * count)
    )
    shown_until = _reach(shown_old, shown_new, count)
    if shown_until is not None:
        comparison = Comparison(
            moved=[m for m in comparison.moved if min(m.before, m.after) <= shown_until],
            appeared=[t for t in comparison.appeared if t <= shown_until],
            disappeared=[t for t in comparison.disappeared if t <= shown_until],
        )
    return FirePlan(before=shown_old, after=shown_new, comparison=comparison)


def _reach(old: Sequence[Fire], new: Sequence[Fire], count: int) -> datetime | None:
    """How far both listings are known: the earlier of their last fires, a
    listing shorter than `count` (the calendar ended, or no schedule) being
    known to the end. None when both are."""
    ends = [listing[-1].utc for listing in (old, new) if len(listing) == count]
    return min(ends) if ends else None
