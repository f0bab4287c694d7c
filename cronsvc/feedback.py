"""What a failing webhook target asks of its job: 410 Gone pauses it, a Retry-After
holds back its ticks. Heeded before the record is written (a 410's says the job was
paused); a store that does not answer leaves the job as it is, the wish logged.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import structlog

from cronsvc.alertwatch import AlertWatch
from cronsvc.clock import Clock
from cronsvc.cron import parse_schedule
from cronsvc.dispatch import DeliveryResult
from cronsvc.domain import ErrorInfo, Execution, Job
from cronsvc.errors import CronSvcError
from cronsvc.instants import rfc3339
from cronsvc.metrics import Metrics
from cronsvc.notices import Notices
from cronsvc.retry import TRANSIENT
from cronsvc.store import Store
from cronsvc.ticks import HandBack

log = structlog.get_logger(__name__)


@dataclasses.dataclass(eq=False, repr=False, kw_only=True, slots=True)
class TargetFeedback:
    store: Store
    clock: Clock
    metrics: Metrics
    notices: Notices
    handback: HandBack
    max_defer_s: float
    alerts: AlertWatch | None = None

    async def heed(self, job: Job, execution: Execution, result: DeliveryResult) -> Execution:
        """The execution to record. A 410 pauses the job unless someone changed it
        since; a Retry-After holds back only ticks that would fall inside it."""
        now = self.clock.now()
        try:
            if result.response_status == 410:
                return await self._gone(job, execution, now)
            if result.retry_after_s is not None:
                await self._defer(job, execution, result.retry_after_s, now)
        except TRANSIENT as exc:
            log.warning("target_request_not_recorded", job_id=job.id, error=str(exc))
        return execution

    async def _gone(self, job: Job, execution: Execution, now: datetime) -> Execution:
        reason = f"the webhook target answered 410 Gone at {rfc3339(now)}"
        paused = await self.store.pause_job(
            job.id, expected_version=job.version, reason=reason, now=now
        )
        if paused is None:
            return execution
        self.handback.stale(job.id)  # this instance's scheduler drops it now
        await self.notices.job_changed(job.id)
        self.metrics.inc("cronsvc_jobs_paused_by_target_total")
        log.warning("job_paused_by_target", job_id=job.id, reason=reason)
        recorded = dataclasses.replace(
            execution,
            error=ErrorInfo(type="target_gone", message="HTTP 410 Gone: the job was paused"),
        )
        if self.alerts is not None:
            self.alerts.paused(job, recorded)
        return recorded

    async def _defer(
        self, job: Job, execution: Execution, retry_after_s: float, now: datetime
    ) -> None:
        until = now + timedelta(seconds=min(retry_after_s, self.max_defer_s))
        upcoming = next_tick(job, execution.scheduled_at)
        if upcoming is not None and upcoming < until:
            await self.store.defer_job(job.id, until)
            log.info("job_deferred_by_target", job_id=job.id, until=rfc3339(until))


def next_tick(job: Job, after: datetime) -> datetime | None:
    try:
        schedule = parse_schedule(job.spec.cron_expression, job.spec.timezone)
    except CronSvcError:
        return None
    return schedule.next_after(after)
