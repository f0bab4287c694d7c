"""Plans: what the job index needs of a job's schedule and policies, made
once per kind and shared by jobs alike."""

from __future__ import annotations

import pytest

from cronsvc import jobindex
from cronsvc.domain import ConcurrencyPolicy, MisfirePolicy
from cronsvc.errors import CronSvcError
from cronsvc.jobindex import PlanCache, PlanKey, plan_key
from tests.helpers_store import make_job


def key(cron: str = "* * * * *", **changes: object) -> PlanKey:
    return plan_key(make_job(cron_expression=cron, **changes))


def test_a_jobs_key_is_its_schedule_and_policies() -> None:
    job = make_job(
        cron_expression="*/5 * * * *",
        timezone="Europe/Paris",
        concurrency_policy=ConcurrencyPolicy.FORBID,
        misfire_policy=MisfirePolicy.SKIP,
        misfire_grace_seconds=30,
    )

    assert plan_key(job) == (
        "*/5 * * * *",
        "Europe/Paris",
        ConcurrencyPolicy.FORBID,
        MisfirePolicy.SKIP,
        30,
    )


def test_jobs_alike_share_one_plan() -> None:
    cache = PlanCache(min_interval_s=1.0)

    first = cache.plan(key())

    assert cache.plan(key()) is first
    assert cache.plan(key(misfire_grace_seconds=61)) is not first
    assert (first.misfire_policy, first.misfire_grace_seconds) == (MisfirePolicy.FIRE_ONCE, 60)


@pytest.mark.parametrize(
    ("concurrency", "at_the_tick"),
    [
        (ConcurrencyPolicy.ALLOW, False),
        (ConcurrencyPolicy.FORBID, True),
        (ConcurrencyPolicy.REPLACE, True),
    ],
)
def test_forbid_and_replace_jobs_are_claimed_at_the_tick(
    concurrency: ConcurrencyPolicy, at_the_tick: bool
) -> None:
    plan = PlanCache(min_interval_s=1.0).plan(key(concurrency_policy=concurrency))

    assert plan.claimed_at_the_tick is at_the_tick


def test_a_schedule_the_settings_refuse_makes_no_plan() -> None:
    cache = PlanCache(min_interval_s=60.0)

    with pytest.raises(CronSvcError):
        cache.plan(key("* * * * * *"))
    assert cache.known == {}


def test_past_its_bound_the_cache_starts_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobindex, "CACHED_PLANS", 2)
    cache = PlanCache(min_interval_s=1.0)
    first = cache.plan(key("1 * * * *"))
    cache.plan(key("2 * * * *"))

    third = cache.plan(key("3 * * * *"))

    assert cache.known == {key("3 * * * *"): third}
    assert cache.plan(key("1 * * * *")) is not first  # made again, shared anew
