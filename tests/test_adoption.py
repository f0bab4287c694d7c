"""Whether an adopted tick (claimed ahead by an instance that stopped before
sending it) is still sent, as a pure function over a table: it is judged as
a tick overdue since before this instance took it over, under its job's
misfire policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cronsvc.adoption import still_owed
from cronsvc.domain import MisfirePolicy
from tests.helpers_store import make_job

TICK = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
"""A tick of an every-minute job; the next is a minute later."""
SKIP, ONCE, ALL = MisfirePolicy.SKIP, MisfirePolicy.FIRE_ONCE, MisfirePolicy.FIRE_ALL


@pytest.mark.parametrize(
    ("policy", "grace_s", "late_s", "max_catchup", "owed"),
    [
        # skip fires only in the normal course, and an adopted tick is overdue
        (SKIP, 60, 0.5, 10, False),
        (SKIP, 60, 10, 10, False),
        # fire_once: the latest tick in grace, so not one a later tick followed
        (ONCE, 60, 10, 10, True),
        (ONCE, 60, 70, 10, False),  # the tick at 60 s is the one fired
        (ONCE, 60, 90, 10, False),  # past grace
        (ONCE, 0, 0.5, 10, True),  # a grace of 0 is still a second
        (ONCE, 0, 2, 10, False),
        # fire_all: every tick in grace, the latest max_catchup of them
        (ALL, 60, 10, 10, True),
        (ALL, 120, 70, 10, True),  # sent with the tick at 60 s
        (ALL, 120, 70, 1, False),  # only the latest one
        (ALL, 60, 90, 10, False),  # past grace
        (ALL, 600, 190, 3, False),  # ticks at 60, 120 and 180 s are the latest three
        (ALL, 600, 190, 4, True),
    ],
)
def test_an_adopted_tick_is_sent_only_if_its_misfire_policy_still_fires_it(
    policy: MisfirePolicy, grace_s: int, late_s: float, max_catchup: int, owed: bool
) -> None:
    job = make_job(misfire_policy=policy, misfire_grace_seconds=grace_s)
    now = TICK + timedelta(seconds=late_s)
    assert still_owed(job, TICK, now, max_catchup=max_catchup) is owed


def test_an_adopted_tick_of_a_sparse_schedule_is_judged_alone() -> None:
    """No later tick fell due: fire_once sends it within its grace."""
    job = make_job(cron_expression="0 0 * * *", misfire_policy=ONCE, misfire_grace_seconds=300)
    midnight = datetime(2026, 1, 2, tzinfo=UTC)
    assert still_owed(job, midnight, midnight + timedelta(seconds=299), max_catchup=10)
    assert not still_owed(job, midnight, midnight + timedelta(seconds=301), max_catchup=10)
