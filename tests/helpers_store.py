"""What the store tests build with: instants a minute apart, jobs, and tick
claims made the way the claim pipeline makes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cronsvc.domain import Execution, Job, JobSpec, Trigger
from cronsvc.ids import new_id
from cronsvc.store import ActiveSchedule, ClaimOutcome, ClaimResult, Store, TickClaim

T0 = datetime(2026, 1, 1, tzinfo=UTC)
INSTANCE = "instance-a"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def make_spec(name: str = "job", **changes: Any) -> JobSpec:
    values: dict[str, Any] = {
        "cron_expression": "* * * * *",
        "webhook_url": "https://example.com/hook",
    }
    values.update(changes)
    return JobSpec(name=name, **values)


def make_job(name: str = "job", *, last_tick: datetime = T0, **spec_changes: Any) -> Job:
    return Job(
        id=new_id(),
        spec=make_spec(name, **spec_changes),
        created_at=T0,
        updated_at=T0,
        last_tick=last_tick,
    )


def schedule_of(job: Job) -> ActiveSchedule:
    """The part of `job` a store's `active_schedules` answers."""
    spec = job.spec
    return ActiveSchedule(
        id=job.id,
        version=job.version,
        cron_expression=spec.cron_expression,
        timezone=spec.timezone,
        last_tick=job.last_tick,
        concurrency_policy=spec.concurrency_policy,
        misfire_policy=spec.misfire_policy,
        misfire_grace_seconds=spec.misfire_grace_seconds,
    )


async def create(store: Store, name: str = "job", **spec_changes: Any) -> Job:
    return await store.create_job(make_job(name, **spec_changes))


def tick_claim(
    job: Job,
    tick: datetime,
    *,
    trigger: Trigger = Trigger.SCHEDULE,
    version: int | None = None,
    instance_id: str = INSTANCE,
    execution_id: str | None = None,
    dispatched: bool = True,
) -> TickClaim:
    return TickClaim(
        job_id=job.id,
        expected_version=job.version if version is None else version,
        scheduled_at=tick,
        trigger=trigger,
        execution_id=execution_id or new_id(),
        instance_id=instance_id,
        executed_at=tick + timedelta(milliseconds=5),
        dispatched=dispatched,
    )


async def claim(store: Store, job: Job, tick: datetime, **kwargs: Any) -> ClaimResult:
    """Claim one tick, alone in its batch."""
    [result] = await store.claim_ticks([tick_claim(job, tick, **kwargs)])
    return result


async def claimed(store: Store, job: Job, tick: datetime, **kwargs: Any) -> Execution:
    result = await claim(store, job, tick, **kwargs)
    assert result.outcome is ClaimOutcome.CLAIMED
    assert result.execution is not None
    return result.execution
