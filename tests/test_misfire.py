"""The misfire policy as a pure function over a table of cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cronsvc.domain import MisfirePolicy, Trigger
from cronsvc.misfire import plan_due_ticks

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
STARTED = T0 - timedelta(hours=1)  # the instance has been up for an hour


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


S, C = Trigger.SCHEDULE, Trigger.CATCHUP


@pytest.mark.parametrize(
    ("policy", "ticks", "now", "started", "grace", "fire", "missed"),
    [
        # The normal course: one tick, reached a few milliseconds late.
        (MisfirePolicy.FIRE_ONCE, [0], 0.004, STARTED, 60, [(0, S)], []),
        (MisfirePolicy.SKIP, [0], 0.004, STARTED, 60, [(0, S)], []),
        (MisfirePolicy.FIRE_ALL, [0], 0.004, STARTED, 60, [(0, S)], []),
        # A grace of 0 still fires a tick reached within the 1 s floor.
        (MisfirePolicy.FIRE_ONCE, [0], 0.5, STARTED, 0, [(0, S)], []),
        (MisfirePolicy.FIRE_ONCE, [0], 2, STARTED, 0, [], [0]),
        # One tick, older than the grace: missed under every policy.
        (MisfirePolicy.FIRE_ONCE, [0], 61, STARTED, 60, [], [0]),
        (MisfirePolicy.FIRE_ALL, [0], 61, STARTED, 60, [], [0]),
        (MisfirePolicy.SKIP, [0], 61, STARTED, 60, [], [0]),
        # Several overdue ticks (a stalled loop): fire_once keeps the latest.
        (MisfirePolicy.FIRE_ONCE, [0, 10, 20], 25, STARTED, 60, [(20, S)], [0, 10]),
        (MisfirePolicy.FIRE_ALL, [0, 10, 20], 25, STARTED, 60, [(0, S), (10, S), (20, S)], []),
        (MisfirePolicy.SKIP, [0, 10, 20], 25, STARTED, 60, [], [0, 10, 20]),
        # Only ticks inside the grace are fireable.
        (MisfirePolicy.FIRE_ALL, [0, 30, 60, 90], 95, STARTED, 60, [(60, S), (90, S)], [0, 30]),
        (MisfirePolicy.FIRE_ONCE, [0, 30, 60, 90], 95, STARTED, 60, [(90, S)], [0, 30, 60]),
    ],
)
def test_plan_for_due_ticks(
    policy: MisfirePolicy,
    ticks: list[float],
    now: float,
    started: datetime,
    grace: float,
    fire: list[tuple[float, Trigger]],
    missed: list[float],
) -> None:
    plan = plan_due_ticks(
        [at(t) for t in ticks],
        now=at(now),
        started_at=started,
        policy=policy,
        grace_s=grace,
        max_catchup=10,
    )
    assert plan.fire == [(at(t), trigger) for t, trigger in fire]
    assert plan.missed == [at(t) for t in missed]


def test_ticks_due_before_start_up_are_catch_ups() -> None:
    started = at(5)
    plan = plan_due_ticks(
        [at(0), at(1), at(2)],
        now=at(6),
        started_at=started,
        policy=MisfirePolicy.FIRE_ALL,
        grace_s=60,
        max_catchup=10,
    )
    assert plan.fire == [(at(0), C), (at(1), C), (at(2), C)]


def test_skip_does_not_fire_a_single_tick_that_fell_due_while_down() -> None:
    plan = plan_due_ticks(
        [at(0)], now=at(3), started_at=at(2), policy=MisfirePolicy.SKIP, grace_s=60, max_catchup=10
    )
    assert plan.fire == [] and plan.missed == [at(0)]


def test_fire_all_is_capped_at_max_catchup_and_the_rest_are_missed() -> None:
    ticks = [at(i) for i in range(25)]
    plan = plan_due_ticks(
        ticks,
        now=at(30),
        started_at=at(26),
        policy=MisfirePolicy.FIRE_ALL,
        grace_s=3600,
        max_catchup=10,
    )
    assert [t for t, _ in plan.fire] == ticks[-10:]
    assert plan.missed == ticks[:-10]


@pytest.mark.parametrize("policy", list(MisfirePolicy))
def test_every_due_tick_ends_up_fired_or_missed_exactly_once(policy: MisfirePolicy) -> None:
    ticks = [at(i * 7) for i in range(40)]
    plan = plan_due_ticks(
        ticks, now=at(300), started_at=at(100), policy=policy, grace_s=120, max_catchup=5
    )
    accounted = sorted([t for t, _ in plan.fire] + plan.missed)
    assert accounted == ticks
