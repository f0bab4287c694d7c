"""The tick ledger of a job: every tick it owed in a range, each with the
record that settled it (or none: a gap), and the records that settled no
owed tick.

Pure functions over the job's schedule history and its execution records,
so the rules are tested over a table of cases.

Rules:
- Revisions are taken in version order. Each is in force after the instant
  it took effect and before the next one's; instants are taken as never
  going back (a revision written on an instance whose clock lagged starts
  where the one before it started).
- An active revision owes the ticks of its expression in its zone (see
  `cronsvc.cron`, DST included) within its span; a paused one owes none. The
  instant a revision took effect is not its own tick, as a new or resumed
  job's first owed tick is its first one after that instant. A revision
  that no longer parses (its zone left the tz database) owes nothing.
- Only ticks in [since, until) are listed; the caller keeps `until` at or
  before now.
- When the history was trimmed (its oldest kept revision took effect after
  the job was created), what was owed before that revision is unknown: no
  gaps are listed there, and the ledger says it is incomplete.
- A record settles an owed tick when it is not a manual run and its
  `scheduled_at` is the tick (the store keeps at most one such record per
  tick). Manual runs are listed as `manual`; other records that settle no
  owed tick as `unscheduled` (a tick of a schedule changed since, a tick
  claimed just before a pause), or as `unknown` before the history starts.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cronsvc.cron import parse_schedule
from cronsvc.domain import Execution, ExecutionStatus, ScheduleRevision, Trigger
from cronsvc.errors import CronSvcError, TooManyTicks

MAX_TICKS = 1000
"""At most this many owed ticks in one ledger."""

_BEFORE = timedelta(microseconds=1)


class EntryKind(enum.StrEnum):
    TICK = "tick"
    """An owed tick and the record that settled it."""
    GAP = "gap"
    """An owed tick with no record."""
    MANUAL = "manual"
    """A manual run: owed by no schedule."""
    UNSCHEDULED = "unscheduled"
    """A scheduled record at an instant no revision owed."""
    UNKNOWN = "unknown"
    """A record from before the oldest kept revision: whether it was owed is
    not known."""


_ORDER = {kind: n for n, kind in enumerate(EntryKind)}


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerEntry:
    scheduled_at: datetime
    kind: EntryKind
    execution: Execution | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerSummary:
    ticks: int
    """Owed ticks listed."""
    by_status: dict[ExecutionStatus, int]
    """Owed ticks by the status of their record (every status, 0 included)."""
    gaps: int
    manual: int
    unscheduled: int
    unknown: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Ledger:
    since: datetime
    until: datetime
    known_from: datetime | None = None
    """When the history was trimmed: the instant its oldest kept revision
    took effect, before which owed ticks are not known. None when the whole
    history is kept."""
    entries: list[LedgerEntry] = field(default_factory=list)
    """Ascending by `scheduled_at`."""

    @property
    def complete(self) -> bool:
        """Whether every tick owed in the range is known."""
        return self.known_from is None or self.known_from <= self.since

    @property
    def summary(self) -> LedgerSummary:
        by_status = dict.fromkeys(ExecutionStatus, 0)
        kinds = dict.fromkeys(EntryKind, 0)
        for entry in self.entries:
            kinds[entry.kind] += 1
            if entry.kind is EntryKind.TICK and entry.execution is not None:
                by_status[entry.execution.status] += 1
        return LedgerSummary(
            ticks=kinds[EntryKind.TICK] + kinds[EntryKind.GAP],
            by_status=by_status,
            gaps=kinds[EntryKind.GAP],
            manual=kinds[EntryKind.MANUAL],
            unscheduled=kinds[EntryKind.UNSCHEDULED],
            unknown=kinds[EntryKind.UNKNOWN],
        )


def owed_ticks(
    history: Sequence[ScheduleRevision],
    *,
    since: datetime,
    until: datetime,
    limit: int = MAX_TICKS,
) -> list[datetime]:
    """The ticks the history owed in [since, until), ascending. Raises
    `TooManyTicks` when there are more than `limit`; the work is bounded by
    `limit` and the number of revisions, however wide the range."""
    revisions = sorted(history, key=lambda revision: revision.version)
    ticks: list[datetime] = []
    start = None
    for n, revision in enumerate(revisions):
        start = revision.effective_from if start is None else max(start, revision.effective_from)
        end = until
        if n + 1 < len(revisions):
            end = min(end, max(start, revisions[n + 1].effective_from))
        if not revision.is_active or end <= since:
            continue
        try:
            schedule = parse_schedule(revision.cron_expression, revision.timezone, min_interval_s=0)
        except CronSvcError:
            continue  # its zone left the tz database, say: it owes nothing here
        # (since - _BEFORE only when since is later: it may be the first instant there is)
        tick = schedule.next_after(start if start >= since else since - _BEFORE)
        while tick < end:
            if len(ticks) == limit:
                raise TooManyTicks(limit)
            ticks.append(tick)
            tick = schedule.next_after(tick)
    return ticks


def build_ledger(
    owed: Sequence[datetime],
    records: Iterable[Execution],
    *,
    history: Sequence[ScheduleRevision],
    created_at: datetime,
    since: datetime,
    until: datetime,
) -> Ledger:
    """Match the records (those of the job in [since, until)) to the ticks
    `owed_ticks` gave for the same history and range."""
    oldest = min(history, key=lambda revision: revision.version).effective_from
    known_from = oldest if oldest > created_at else None
    unsettled = set(owed)
    entries: list[LedgerEntry] = []
    for record in records:
        tick = record.scheduled_at
        if record.trigger is Trigger.MANUAL:
            kind = EntryKind.MANUAL
        elif tick in unsettled:
            unsettled.discard(tick)
            kind = EntryKind.TICK
        elif known_from is not None and tick < known_from:
            kind = EntryKind.UNKNOWN
        else:
            kind = EntryKind.UNSCHEDULED
        entries.append(LedgerEntry(scheduled_at=tick, kind=kind, execution=record))
    entries += [LedgerEntry(scheduled_at=tick, kind=EntryKind.GAP) for tick in unsettled]
    entries.sort(
        key=lambda e: (e.scheduled_at, _ORDER[e.kind], e.execution.id if e.execution else "")
    )
    return Ledger(since=since, until=until, known_from=known_from, entries=entries)
