"""The tick ledger as pure functions over tables of cases: which ticks a
schedule history owed in a range, and how records settle them."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from cronsvc.domain import ErrorInfo, Execution, ExecutionStatus, ScheduleRevision, Trigger
from cronsvc.errors import TooManyTicks
from cronsvc.ids import new_id
from cronsvc.ledger import MAX_TICKS, EntryKind, build_ledger, owed_ticks


def z(text: str) -> datetime:
    """An instant written as UTC wall time: "2026-01-01T10:00" or with seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def rev(
    version: int,
    effective_from: str,
    expression: str = "* * * * *",
    timezone: str = "UTC",
    *,
    active: bool = True,
) -> ScheduleRevision:
    return ScheduleRevision(
        version=version,
        effective_from=z(effective_from),
        cron_expression=expression,
        timezone=timezone,
        is_active=active,
    )


BERLIN = "Europe/Berlin"


@pytest.mark.parametrize(
    ("history", "since", "until", "owed"),
    [
        pytest.param(
            [rev(1, "2026-01-01T09:00")],
            "2026-01-01T10:00",
            "2026-01-01T10:03",
            ["2026-01-01T10:00", "2026-01-01T10:01", "2026-01-01T10:02"],
            id="since-inclusive-until-exclusive",
        ),
        pytest.param(
            [rev(1, "2026-01-01T09:00")],
            "2026-01-01T10:00:00.001",
            "2026-01-01T10:02:00.001",
            ["2026-01-01T10:01", "2026-01-01T10:02"],
            id="bounds-to-the-millisecond",
        ),
        pytest.param(
            [rev(1, "2026-01-01T09:00")],
            "2026-01-01T10:00",
            "2026-01-01T10:00",
            [],
            id="empty-range",
        ),
        pytest.param(
            [rev(1, "2026-01-01T10:01")],
            "2026-01-01T10:00",
            "2026-01-01T10:04",
            ["2026-01-01T10:02", "2026-01-01T10:03"],
            id="created-on-a-tick-owes-it-not",
        ),
        pytest.param(
            [rev(1, "2026-01-01T10:00:59.500")],
            "2026-01-01T10:00",
            "2026-01-01T10:03",
            ["2026-01-01T10:01", "2026-01-01T10:02"],
            id="created-mid-second",
        ),
        pytest.param(
            [rev(1, "2026-01-01T11:00")],
            "2026-01-01T10:00",
            "2026-01-01T10:30",
            [],
            id="range-before-creation",
        ),
        pytest.param(
            [
                rev(1, "2026-01-01T09:00"),
                rev(2, "2026-01-01T10:01:30", active=False),
                rev(3, "2026-01-01T10:03:10"),
            ],
            "2026-01-01T10:00",
            "2026-01-01T10:06",
            ["2026-01-01T10:00", "2026-01-01T10:01", "2026-01-01T10:04", "2026-01-01T10:05"],
            id="nothing-owed-while-paused",
        ),
        pytest.param(
            [rev(1, "2026-01-01T09:00", active=False)],
            "2026-01-01T10:00",
            "2026-01-01T11:00",
            [],
            id="created-paused",
        ),
        pytest.param(
            [rev(1, "2026-01-01T09:00", "*/2 * * * *"), rev(2, "2026-01-01T10:03:30")],
            "2026-01-01T10:00",
            "2026-01-01T10:07",
            [
                "2026-01-01T10:00",
                "2026-01-01T10:02",
                "2026-01-01T10:04",
                "2026-01-01T10:05",
                "2026-01-01T10:06",
            ],
            id="schedule-changed",
        ),
        pytest.param(
            [
                rev(1, "2026-01-01T00:00", "0 12 * * *"),
                rev(2, "2026-01-02T06:00", "0 12 * * *", "Asia/Tokyo"),
            ],
            "2026-01-01T00:00",
            "2026-01-04T00:00",
            ["2026-01-01T12:00", "2026-01-03T03:00"],
            id="zone-changed",
        ),
        pytest.param(
            [rev(1, "2026-03-01T00:00", "30 2 * * *", BERLIN)],
            "2026-03-28T00:00",
            "2026-03-31T00:00",
            ["2026-03-28T01:30", "2026-03-29T01:00", "2026-03-30T00:30"],
            id="dst-spring-fixed-time-fires-at-the-end-of-the-gap",
        ),
        pytest.param(
            [rev(1, "2026-10-01T00:00", "30 2 * * *", BERLIN)],
            "2026-10-24T00:00",
            "2026-10-27T00:00",
            ["2026-10-24T00:30", "2026-10-25T00:30", "2026-10-26T01:30"],
            id="dst-autumn-fixed-time-fires-once",
        ),
        pytest.param(
            [rev(1, "2026-10-01T00:00", "30 * * * *", BERLIN)],
            "2026-10-25T00:00",
            "2026-10-25T02:00",
            ["2026-10-25T00:30", "2026-10-25T01:30"],
            id="dst-autumn-wildcard-fires-in-both-hours",
        ),
        pytest.param(
            [rev(1, "2026-03-01T00:00", "30 * * * *", BERLIN)],
            "2026-03-29T00:00",
            "2026-03-29T02:00",
            ["2026-03-29T00:30", "2026-03-29T01:30"],
            id="dst-spring-wildcard-skips-the-gap",
        ),
        pytest.param(
            [
                rev(1, "2026-01-01T09:00"),
                rev(2, "2026-01-01T10:02:30", active=False),
                rev(3, "2026-01-01T10:02:10"),
            ],
            "2026-01-01T10:00",
            "2026-01-01T10:05",
            [
                "2026-01-01T10:00",
                "2026-01-01T10:01",
                "2026-01-01T10:02",
                "2026-01-01T10:03",
                "2026-01-01T10:04",
            ],
            id="a-revision-from-a-lagging-clock-starts-where-the-last-did",
        ),
        pytest.param(
            [
                rev(1, "2026-01-01T09:00"),
                rev(2, "2026-01-01T10:01:30", active=False),
                rev(3, "2026-01-01T10:01:30"),
            ],
            "2026-01-01T10:00",
            "2026-01-01T10:03",
            ["2026-01-01T10:00", "2026-01-01T10:01", "2026-01-01T10:02"],
            id="paused-and-resumed-in-one-millisecond",
        ),
    ],
)
def test_owed_ticks(
    history: list[ScheduleRevision], since: str, until: str, owed: list[str]
) -> None:
    assert owed_ticks(history, since=z(since), until=z(until)) == [z(t) for t in owed]
    shuffled = random.Random(7).sample(history, len(history))
    assert owed_ticks(shuffled, since=z(since), until=z(until)) == [z(t) for t in owed]


def test_owed_ticks_are_counted_up_to_the_limit_and_refused_past_it() -> None:
    history = [rev(1, "2026-01-01T09:00", "* * * * * *")]
    since = z("2026-01-01T10:00")

    assert len(owed_ticks(history, since=since, until=since + timedelta(seconds=MAX_TICKS))) == (
        MAX_TICKS
    )
    with pytest.raises(TooManyTicks, match=str(MAX_TICKS)):
        owed_ticks(history, since=since, until=since + timedelta(seconds=MAX_TICKS + 1))
    with pytest.raises(TooManyTicks):
        owed_ticks(history, since=since, until=since + timedelta(seconds=4), limit=3)


def test_a_wide_range_costs_only_the_ticks_owed_in_it() -> None:
    history = [
        rev(1, "2026-01-01T10:00", "* * * * * *"),
        rev(2, "2026-01-01T10:00:10.500", active=False),
    ]
    owed = owed_ticks(history, since=z("2025-12-01T00:00"), until=z("2026-01-31T00:00"))
    assert owed == [z("2026-01-01T10:00") + timedelta(seconds=s) for s in range(1, 11)]


def record(
    tick: str,
    status: ExecutionStatus = ExecutionStatus.SUCCESS,
    trigger: Trigger = Trigger.SCHEDULE,
) -> Execution:
    return Execution(
        id=new_id(),
        job_id="0" * 24,
        job_name="job",
        trigger=trigger,
        scheduled_at=z(tick),
        status=status,
        instance_id="instance-a",
        error=None
        if status is ExecutionStatus.SUCCESS
        else ErrorInfo(type=status.value.lower(), message="m"),
    )


HISTORY = [rev(1, "2026-01-01T09:00", "*/10 * * * *")]
CREATED = z("2026-01-01T09:00")


def test_records_settle_owed_ticks_and_the_rest_are_marked_as_what_they_are() -> None:
    since, until = z("2026-01-01T10:00"), z("2026-01-01T11:00")
    owed = owed_ticks(HISTORY, since=since, until=until)
    records = [
        record("2026-01-01T10:00"),
        record("2026-01-01T10:10", ExecutionStatus.FAILURE),
        record("2026-01-01T10:20", ExecutionStatus.MISSED),
        record("2026-01-01T10:30", ExecutionStatus.SKIPPED),
        record("2026-01-01T10:30", ExecutionStatus.SUCCESS, Trigger.MANUAL),
        record("2026-01-01T10:33", ExecutionStatus.SKIPPED),  # a schedule since changed
        record("2026-01-01T10:40", ExecutionStatus.LOST, Trigger.CATCHUP),
    ]

    ledger = build_ledger(
        owed, reversed(records), history=HISTORY, created_at=CREATED, since=since, until=until
    )

    assert [(e.scheduled_at, e.kind, e.execution) for e in ledger.entries] == [
        (z("2026-01-01T10:00"), EntryKind.TICK, records[0]),
        (z("2026-01-01T10:10"), EntryKind.TICK, records[1]),
        (z("2026-01-01T10:20"), EntryKind.TICK, records[2]),
        (z("2026-01-01T10:30"), EntryKind.TICK, records[3]),
        (z("2026-01-01T10:30"), EntryKind.MANUAL, records[4]),
        (z("2026-01-01T10:33"), EntryKind.UNSCHEDULED, records[5]),
        (z("2026-01-01T10:40"), EntryKind.TICK, records[6]),
        (z("2026-01-01T10:50"), EntryKind.GAP, None),
    ]
    summary = ledger.summary
    assert summary.ticks == 6 and summary.gaps == 1
    assert (summary.manual, summary.unscheduled, summary.unknown) == (1, 1, 0)
    assert summary.by_status == {
        ExecutionStatus.RUNNING: 0,
        ExecutionStatus.SUCCESS: 1,
        ExecutionStatus.FAILURE: 1,
        ExecutionStatus.SKIPPED: 1,
        ExecutionStatus.MISSED: 1,
        ExecutionStatus.LOST: 1,
    }
    assert ledger.complete and ledger.known_from is None


def test_before_a_trimmed_history_ticks_are_unknown_not_gaps() -> None:
    trimmed = [rev(40, "2026-01-01T10:25", "*/10 * * * *")]
    since, until = z("2026-01-01T10:00"), z("2026-01-01T10:45")
    owed = owed_ticks(trimmed, since=since, until=until)
    records = [record("2026-01-01T10:10"), record("2026-01-01T10:30")]

    ledger = build_ledger(
        owed, records, history=trimmed, created_at=CREATED, since=since, until=until
    )

    assert [(e.scheduled_at, e.kind) for e in ledger.entries] == [
        (z("2026-01-01T10:10"), EntryKind.UNKNOWN),
        (z("2026-01-01T10:30"), EntryKind.TICK),
        (z("2026-01-01T10:40"), EntryKind.GAP),
    ]
    assert ledger.known_from == z("2026-01-01T10:25") and not ledger.complete
    later = build_ledger(
        [], [], history=trimmed, created_at=CREATED, since=z("2026-01-01T10:30"), until=until
    )
    assert later.complete


def test_a_whole_history_is_complete_even_before_the_job_existed() -> None:
    ledger = build_ledger(
        [],
        [],
        history=HISTORY,
        created_at=CREATED,
        since=z("2025-12-31T00:00"),
        until=z("2026-01-01T09:00"),
    )
    assert ledger.complete and ledger.entries == []
