"""What one job taken from the index owes at an instant, as a pure function:
ticks to fire, ticks to record MISSED, ticks counted without a record, and
where the job's next tick then is. Instants are seconds after `T0`, the job
ticks every second."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from cronsvc.domain import Job, MisfirePolicy, Trigger
from cronsvc.jobindex import MAX_COUNTED, Entry, PlanCache, Unrecorded, due_ticks, plan_key
from tests.helpers_store import T0, make_job

S, C = Trigger.SCHEDULE, Trigger.CATCHUP


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def entry_of(job: Job, next_tick: float) -> Entry:
    plan = PlanCache(min_interval_s=1.0).plan(plan_key(job))
    return Entry(plan, job.version, at(next_tick), job)


@pytest.mark.parametrize(
    ("policy", "next_tick", "now", "started", "fire", "missed", "then"),
    [
        # The tick now: fired, the next one after it.
        (MisfirePolicy.FIRE_ONCE, 10, 10, -60, [(10, S)], [], 11),
        # Taken ahead of its instant: that one tick, not yet due.
        (MisfirePolicy.FIRE_ONCE, 10, 9.8, -60, [(10, S)], [], 11),
        # Three due at once: the latest fired, the others coalesced MISSED.
        (MisfirePolicy.FIRE_ONCE, 8, 10, -60, [(10, S)], [8, 9], 11),
        # Under fire_all each fires; those due before the instance started
        # are catch-ups.
        (MisfirePolicy.FIRE_ALL, 8, 10, 9.5, [(8, C), (9, C), (10, S)], [], 11),
        # Under skip only a tick in the normal course fires.
        (MisfirePolicy.SKIP, 8, 10, -60, [], [8, 9, 10], 11),
    ],
)
def test_a_jobs_due_ticks_split_by_its_misfire_policy(
    policy: MisfirePolicy,
    next_tick: float,
    now: float,
    started: float,
    fire: list[tuple[float, Trigger]],
    missed: list[float],
    then: float,
) -> None:
    job = make_job(cron_expression="* * * * * *", misfire_policy=policy)
    entry = entry_of(job, next_tick)
    recorded: list[tuple[Job, list[datetime]]] = []
    unrecorded: list[Unrecorded] = []

    fired = due_ticks(job, entry, at(now), at(started), 1000, 10, recorded, unrecorded)

    assert fired == [(at(tick), trigger) for tick, trigger in fire]
    assert recorded == ([(job, [at(tick) for tick in missed])] if missed else [])
    assert unrecorded == []
    assert entry.next_tick == at(then)


def test_a_job_far_behind_costs_a_bounded_walk() -> None:
    """A day behind an every-second job: a few records, a bounded count, and
    the job jumps to its next tick after now."""
    job = make_job(cron_expression="* * * * * *", misfire_grace_seconds=10)
    entry = entry_of(job, 1)
    recorded: list[tuple[Job, list[datetime]]] = []
    unrecorded: list[Unrecorded] = []

    fired = due_ticks(job, entry, at(86_400), at(-60), 3, 10, recorded, unrecorded)

    assert fired == [(at(86_400), S)]
    assert recorded[0][1][:3] == [at(1), at(2), at(3)]
    assert unrecorded == [Unrecorded(job_id=job.id, count=MAX_COUNTED, at_least=True, jumped=True)]
    assert entry.next_tick == at(86_401)
