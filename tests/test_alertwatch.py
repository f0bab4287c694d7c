"""The alert watch against a real SQLite store and real receivers: which
outcomes count, once each, and what reaches the receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from cronsvc.alerts import AlertChange, AlertState, AlertStep
from cronsvc.alertsend import AlertSender
from cronsvc.alertwatch import AlertWatch
from cronsvc.clock import SystemClock
from cronsvc.config import AlertsConfig
from cronsvc.domain import AlertPolicy, ErrorInfo, Execution, ExecutionStatus, Job, Trigger
from cronsvc.errors import StoreUnavailable
from cronsvc.ids import new_id
from cronsvc.metrics import Metrics
from cronsvc.netguard import TargetPolicy
from cronsvc.store import FinishReport, Store
from tests.fakes import Receiver
from tests.helpers_store import create

T0 = datetime(2026, 5, 1, tzinfo=UTC)


@dataclass
class Watching:
    watch: AlertWatch
    sender: AlertSender
    metrics: Metrics


def loopback_sender(config: AlertsConfig, metrics: Metrics) -> AlertSender:
    """A sender allowed to reach the loopback receivers, retrying at once."""
    return AlertSender(
        config=config,
        dashboard_url="http://cron.example",
        target_policy=TargetPolicy.from_settings(allow_private=True, allowed_cidrs=[]),
        clock=SystemClock(),
        metrics=metrics,
        backoff_s=0.01,
    )


@pytest.fixture
async def watching(store: Store) -> AsyncIterator[Any]:
    """Start a watch (and its sender) with the given `[alerts]` keys; both
    stopped at teardown."""
    tasks: list[tuple[Watching, asyncio.Task[None], asyncio.Task[None]]] = []

    def start(**alerts: Any) -> Watching:
        config = AlertsConfig(**alerts)
        metrics = Metrics()
        sender = loopback_sender(config, metrics)
        watch = AlertWatch(
            store=store, sender=sender, config=config, clock=SystemClock(), metrics=metrics
        )
        watching = Watching(watch=watch, sender=sender, metrics=metrics)
        tasks.append(
            (watching, asyncio.create_task(watch.run()), asyncio.create_task(sender.run()))
        )
        return watching

    yield start
    for watching, watch_task, send_task in tasks:
        watching.watch.stop()
        await asyncio.wait_for(watch_task, 10)
        await watching.sender.aclose(send_task, 1.0)


def run(job: Job, second: int, status: ExecutionStatus) -> Execution:
    tick = T0 + timedelta(seconds=second)
    return Execution(
        id=new_id(),
        job_id=job.id,
        job_name=job.spec.name,
        trigger=Trigger.SCHEDULE,
        scheduled_at=tick,
        status=status,
        instance_id="here",
        executed_at=tick,
        finished_at=tick,
        attempts=1,
        error=None
        if status is ExecutionStatus.SUCCESS
        else ErrorInfo(type="lost", message="the instance running it stopped"),
    )


async def create_alerting(store: Store, name: str = "job", **policy: Any) -> Job:
    """A stored job with an alert policy of its own."""
    return await create(store, name, alerts=AlertPolicy(**policy))


async def written(watch: AlertWatch, job: Job, *runs: Execution) -> None:
    for execution in runs:
        watch.expect(execution, job)
    watch.written(runs, FinishReport())


async def settled(store: Store, job: Job, **expected: Any) -> None:
    """Wait until the job's stored alert state has these fields."""
    async with asyncio.timeout(10):
        while True:
            state = (await store.alert_states([job.id])).get(job.id)
            if state and all(getattr(state, k) == v for k, v in expected.items()):
                return
            await asyncio.sleep(0.02)


async def test_written_results_alert_once_failing_and_once_recovered(
    store: Store, watching: Any, receiver: Receiver
) -> None:
    job = await create_alerting(store, url=receiver.url, after=2)
    watch = watching().watch
    await written(watch, job, *(run(job, n, ExecutionStatus.FAILURE) for n in range(4)))
    await settled(store, job, streak=4)
    await written(watch, job, run(job, 4, ExecutionStatus.SUCCESS))
    await written(watch, job, run(job, 5, ExecutionStatus.SUCCESS))
    await settled(store, job, last_at=T0 + timedelta(seconds=5))

    requests = await receiver.wait_for(2)
    await asyncio.sleep(0.2)  # nothing more comes: checked below
    types = [json.loads(r.body)["type"] for r in receiver.requests]
    assert types == ["job.failing", "job.recovered"]
    assert json.loads(requests[0].body)["consecutiveFailures"] == 2


async def test_results_the_store_refused_are_not_outcomes(
    store: Store, watching: Any, receiver: Receiver
) -> None:
    job = await create_alerting(store, url=receiver.url)
    watch = watching().watch
    late = run(job, 1, ExecutionStatus.FAILURE)
    watch.expect(late, job)
    watch.written([late], FinishReport(already_final=((late.id, ExecutionStatus.LOST),)))
    await written(watch, job, run(job, 2, ExecutionStatus.SUCCESS))
    await settled(store, job, last_at=T0 + timedelta(seconds=2))
    assert receiver.requests == []


async def test_lost_runs_have_their_job_read_and_alert(
    store: Store, watching: Any, receiver: Receiver
) -> None:
    job = await create(store)
    watching(url=receiver.url).watch.lost([run(job, 1, ExecutionStatus.LOST)])

    (request,) = await receiver.wait_for(1)
    document = json.loads(request.body)
    assert document["type"] == "job.failing"
    assert document["job"] == {"id": job.id, "name": job.spec.name}
    assert document["lastRun"]["status"] == "LOST"


async def test_unrecorded_ticks_alert_once_until_a_run_is_recorded(
    store: Store, watching: Any, receiver: Receiver
) -> None:
    job = await create(store)
    watch = watching(url=receiver.url, after=5).watch
    unwritten = run(job, 1, ExecutionStatus.FAILURE)
    watch.expect(unwritten, None)
    watch.dropped([unwritten])
    watch.unrecorded(job.id, None)
    await settled(store, job, unrecorded=True)
    watch.unrecorded(job.id, None)
    await written(watch, job, run(job, 2, ExecutionStatus.SUCCESS))
    await settled(store, job, unrecorded=False)
    watch.unrecorded(job.id, None)
    await settled(store, job, unrecorded=True)

    await receiver.wait_for(2)
    await asyncio.sleep(0.2)  # nothing more comes: checked below
    documents = [json.loads(r.body) for r in receiver.requests]
    assert [d["type"] for d in documents] == ["job.unrecorded", "job.unrecorded"]
    assert documents[0]["lastRun"]["status"] == "FAILURE"
    assert documents[0]["state"] == {"from": "ok", "to": "unrecorded"}


async def test_missed_ticks_count_each_towards_the_streak(
    store: Store, watching: Any, receiver: Receiver
) -> None:
    job = await create_alerting(store, url=receiver.url, after=3)
    ticks = [T0 + timedelta(seconds=n) for n in range(3)]
    watching().watch.missed(job, ticks, 3)

    (request,) = await receiver.wait_for(1)
    document = json.loads(request.body)
    assert document["consecutiveFailures"] == 3
    assert document["lastRun"]["status"] == "MISSED"


async def test_a_job_without_alerts_is_passed_over_on_the_firing_path(
    store: Store, watching: Any
) -> None:
    job = await create(store)
    watching().watch.expect(run(job, 1, ExecutionStatus.FAILURE), job)
    assert watching().watch._expected == {}


async def test_the_services_default_policy_alerts_for_jobs_without_their_own(
    store: Store, watching: Any, receiver: Receiver
) -> None:
    job = await create(store)
    opted_out = await create_alerting(store, "opted out", enabled=False)
    watch = watching(url=receiver.url).watch
    await written(watch, opted_out, run(opted_out, 1, ExecutionStatus.FAILURE))
    await written(watch, job, run(job, 1, ExecutionStatus.FAILURE))

    (request,) = await receiver.wait_for(1)
    assert json.loads(request.body)["job"]["id"] == job.id
    await asyncio.sleep(0.2)  # nothing comes for the job that opted out
    assert len(receiver.requests) == 1
    assert await store.alert_states([opted_out.id]) == {}


async def test_outcomes_beyond_the_buffer_are_counted_dropped(
    store: Store, receiver: Receiver
) -> None:
    config = AlertsConfig(url=receiver.url, max_pending=2)
    metrics = Metrics()
    sender = AlertSender(
        config=config,
        dashboard_url="http://cron.example",
        target_policy=TargetPolicy(),
        clock=SystemClock(),
        metrics=metrics,
    )
    watch = AlertWatch(
        store=store, sender=sender, config=config, clock=SystemClock(), metrics=metrics
    )
    job = await create(store)
    watch.lost([run(job, n, ExecutionStatus.LOST) for n in range(5)])
    assert metrics.get("cronsvc_alerts_total", outcome="dropped") == 3


class Faltering:
    """The real store behind a link that refuses the first `refusals` alert
    state writes."""

    def __init__(self, store: Store, refusals: int) -> None:
        self._store = store
        self.refusals = refusals

    async def get_job(self, job_id: str) -> Job:
        return await self._store.get_job(job_id)

    async def alert_states(self, job_ids: Collection[str]) -> dict[str, AlertState]:
        return await self._store.alert_states(job_ids)

    async def apply_alert_outcomes(
        self, steps: Sequence[AlertStep], now: datetime
    ) -> list[AlertChange]:
        if self.refusals:
            self.refusals -= 1
            raise StoreUnavailable("the store is not answering")
        return await self._store.apply_alert_outcomes(steps, now)


async def test_outcomes_wait_out_a_store_outage_and_still_alert(
    store: Store, receiver: Receiver
) -> None:
    config = AlertsConfig(url=receiver.url)
    metrics = Metrics()
    sender = loopback_sender(config, metrics)
    watch = AlertWatch(
        store=Faltering(store, refusals=2),
        sender=sender,
        config=config,
        clock=SystemClock(),
        metrics=metrics,
    )
    job = await create(store)
    with capture_logs() as logs:
        watching = asyncio.create_task(watch.run())
        sending = asyncio.create_task(sender.run())
        await written(watch, job, run(job, 1, ExecutionStatus.FAILURE))
        (request,) = await receiver.wait_for(1, within_s=20)
        watch.stop()
        await asyncio.wait_for(watching, 10)
        await sender.aclose(sending, 1.0)

    assert json.loads(request.body)["type"] == "job.failing"
    assert metrics.get("cronsvc_store_errors_total", op="alert_states") == 2
    assert [e["event"] for e in logs if e["event"] == "alert_outcomes_delayed"] == [
        "alert_outcomes_delayed"
    ]
