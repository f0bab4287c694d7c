"""Ticks the job index found missed, written MISSED in the background by
`MissedRecorder` against a real SQLite store; a write the store refuses
holds the job at the first of its ticks until the store answers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pytest
from structlog.testing import capture_logs

from cronsvc.domain import ExecutionStatus, Job
from cronsvc.errors import StoreUnavailable
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.jobindex import JobIndex
from cronsvc.jobsync import MissedRecorder
from cronsvc.metrics import Metrics
from cronsvc.store import ExecutionQuery, MissedRecords, Store
from tests.fakes import FakeClock
from tests.helpers_store import T0, at, create


class RefusingStore:
    """A store that does not answer for now."""

    async def record_missed(
        self, job: Job, ticks: Sequence[datetime], *, instance_id: str, now: datetime, reason: str
    ) -> int:
        raise StoreUnavailable("the disk is gone")


@dataclass
class Recording:
    recorder: MissedRecorder
    index: JobIndex
    metrics: Metrics
    health: HealthMonitor
    wake: asyncio.Event


def recording(store: MissedRecords, ping: Store) -> Recording:
    metrics = Metrics()
    health = HealthMonitor(probes={Dependency.STORE: ping.ping}, metrics=metrics)
    index = JobIndex(min_interval_s=1.0, max_missed_records=100, max_catchup=10, started_at=T0)
    wake = asyncio.Event()
    recorder = MissedRecorder(
        store=store,
        index=index,
        clock=FakeClock(),
        metrics=metrics,
        health=health,
        instance_id="instance-a",
        wake=wake,
    )
    return Recording(recorder, index, metrics, health, wake)


async def test_missed_ticks_are_recorded_counted_and_logged_once(store: Store) -> None:
    job = await create(store)
    rec = recording(store, store)

    with capture_logs() as logs:
        rec.recorder.record(job, [at(1), at(2)])
        await rec.recorder.drain()
        rec.recorder.record(job, [at(1), at(2)])  # another instance's copy: nothing new
        await rec.recorder.drain()

    page = await store.list_executions(ExecutionQuery(job_id=job.id))
    assert sorted(e.scheduled_at for e in page.items) == [at(1), at(2)]
    assert {e.status for e in page.items} == {ExecutionStatus.MISSED}
    assert rec.metrics.get("cronsvc_executions_total", status="MISSED") == 2
    assert [(e["event"], e["count"]) for e in logs] == [("ticks_missed", 2)]
    assert not rec.index.held


async def test_a_write_the_store_refuses_holds_the_job_at_its_first_tick(store: Store) -> None:
    job = await create(store)
    rec = recording(RefusingStore(), store)
    rec.index.load(job, now_ts=at(10).timestamp(), claim_lead=0.2, read_lead=1.0)

    with capture_logs() as logs:
        rec.recorder.record(job, [at(1), at(2)])
        await rec.recorder.drain()

    assert rec.index.held == {job.id}
    assert rec.index.entries[job.id].next_tick == at(1)
    assert rec.index.entries[job.id].seq is None  # off the heap until the store answers
    assert not rec.health.is_up(Dependency.STORE)
    assert rec.wake.is_set()
    assert rec.metrics.get("cronsvc_store_errors_total", op="record_missed") == 1
    held = [e for e in logs if e["event"] == "missed_ticks_held"]
    assert [(e["job_id"], e["count"]) for e in held] == [(job.id, 2)]


@pytest.mark.parametrize("count", [0, 3])
async def test_drain_waits_for_every_write_under_way(store: Store, count: int) -> None:
    jobs = [await create(store, f"job-{n}") for n in range(count)]
    rec = recording(store, store)

    for job in jobs:
        rec.recorder.record(job, [at(1)])
    await rec.recorder.drain()

    assert rec.metrics.get("cronsvc_executions_total", status="MISSED") == count
