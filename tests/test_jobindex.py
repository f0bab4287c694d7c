"""The scheduler's job index as pure bookkeeping: instants go in as plain
numbers, what is due comes out as values. No loop, no store, no sleeping:
each case runs in milliseconds.

Instants are seconds after `T0`; every-second schedules make a tick of each
whole second."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

import pytest

from cronsvc.domain import ConcurrencyPolicy, Job, MisfirePolicy, Trigger
from cronsvc.errors import CronSvcError
from cronsvc.jobindex import MAX_COUNTED, JobIndex, Plan, Taken, Unrecorded
from cronsvc.ticks import DueTick
from tests.helpers_store import T0, make_job, schedule_of

EVERY_SECOND = "* * * * * *"
EVERY_MINUTE = "* * * * *"
DAILY = "0 0 * * *"
STARTED = T0 - timedelta(hours=1)  # the instance has been up an hour
CLAIM_LEAD = 0.2
READ_LEAD = 1.0
S, C = Trigger.SCHEDULE, Trigger.CATCHUP


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ts(seconds: float) -> float:
    return at(seconds).timestamp()


def offset(instant: datetime) -> float:
    return (instant - T0).total_seconds()


def new_index(**settings: Any) -> JobIndex:
    values: dict[str, Any] = {
        "min_interval_s": 1.0,
        "max_missed_records": 1000,
        "max_catchup": 10,
        "started_at": STARTED,
    }
    values.update(settings)
    return JobIndex(**values)


def job(cron: str = EVERY_SECOND, **spec: Any) -> Job:
    return make_job(cron_expression=cron, **spec)


def load(index: JobIndex, *jobs: Job, now: float = 0.0) -> None:
    for each in jobs:
        index.load(each, now_ts=ts(now), claim_lead=CLAIM_LEAD, read_lead=READ_LEAD)


def add_slim(index: JobIndex, *jobs: Job) -> None:
    """`jobs` put on the index slim, as a first sync's page does."""
    index.add_slim(
        [schedule_of(j) for j in jobs],
        sync=1,
        touched=set(),
        known={},
        claim_lead=CLAIM_LEAD,
        read_lead=READ_LEAD,
        refused=[],
    )


def take(
    index: JobIndex,
    now: float,
    *,
    claim_lead: float = CLAIM_LEAD,
    batch_size: int = 256,
    ahead_batch_size: int = 2048,
) -> Taken:
    return index.take_due(
        ts(now),
        claim_lead=claim_lead,
        read_lead=READ_LEAD,
        batch_size=batch_size,
        ahead_batch_size=ahead_batch_size,
    )


def fired(taken: Taken) -> list[tuple[float, Trigger]]:
    return [(offset(d.tick), d.trigger) for batch in taken.batches for d in batch]


def missed(taken: Taken) -> list[float]:
    return [offset(tick) for _, ticks in taken.missed for tick in ticks]


# --- when a tick is taken -----------------------------------------------------


@pytest.mark.parametrize(
    ("concurrency", "claim_lead", "now", "taken"),
    [
        # Claimed ahead of the tick (at 60) by the claim lead...
        (ConcurrencyPolicy.ALLOW, 0.2, 59.7, []),
        (ConcurrencyPolicy.ALLOW, 0.2, 59.8, [(60.0, S)]),
        (ConcurrencyPolicy.ALLOW, 2.0, 58.0, [(60.0, S)]),
        # ...or at the tick itself with a claim lead of 0...
        (ConcurrencyPolicy.ALLOW, 0.0, 59.9, []),
        (ConcurrencyPolicy.ALLOW, 0.0, 60.0, [(60.0, S)]),
        # ...and always at the tick under forbid and replace, whose claim must
        # see whether the last run ended.
        (ConcurrencyPolicy.FORBID, 0.2, 59.8, []),
        (ConcurrencyPolicy.FORBID, 0.2, 60.0, [(60.0, S)]),
        (ConcurrencyPolicy.REPLACE, 2.0, 59.9, []),
        (ConcurrencyPolicy.REPLACE, 2.0, 60.0, [(60.0, S)]),
    ],
)
def test_a_tick_is_taken_ahead_by_the_claim_lead_or_at_the_tick(
    concurrency: ConcurrencyPolicy,
    claim_lead: float,
    now: float,
    taken: list[tuple[float, Trigger]],
) -> None:
    index = new_index()
    minutely = job(EVERY_MINUTE, concurrency_policy=concurrency)
    index.load(minutely, now_ts=ts(0), claim_lead=claim_lead, read_lead=READ_LEAD)

    assert fired(take(index, now, claim_lead=claim_lead)) == taken


def test_a_taken_job_goes_back_on_the_heap_at_its_next_tick() -> None:
    index = new_index()
    load(index, job(EVERY_MINUTE))

    assert fired(take(index, 59.8)) == [(60.0, S)]
    assert fired(take(index, 100)) == []
    assert index.next_wake() == pytest.approx(ts(120 - CLAIM_LEAD))
    assert fired(take(index, 119.8)) == [(120.0, S)]


@pytest.mark.parametrize(
    ("now", "sizes"),
    [
        (1.0, [2, 2, 1]),  # due now: small batches, the first sent while others claim
        (0.8, [4, 1]),  # taken ahead of the tick: big batches
    ],
)
def test_ticks_due_now_go_in_small_batches_those_taken_ahead_in_big(
    now: float, sizes: list[int]
) -> None:
    index = new_index()
    load(index, *(job(name=f"job {n}") for n in range(5)))

    taken = take(index, now, batch_size=2, ahead_batch_size=4)

    assert [len(batch) for batch in taken.batches] == sizes
    assert {d.tick for batch in taken.batches for d in batch} == {at(1)}


# --- slim jobs ------------------------------------------------------------------


def test_a_slim_job_is_read_ahead_of_its_claim_then_taken_whole() -> None:
    """Added as a schedule (slim), a job comes off the heap the read lead
    before its claim, is handed out to be read, and fires once put back."""
    index = new_index()
    daily = job(DAILY)
    tick = 86_400.0
    add_slim(index, daily)

    assert take(index, tick - CLAIM_LEAD - READ_LEAD - 0.1).unread == []
    taken = take(index, tick - CLAIM_LEAD - READ_LEAD)
    assert fired(taken) == []
    [(job_id, entry)] = taken.unread
    assert job_id == daily.id and entry.job is None and entry.seq is None
    assert index.next_wake() is None  # off the heap while it is read

    assert index.put_back(job_id, entry, daily, claim_lead=CLAIM_LEAD)
    assert index.next_wake() == pytest.approx(ts(tick - CLAIM_LEAD))
    assert fired(take(index, tick - CLAIM_LEAD)) == [(tick, S)]


@pytest.mark.parametrize(
    ("read", "reload"),
    [
        ("same", False),
        ("gone", True),  # deleted or paused without a notice
        ("newer", True),  # changed without a notice
    ],
)
def test_a_slim_job_read_at_another_version_is_reloaded_instead(read: str, reload: bool) -> None:
    index = new_index()
    daily = job(DAILY)
    add_slim(index, daily)
    [(job_id, entry)] = take(index, 86_400).unread
    found = {"same": daily, "gone": None, "newer": dataclasses.replace(daily, version=2)}[read]

    assert index.put_back(job_id, entry, found, claim_lead=CLAIM_LEAD) is not reload
    assert (index.next_wake() is None) is reload


def test_a_slim_entry_replaced_while_read_is_left_to_its_replacement() -> None:
    index = new_index()
    daily = job(DAILY)
    add_slim(index, daily)
    [(job_id, entry)] = take(index, 86_400).unread
    newer = dataclasses.replace(daily, version=2, last_tick=at(86_399))
    load(index, newer, now=86_399)  # a notice reloaded it meanwhile

    assert index.put_back(job_id, entry, daily, claim_lead=CLAIM_LEAD)
    index.requeue([(job_id, entry)], ts(86_401))
    assert len(index.heap) == 1
    assert [d.job.version for d in take(index, 86_400).batches[0]] == [2]


def test_a_failed_read_puts_the_slim_entry_back_for_a_later_read() -> None:
    index = new_index()
    daily = job(DAILY)
    add_slim(index, daily)
    unread = take(index, 86_400).unread
    index.requeue(unread, ts(86_401))

    assert take(index, 86_400.9).unread == []
    assert take(index, 86_401).unread == unread


def test_a_job_far_from_its_next_tick_is_kept_slim() -> None:
    index = new_index()
    minutely, daily = job(EVERY_MINUTE), job(DAILY)
    load(index, minutely, daily)

    assert index.entries[minutely.id].job is minutely
    assert index.entries[daily.id].job is None


def test_jobs_alike_share_their_next_tick_and_a_notice_wins_over_a_page() -> None:
    """Within a page, jobs with one plan and one last tick compute their
    next tick once; a job a notice touched, one held at a newer version and
    one the settings refuse are not added."""
    index = new_index(min_interval_s=60.0)
    alike = [job(EVERY_MINUTE, name=f"alike {n}") for n in range(3)]
    touched, newer, refused = job(EVERY_MINUTE), job(EVERY_MINUTE), job(EVERY_SECOND)
    load(index, dataclasses.replace(newer, version=3))
    known: dict[tuple[Plan, datetime], tuple[datetime, float]] = {}
    refusals: list[tuple[str, CronSvcError]] = []

    seen = index.add_slim(
        [schedule_of(j) for j in [*alike, touched, newer, refused]],
        sync=7,
        touched={touched.id},
        known=known,
        claim_lead=CLAIM_LEAD,
        read_lead=READ_LEAD,
        refused=refusals,
    )

    assert seen == 4  # the three alike and the newer one
    assert len(known) == 1
    assert set(index.entries) == {j.id for j in alike} | {newer.id}
    assert index.entries[newer.id].version == 3 and index.entries[newer.id].synced == 7
    assert [job_id for job_id, _ in refusals] == [refused.id]


# --- misfires after an outage ---------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "grace", "fire", "missed_ticks"),
    [
        # The instance started at 30.5: ticks 1-30 fell due while it was down.
        (MisfirePolicy.SKIP, 60, [], list(range(1, 31))),
        (MisfirePolicy.FIRE_ONCE, 60, [(30, C)], list(range(1, 30))),
        (MisfirePolicy.FIRE_ALL, 60, [(t, C) for t in range(21, 31)], list(range(1, 21))),
        # Ticks past the grace are missed under every policy.
        (MisfirePolicy.FIRE_ALL, 5, [(t, C) for t in range(26, 31)], list(range(1, 26))),
    ],
)
def test_ticks_due_before_the_start_follow_the_misfire_policy(
    policy: MisfirePolicy, grace: int, fire: list[tuple[float, Trigger]], missed_ticks: list[int]
) -> None:
    index = new_index(started_at=at(30.5))
    load(index, job(misfire_policy=policy, misfire_grace_seconds=grace))

    taken = take(index, 30.5)

    assert fired(taken) == fire
    assert missed(taken) == missed_ticks


@pytest.mark.parametrize(
    ("policy", "fire", "missed_ticks"),
    [
        (MisfirePolicy.SKIP, [], [1, 2, 3, 4, 5]),
        (MisfirePolicy.FIRE_ONCE, [(5, C)], [1, 2, 3, 4]),
        (MisfirePolicy.FIRE_ALL, [(t, C) for t in range(1, 6)], []),
    ],
)
def test_held_ticks_resume_as_after_a_restart_at_the_resumption(
    policy: MisfirePolicy, fire: list[tuple[float, Trigger]], missed_ticks: list[int]
) -> None:
    """Tick 1 was taken and handed back (the store did not answer); the job
    is rewound to it and held. Resumed at 5.5, ticks 1-5 are judged as after
    a restart then: catch-ups, or missed."""
    index = new_index()
    every = job(misfire_policy=policy)
    load(index, every)
    [[due]] = take(index, 0.8).batches

    index.hold([due])
    assert index.held == {every.id}
    assert fired(take(index, 5.5)) == []  # off the heap while held
    assert index.resume_held(at(5.5), claim_lead=CLAIM_LEAD, read_lead=READ_LEAD) == 1
    assert index.held == set()
    taken = take(index, 5.5)

    assert fired(taken) == fire
    assert missed(taken) == missed_ticks
    # The next take is the normal course again.
    assert fired(take(index, 6.0)) == [(6, S)]


def test_held_jobs_go_back_to_the_earliest_tick_handed_back() -> None:
    index = new_index()
    every, changed = job(), job()
    load(index, every, changed)
    taken = take(index, 3.8)  # ticks 1-4 of each, taken
    assert index.entries[every.id].next_tick == at(5)
    handed_back = [
        DueTick(every, at(3), S),
        DueTick(every, at(2), S),
        DueTick(every, at(4), S),
        DueTick(changed, at(2), S),
    ]
    load(index, dataclasses.replace(changed, version=2), now=3.8)  # reloaded since

    index.hold(handed_back)

    assert taken.batches
    assert index.held == {every.id}
    assert index.entries[every.id].next_tick == at(2)
    assert index.entries[every.id].seq is None
    assert index.entries[changed.id].seq is not None


def test_jobs_falling_due_while_the_store_is_down_are_held() -> None:
    index = new_index()
    soon, later = job(), job(EVERY_MINUTE)
    load(index, soon, later)

    index.hold_due(ts(5))

    assert index.held == {soon.id}
    assert index.entries[soon.id].next_tick == at(1)
    assert index.next_wake() == pytest.approx(ts(60 - CLAIM_LEAD))


# --- stale heap items and compaction ----------------------------------------------


def test_a_changed_version_makes_the_old_heap_item_stale() -> None:
    index = new_index()
    v1 = job(EVERY_MINUTE)
    load(index, v1)
    v2 = dataclasses.replace(
        v1, version=2, spec=dataclasses.replace(v1.spec, cron_expression=DAILY)
    )
    load(index, v2)

    assert len(index.heap) == 2
    assert take(index, 60).batches == []  # v1's item is skipped
    assert len(index.heap) == 1
    [(_, entry)] = take(index, 86_400).unread  # v2 is daily: slim, read ahead
    assert entry.version == 2 and entry.next_tick == at(86_400)


def test_a_dropped_job_never_fires() -> None:
    index = new_index()
    gone = job()
    load(index, gone)
    index.drop(gone.id)

    assert take(index, 10).batches == []
    assert index.heap == []


def test_stale_items_are_compacted_away_once_they_outnumber_the_jobs() -> None:
    index = new_index()
    daily = job(DAILY)
    for _ in range(1100):  # each reload leaves the last item stale
        load(index, daily)
    assert len(index.heap) == 1100

    assert take(index, 10).batches == []

    assert len(index.heap) == 1
    assert index.next_wake() == pytest.approx(ts(86_400 - CLAIM_LEAD - READ_LEAD))


def test_a_resync_drops_what_it_did_not_see_unless_a_notice_has_news() -> None:
    index = new_index()
    seen, unseen, changed, touched, lacking = (job(EVERY_MINUTE) for _ in range(5))
    load(index, seen, unseen, changed, touched)

    count, stale = index.compare(
        {seen.id: 1, lacking.id: 1, touched.id: 2}, sync=9, touched={touched.id}
    )
    index.drop_unseen(list(index.entries), sync=9, changed={changed.id}, touched={touched.id})

    assert (count, stale) == (1, [lacking.id])
    assert set(index.entries) == {seen.id, changed.id, touched.id}
    assert index.fresher(lacking) and not index.fresher(seen)


# --- the bound on unrecorded ticks -------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "now", "grace", "max_missed", "max_catchup", "fire", "missed_ticks", "unrecorded"),
    [
        # Past the grace: 5 recorded, the rest up to the grace jumped over.
        (
            MisfirePolicy.FIRE_ONCE,
            100,
            10,
            5,
            10,
            [(100, S)],
            [1, 2, 3, 4, 5, *range(90, 100)],
            Unrecorded(job_id="", count=84, at_least=False, jumped=True),
        ),
        # Counting stops at MAX_COUNTED: the count is a lower bound.
        (
            MisfirePolicy.FIRE_ONCE,
            5000,
            10,
            5,
            10,
            [(5000, S)],
            [1, 2, 3, 4, 5, *range(4990, 5000)],
            Unrecorded(job_id="", count=MAX_COUNTED, at_least=True, jumped=True),
        ),
        # Within the grace: beyond what missed records and catch-ups keep,
        # ticks are counted, not recorded.
        (
            MisfirePolicy.FIRE_ALL,
            100,
            3600,
            2,
            3,
            [(98, S), (99, S), (100, S)],
            [96, 97],
            Unrecorded(job_id="", count=95, at_least=False, jumped=False),
        ),
    ],
)
def test_missed_ticks_beyond_the_records_are_counted_and_jumped_over(
    policy: MisfirePolicy,
    now: float,
    grace: int,
    max_missed: int,
    max_catchup: int,
    fire: list[tuple[float, Trigger]],
    missed_ticks: list[int],
    unrecorded: Unrecorded,
) -> None:
    """A loop that stalled (or a job far behind): the work stays bounded."""
    index = new_index(max_missed_records=max_missed, max_catchup=max_catchup)
    every = job(misfire_policy=policy, misfire_grace_seconds=grace)
    load(index, every)

    taken = take(index, now)

    assert fired(taken) == fire
    assert missed(taken) == missed_ticks
    assert taken.unrecorded == [dataclasses.replace(unrecorded, job_id=every.id)]
    assert index.entries[every.id].next_tick == at(now + 1)
