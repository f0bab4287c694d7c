"""Jobs that fall due at one instant are claimed in one batch, however the
claim lead drifted while they were put on the heap. Real scheduler on a real
SQLite store; its due ticks go to a sink whose lead estimate changes at every
call, as a store's timings do."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import UTC, datetime

from cronsvc.clock import SystemClock
from cronsvc.config import SchedulerConfig
from cronsvc.domain import Job
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.ids import new_id
from cronsvc.metrics import Metrics
from cronsvc.ownership import Membership
from cronsvc.scheduler import Scheduler
from cronsvc.store import Store
from cronsvc.ticks import DueTick, HandBack
from tests.helpers_store import make_job

JOBS = 12
GOLDEN = (1 + math.sqrt(5)) / 2


class DriftingSink:
    """Asks for a lead between 0.21 and 0.29 s, a different one at each call;
    `whole` is set once one batch holds every job of `jobs`."""

    def __init__(self) -> None:
        self.calls = 0
        self.jobs: set[str] = set()
        self.whole = asyncio.Event()

    def claim_lead(self, configured_s: float) -> float:
        self.calls += 1
        return 0.21 + 0.08 * ((self.calls * GOLDEN) % 1)

    def fire(self, due: Sequence[DueTick]) -> None:
        if {d.job.id for d in due} == self.jobs:
            self.whole.set()


def every_second_job() -> Job:
    return make_job(
        new_id(),
        last_tick=datetime.now(UTC),
        cron_expression="* * * * * *",
        webhook_url="http://127.0.0.1:9/",
    )


async def test_jobs_added_at_different_moments_are_claimed_in_one_batch_per_tick(
    store: Store,
) -> None:
    metrics = Metrics()
    sink = DriftingSink()
    scheduler = Scheduler(
        store=store,
        sink=sink,
        handback=HandBack(),
        clock=SystemClock(),
        config=SchedulerConfig(),
        metrics=metrics,
        health=HealthMonitor(probes={Dependency.STORE: store.ping}, metrics=metrics),
        instance_id="instance-a",
        started_at=datetime.now(UTC),
        membership=Membership("instance-a"),
    )
    running = asyncio.create_task(scheduler.run())
    try:
        await asyncio.wait_for(scheduler.ready.wait(), 10)
        jobs = [every_second_job() for _ in range(JOBS)]
        sink.jobs = {job.id for job in jobs}
        for job in jobs:  # each read and put on the heap at its own lead
            await store.create_job(job)
            scheduler.notify_job_changed(job.id)
            await asyncio.sleep(0.07)
        await asyncio.wait_for(sink.whole.wait(), 10)
    finally:
        scheduler.stop()
        await asyncio.wait_for(running, 10)
