"""What one job taken from the index owes at an instant, however long it was
overdue: the ticks to fire, those to record MISSED, and those left without a
record. Bounded work: ticks past their grace are walked up to
`max_missed_records`, the rest counted (at most `MAX_COUNTED`) and jumped over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cronsvc.cron import CronSchedule
from cronsvc.domain import Job, Trigger
from cronsvc.jobheap import Entry
from cronsvc.misfire import MIN_GRACE_S, plan_due_ticks

MAX_COUNTED = 1000
"""Unrecorded missed ticks counted one by one, then jumped over: a week-long
outage of an every-second job must not stall the loop."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Unrecorded:
    job_id: str
    count: int
    at_least: bool  # counting stopped at `MAX_COUNTED`: there were more
    jumped: bool
    """Ticks past `max_missed_records` jumped over (True), or ticks within
    the grace beyond those a catch-up keeps (False)."""


def due_ticks(
    job: Job,
    entry: Entry,
    now: datetime,
    started_at: datetime,
    max_missed: int,
    max_catchup: int,
    missed: list[tuple[Job, list[datetime]]],
    unrecorded: list[Unrecorded],
) -> list[tuple[datetime, Trigger]]:
    """The ticks to fire; those to record MISSED go to `missed`, those left
    without a record to `unrecorded`. The entry moves on past `now`. Ticks due
    before `started_at` count as after a restart then."""
    plan = entry.plan
    schedule = plan.schedule
    horizon = now - timedelta(seconds=max(plan.misfire_grace_seconds, MIN_GRACE_S))
    ticks: list[datetime] = []
    tick = entry.next_tick
    while tick < horizon and len(ticks) < max_missed:
        ticks.append(tick)
        tick = schedule.next_after(tick)
    if tick < horizon:
        tick = _skip_unrecorded(job.id, schedule, tick, horizon, unrecorded)
    # Within the grace (or, taken ahead of its instant, not yet due): what
    # the policy may fire, the latest kept.
    recent: list[datetime] = []
    while tick <= now or not (ticks or recent):
        recent.append(tick)
        tick = schedule.next_after(tick)
        if len(recent) > MAX_COUNTED:
            break
    if tick <= now:
        tick = _skip_unrecorded(job.id, schedule, tick, now + timedelta(milliseconds=1), unrecorded)
    entry.next_tick = tick
    keep = max_missed + max_catchup
    if len(recent) > keep:
        unrecorded.append(
            Unrecorded(job_id=job.id, count=len(recent) - keep, at_least=False, jumped=False)
        )
    ticks += recent[-keep:]
    split = plan_due_ticks(
        ticks,
        now=now,
        started_at=started_at,
        policy=plan.misfire_policy,
        grace_s=plan.misfire_grace_seconds,
        max_catchup=max_catchup,
    )
    if split.missed:
        missed.append((job, split.missed))
    return split.fire


def _skip_unrecorded(
    job_id: str,
    schedule: CronSchedule,
    tick: datetime,
    until: datetime,
    unrecorded: list[Unrecorded],
) -> datetime:
    """The first tick at or after `until`, those before it counted."""
    counted = 0
    while tick < until and counted < MAX_COUNTED:
        counted += 1
        tick = schedule.next_after(tick)
    at_least = tick < until
    unrecorded.append(Unrecorded(job_id=job_id, count=counted, at_least=at_least, jumped=True))
    if at_least:
        tick = schedule.next_after(until - timedelta(milliseconds=1))
    return tick
