"""Running a job now through the job service, against a real SQLite store
and a real webhook receiver: a job that changes between its read and its
claim is read and claimed again; one that keeps changing is not found; a
run refused under `forbid` is recorded SKIPPED and counted, and sends
nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from cronsvc.claims import MANUAL_CLAIM_TRIES, JobService
from cronsvc.clock import SystemClock
from cronsvc.coord.local import LocalCoordinator
from cronsvc.deliveries import Deliveries
from cronsvc.domain import ConcurrencyPolicy, ExecutionStatus, Job, Trigger
from cronsvc.errors import JobNotFound
from cronsvc.metrics import Metrics
from cronsvc.notices import Notices
from cronsvc.store import ExecutionQuery, Store
from tests.fakes import Receiver
from tests.helpers_dispatch import run_path_deliveries
from tests.helpers_store import create, make_spec, tick_claim


@dataclass
class Running:
    jobs: JobService
    deliveries: Deliveries
    metrics: Metrics
    store: Store


@pytest.fixture
async def running(store: Store, receiver: Receiver) -> AsyncIterator[Running]:
    """The service and its deliveries; `receiver` outlives the runs sent to it."""
    clock, metrics = SystemClock(), Metrics()
    notices = Notices(coordinator=LocalCoordinator(lock_path=None), metrics=metrics)
    async with run_path_deliveries(store, notices, metrics) as (deliveries, _):
        jobs = JobService(
            store=store, notices=notices, deliveries=deliveries, clock=clock, instance_id="here"
        )
        yield Running(jobs=jobs, deliveries=deliveries, metrics=metrics, store=store)


def changed_after_each_read(store: Store, times: int) -> list[int]:
    """Have the store change the job after each of its next `times` reads,
    as a user's update landing between the read and the claim would.
    Returns the versions read."""
    read = store.get_job
    versions: list[int] = []

    async def get_job(job_id: str) -> Job:
        job = await read(job_id)
        versions.append(job.version)
        if len(versions) <= times:
            spec = make_spec(job.spec.name, webhook_url=job.spec.webhook_url)
            await store.update_job(job_id, spec, now=job.updated_at + timedelta(seconds=1))
        return job

    store.get_job = get_job  # type: ignore[method-assign]
    return versions


async def record_ids(store: Store, job: Job) -> list[str]:
    page = await store.list_executions(ExecutionQuery(job_id=job.id))
    return [record.id for record in page.items]


async def test_a_job_changed_between_its_read_and_its_claim_is_read_again(
    running: Running, receiver: Receiver
) -> None:
    job = await create(running.store, webhook_url=receiver.url)
    versions = changed_after_each_read(running.store, times=1)

    execution = await running.jobs.trigger_now(job.id)

    assert versions == [1, 2]  # the first claim was stale: nothing written for it
    assert execution.status is ExecutionStatus.RUNNING
    assert execution.trigger is Trigger.MANUAL
    (request,) = await receiver.wait_for(1)
    assert request.json()["executionId"] == execution.id
    assert await record_ids(running.store, job) == [execution.id]


async def test_a_job_that_keeps_changing_is_not_found(running: Running, receiver: Receiver) -> None:
    job = await create(running.store, webhook_url=receiver.url)
    versions = changed_after_each_read(running.store, times=MANUAL_CLAIM_TRIES)

    with pytest.raises(JobNotFound):
        await running.jobs.trigger_now(job.id)

    assert versions == [1, 2, 3]
    assert await record_ids(running.store, job) == []
    assert receiver.requests == []


async def test_a_run_refused_under_forbid_is_recorded_skipped_and_counted(
    running: Running, receiver: Receiver
) -> None:
    job = await create(
        running.store, webhook_url=receiver.url, concurrency_policy=ConcurrencyPolicy.FORBID
    )
    (busy,) = await running.store.claim_ticks([tick_claim(job, job.created_at)])

    execution = await running.jobs.trigger_now(job.id)

    assert execution.status is ExecutionStatus.SKIPPED
    assert execution.error is not None and busy.execution is not None
    assert busy.execution.id in execution.error.message
    assert running.metrics.get("cronsvc_executions_total", status="SKIPPED") == 1
    assert running.deliveries.in_flight == 0
    assert receiver.requests == []
