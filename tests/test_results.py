"""The write-behind of execution results, against a real SQLite store:
results reach the store in batches, and what does not fit is counted and
logged, never dropped quietly."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from cronsvc.clock import SystemClock
from cronsvc.domain import Execution, ExecutionStatus, Job, JobSpec, Trigger
from cronsvc.errors import StoreUnavailable
from cronsvc.ids import new_id
from cronsvc.metrics import Metrics
from cronsvc.results import ResultWriter
from cronsvc.store import ClaimOutcome, FinishReport, TickClaim
from cronsvc.store.sqlite import SQLiteStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = await SQLiteStore.open(tmp_path / "cronsvc.db")
    yield opened
    await opened.aclose()


async def running(store: SQLiteStore, count: int, name: str = "job") -> list[Execution]:
    """`count` RUNNING executions of one new job, one per minute from T0."""
    spec = JobSpec(name=name, cron_expression="* * * * *", webhook_url="https://example.org/")
    job = await store.create_job(
        Job(id=new_id(), spec=spec, created_at=T0, updated_at=T0, last_tick=T0)
    )
    claims = [
        TickClaim(
            job_id=job.id,
            expected_version=job.version,
            scheduled_at=T0 + timedelta(minutes=n + 1),
            trigger=Trigger.SCHEDULE,
            execution_id=new_id(),
            instance_id="here",
            executed_at=T0 + timedelta(minutes=n + 1),
            dispatched=True,
        )
        for n in range(count)
    ]
    results = await store.claim_ticks(claims)
    assert all(r.outcome is ClaimOutcome.CLAIMED and r.execution for r in results)
    return [r.execution for r in results if r.execution is not None]


def succeeded(execution: Execution) -> Execution:
    assert execution.executed_at is not None
    return dataclasses.replace(
        execution,
        status=ExecutionStatus.SUCCESS,
        finished_at=execution.executed_at + timedelta(milliseconds=10),
        duration_ms=10,
        attempts=1,
        response_status=200,
    )


async def test_submitted_results_reach_the_store(store: SQLiteStore) -> None:
    executions = await running(store, 3)
    writer = ResultWriter(store=store, clock=SystemClock(), metrics=Metrics())
    task = asyncio.create_task(writer.run())
    for execution in executions:
        writer.submit(succeeded(execution))
    writer.stop()
    await asyncio.wait_for(task, 10)

    for execution in executions:
        assert await store.get_execution(execution.id) == succeeded(execution)
    assert writer.pending == 0


async def test_results_past_the_buffer_are_counted_and_logged_once_per_overflow(
    store: SQLiteStore,
) -> None:
    executions = await running(store, 6)
    metrics = Metrics()
    writer = ResultWriter(store=store, clock=SystemClock(), metrics=metrics, max_pending=2)

    with capture_logs() as logs:
        for execution in executions[:5]:  # not running: nothing drains the buffer
            writer.submit(succeeded(execution))
        dropped_while_full = [e for e in logs if "dropped" in e["event"]]
        task = asyncio.create_task(writer.run())
        for _ in range(200):  # at most 10 s for the two that fit to be written
            if not writer.pending:
                break
            await asyncio.sleep(0.05)
        assert writer.pending == 0
        writer.submit(succeeded(executions[5]))  # fits again: the overflow ended
        writer.stop()
        await asyncio.wait_for(task, 10)

    assert metrics.get("cronsvc_log_writes_dropped_total", reason="buffer_full") == 3
    assert [e["event"] for e in dropped_while_full] == ["execution_results_dropped"]
    assert dropped_while_full[0]["count"] == 1
    ended = [e for e in logs if e["event"] == "execution_results_dropped_overflow_ended"]
    assert [e["count"] for e in ended] == [3]
    kept = [executions[0], executions[1], executions[5]]
    for execution in kept:
        assert (await store.get_execution(execution.id)).status is ExecutionStatus.SUCCESS
    for execution in executions[2:5]:
        assert (await store.get_execution(execution.id)).status is ExecutionStatus.RUNNING


async def test_results_for_runs_already_final_are_counted_and_logged_once_per_batch(
    store: SQLiteStore,
) -> None:
    executions = await running(store, 25)
    lost = await store.mark_lost(live_instances=[], now=T0 + timedelta(hours=1), reason="dead")
    assert len(lost) == 25
    fresh = await running(store, 1, name="fresh")
    metrics = Metrics()
    writer = ResultWriter(store=store, clock=SystemClock(), metrics=metrics)

    with capture_logs() as logs:
        task = asyncio.create_task(writer.run())
        for execution in [*executions, *fresh]:
            writer.submit(succeeded(execution))
        writer.stop()
        await asyncio.wait_for(task, 10)

    assert metrics.get("cronsvc_late_results_total", stored_status="LOST") == 25
    assert metrics.get("cronsvc_late_results_total", stored_status="FAILURE") == 0
    [late] = [e for e in logs if e["event"] == "late_result_ignored"]
    assert late["log_level"] == "warning"
    assert late["count"] == 25
    assert late["executions"][0] == {
        "execution_id": executions[0].id,
        "job_id": executions[0].job_id,
        "stored_status": "LOST",
        "status": "SUCCESS",
    }
    assert [e["execution_id"] for e in late["executions"]] == [e.id for e in executions[:20]]
    for execution, record in zip(executions, lost, strict=True):
        assert await store.get_execution(execution.id) == record
    assert await store.get_execution(fresh[0].id) == succeeded(fresh[0])


@dataclasses.dataclass
class Told:
    """A `ResultObserver` that keeps what it is told."""

    batches: list[tuple[list[str], FinishReport]] = dataclasses.field(default_factory=list)
    unwritten: list[str] = dataclasses.field(default_factory=list)

    def written(self, batch: Sequence[Execution], report: FinishReport) -> None:
        self.batches.append(([e.id for e in batch], report))

    def dropped(self, executions: Iterable[Execution]) -> None:
        self.unwritten.extend(e.id for e in executions)


async def test_the_observer_hears_of_each_batch_written_and_each_result_dropped(
    store: SQLiteStore,
) -> None:
    executions = await running(store, 4)
    lost = await store.mark_lost(live_instances=[], now=T0 + timedelta(hours=1), reason="dead")
    fresh = await running(store, 3, name="fresh")
    told = Told()
    writer = ResultWriter(
        store=store, clock=SystemClock(), metrics=Metrics(), max_pending=6, observer=told
    )
    for execution in [*executions, *fresh]:  # the last one does not fit
        writer.submit(succeeded(execution))
    task = asyncio.create_task(writer.run())
    writer.stop()
    await asyncio.wait_for(task, 10)

    assert told.unwritten == [fresh[2].id]
    (ids, report), *_ = told.batches
    assert ids == [e.id for e in [*executions, *fresh[:2]]]
    assert {execution_id for execution_id, _ in report.already_final} == {e.id for e in lost}


class Faltering:
    """The real store behind a link that refuses the first `refusals` writes."""

    def __init__(self, store: SQLiteStore, refusals: int) -> None:
        self._store = store
        self.refusals = refusals

    async def finish_executions(self, executions: Sequence[Execution]) -> FinishReport:
        if self.refusals:
            self.refusals -= 1
            raise StoreUnavailable("the store is not answering")
        return await self._store.finish_executions(executions)


async def test_results_wait_out_a_store_outage_counted_and_logged_once(
    store: SQLiteStore,
) -> None:
    executions = await running(store, 3)
    metrics = Metrics()
    writer = ResultWriter(store=Faltering(store, refusals=2), clock=SystemClock(), metrics=metrics)

    with capture_logs() as logs:
        task = asyncio.create_task(writer.run())
        for execution in executions:
            writer.submit(succeeded(execution))
        writer.stop()
        await asyncio.wait_for(task, 20)

    for execution in executions:
        assert await store.get_execution(execution.id) == succeeded(execution)
    assert metrics.get("cronsvc_store_errors_total", op="finish") == 2
    assert metrics.get("cronsvc_log_writes_delayed_total") == 2 * len(executions)
    assert [e["event"] for e in logs if e["event"].startswith("results_")] == [
        "results_delayed",
        "results_resumed",
    ]
    assert next(e for e in logs if e["event"] == "results_resumed")["after_failures"] == 2


async def test_results_still_unwritten_when_shutdown_gives_up_are_counted_dropped(
    store: SQLiteStore,
) -> None:
    executions = await running(store, 4)
    metrics = Metrics()
    writer = ResultWriter(
        store=Faltering(store, refusals=10_000), clock=SystemClock(), metrics=metrics
    )

    with capture_logs() as logs:
        task = asyncio.create_task(writer.run(give_up_after_s=0.3))
        for execution in executions:
            writer.submit(succeeded(execution))
        writer.stop()
        await asyncio.wait_for(task, 10)

    assert writer.pending == 0
    assert metrics.get("cronsvc_log_writes_dropped_total", reason="shutdown") == 4
    (dropped,) = [e for e in logs if e["event"] == "execution_results_dropped"]
    assert dropped["reason"] == "shutdown" and dropped["count"] == 4
    for execution in executions:
        assert (await store.get_execution(execution.id)).status is ExecutionStatus.RUNNING
