"""Ticks the job index found missed, written MISSED in the background. A
write the store refuses for now holds the job at the first of its ticks, to be
taken and judged again once the store answers.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import structlog

from cronsvc.alertwatch import AlertWatch
from cronsvc.clock import Clock
from cronsvc.domain import Job, Trigger
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.instants import rfc3339
from cronsvc.jobindex import JobHeap
from cronsvc.metrics import Metrics
from cronsvc.misfire import MIN_GRACE_S
from cronsvc.retry import TRANSIENT
from cronsvc.store import MissedRecords
from cronsvc.ticks import DueTick

log = structlog.get_logger(__name__)


class MissedRecorder:
    def __init__(
        self,
        *,
        store: MissedRecords,
        index: JobHeap,
        clock: Clock,
        metrics: Metrics,
        health: HealthMonitor,
        instance_id: str,
        wake: asyncio.Event,
        alerts: AlertWatch | None = None,
    ) -> None:
        self._store = store
        self._alerts = alerts
        self._index = index
        self._clock = clock
        self._metrics = metrics
        self._health = health
        self._instance_id = instance_id
        self._wake = wake
        self._writing: set[asyncio.Task[None]] = set()

    def record(self, job: Job, ticks: list[datetime]) -> None:
        task = asyncio.create_task(self._record(job, ticks))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def drain(self) -> None:
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)

    async def _record(self, job: Job, ticks: list[datetime]) -> None:
        spec = job.spec
        grace = max(spec.misfire_grace_seconds, MIN_GRACE_S)
        reason = (
            "overdue when the scheduler reached it and not fired "
            f"(misfirePolicy {spec.misfire_policy.value}, misfireGraceSeconds {grace:g})"
        )
        try:
            count = await self._store.record_missed(
                job, ticks, instance_id=self._instance_id, now=self._clock.now(), reason=reason
            )
        except TRANSIENT as exc:
            self._health.report(Dependency.STORE, type(exc).__name__)
            self._index.hold([DueTick(job, ticks[0], Trigger.SCHEDULE)])
            self._wake.set()
            self._metrics.inc("cronsvc_store_errors_total", op="record_missed")
            log.warning(
                "missed_ticks_held", job_id=job.id, count=len(ticks), error=str(exc) or None
            )
            return
        if not count:  # every tick had a record already (another instance wrote them)
            return
        self._metrics.inc("cronsvc_executions_total", count, status="MISSED")
        if self._alerts is not None:
            self._alerts.missed(job, ticks, count)
        log.warning(
            "ticks_missed",
            job_id=job.id,
            count=count,
            first=rfc3339(ticks[0]),
            last=rfc3339(ticks[-1]),
        )
