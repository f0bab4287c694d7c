"""Claimed executions' webhooks sent and recorded, and the record a run ends with
when no answer came (the same words wherever it is written). Every task of the run
path is spawned here, so shutdown drains them all and a crash is counted.

Under `replace` the store's claim ends the old runs itself; a cancel notice aborts
their requests wherever they run and nothing is written (the store holds the final
record). A notice that never arrives leaves the old request to finish, ignored.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from cronsvc.alertwatch import AlertWatch
from cronsvc.clock import Clock
from cronsvc.dispatch import DeliveryResult, Dispatcher, Outgoing
from cronsvc.domain import ErrorInfo, Execution, ExecutionStatus, Job, Trigger
from cronsvc.feedback import TargetFeedback, next_tick
from cronsvc.instants import rfc3339
from cronsvc.metrics import Metrics
from cronsvc.misfire import MIN_GRACE_S
from cronsvc.notices import Notices
from cronsvc.results import ResultWriter
from cronsvc.share import RecentFires
from cronsvc.store import ClaimResult
from cronsvc.ticks import DueTick
from cronsvc.webhook_request import WebhookRequest

log = structlog.get_logger(__name__)

SHUTDOWN = "cronsvc stopped before the webhook answered"
SHUTDOWN_UNSENT = "cronsvc stopped before its tick; the webhook was not sent"
ADOPTED_TOO_LATE = (
    "the instance that claimed this tick stopped before sending it, "
    "and the job's misfire policy does not fire it this late"
)
UNANSWERED = "the store wrote its claim but its answer never came back, so the webhook was not sent"
CLAIMED_LATE = "the store took its claim {late_s:.1f} s after the tick"
HELD_UP = "this instance was held up {late_s:.1f} s past the tick between its claim and its send"

MAX_REMEMBERED_CANCELS = 10_000
"""Remembered so that a notice that arrives before its delivery started still stops it."""

Run = tuple[Job, Execution, Outgoing]
Ready = dict[str, Run]
"""By execution id, runs whose first requests were made ahead; one left unsent
holds nothing that needs giving back."""


@dataclasses.dataclass(eq=False, repr=False, kw_only=True, slots=True)
class Deliveries:
    dispatcher: Dispatcher
    results: ResultWriter
    feedback: TargetFeedback
    notices: Notices
    clock: Clock
    metrics: Metrics
    alerts: AlertWatch | None = None
    recent: RecentFires | None = None
    _tasks: set[asyncio.Task[None]] = dataclasses.field(default_factory=set, init=False)
    _deliveries: dict[str, asyncio.Task[Any]] = dataclasses.field(default_factory=dict, init=False)
    _cancelled: dict[str, None] = dataclasses.field(default_factory=dict, init=False)
    """Named by cancel notices, oldest first (bounded)."""

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: asyncio._CoroutineLike[None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.metrics.inc("cronsvc_run_errors_total")
            log.error("run_crashed", exc_info=task.exception())

    async def drain(self, grace_s: float) -> None:
        """A run cancelled after `grace_s` is recorded FAILURE, never left RUNNING."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("runs_cancelled_at_shutdown", count=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    def running(self, execution_id: str) -> bool:
        return execution_id in self._deliveries

    def cancel_replaced(self, execution_ids: Sequence[str]) -> None:
        """A cancel notice: abort these deliveries if they run here (or are about to)."""
        for execution_id in execution_ids:
            self._cancelled[execution_id] = None
            task = self._deliveries.get(execution_id)
            if task is not None and not task.done():
                task.cancel()
        while len(self._cancelled) > MAX_REMEMBERED_CANCELS:
            del self._cancelled[next(iter(self._cancelled))]

    def replaced(self, results: Sequence[ClaimResult]) -> None:
        ids = [execution_id for result in results for execution_id in result.replaced]
        if not ids:
            return
        self.metrics.inc("cronsvc_runs_replaced_total", len(ids))
        self.metrics.inc("cronsvc_executions_total", len(ids), status="FAILURE")
        for result in results:
            if result.replaced:
                assert result.execution is not None
                log.info(
                    "runs_replaced",
                    job_id=result.execution.job_id,
                    execution_id=result.execution.id,
                    replaced=list(result.replaced),
                )
        self.cancel_replaced(ids)
        self.spawn(self.notices.runs_replaced(ids))

    def ready(self, claimed: Sequence[tuple[Job, Execution]], at: float) -> Ready:
        """First requests made now for a send at `at` (Unix seconds)."""
        return {
            execution.id: (job, execution, self._outgoing(job, execution, at))
            for job, execution in claimed
        }

    def start(self, job: Job, execution: Execution) -> None:
        self._start([(job, execution, self._outgoing(job, execution))])

    def start_all(self, ready: Ready, executions: Sequence[Execution]) -> None:
        """Send these, in this order; the others made ready are dropped, unsent."""
        self._start([ready[execution.id] for execution in executions])

    def _start(self, runs: Sequence[Run]) -> None:
        """All first requests go out before any delivery task starts: a burst's
        requests then leave together, not one per task turn."""
        started = []
        for job, execution, outgoing in runs:
            if execution.id in self._cancelled:
                self._aborted(execution)  # replaced before it was sent
                continue
            outgoing.send_first()
            started.append((job, execution, outgoing))
        for job, execution, outgoing in started:
            self.spawn(self.deliver(job, execution, outgoing))

    async def send_now(self, job: Job, execution: Execution) -> None:
        """In the calling task."""
        outgoing = self._outgoing(job, execution)
        outgoing.send_first()
        await self.deliver(job, execution, outgoing)

    def _outgoing(self, job: Job, execution: Execution, at: float | None = None) -> Outgoing:
        return self.dispatcher.outgoing(webhook_request(job, execution), at)

    async def deliver(self, job: Job, execution: Execution, outgoing: Outgoing) -> None:
        if execution.id in self._cancelled:  # replaced before its task began
            outgoing.abandon()
            self._aborted(execution)
            return
        task = asyncio.current_task()
        assert task is not None
        self._deliveries[execution.id] = task
        try:
            await self._send(job, execution, outgoing)
        finally:
            self._deliveries.pop(execution.id, None)

    def _aborted(self, execution: Execution) -> None:
        self.metrics.inc("cronsvc_replaced_runs_aborted_total")
        log.info(
            "run_aborted", job_id=execution.job_id, execution_id=execution.id, reason="replaced"
        )

    async def _send(self, job: Job, execution: Execution, outgoing: Outgoing) -> None:
        try:
            result = await outgoing.result()
        except asyncio.CancelledError:
            if execution.id in self._cancelled:
                self._aborted(execution)  # the store holds its record already
            else:
                self.finish(ended(execution, self.clock.now(), "shutdown", SHUTDOWN), job)
            raise
        finished = _finished(execution, result)
        if result.status is ExecutionStatus.FAILURE:
            finished = await self.feedback.heed(job, finished, result)
        self.finish(finished, job)
        lag_s = result.first_sent_at - execution.scheduled_at.timestamp()
        if execution.trigger is not Trigger.MANUAL:
            self.metrics.fire_lag.observe(max(0.0, lag_s))
            if self.recent is not None:
                self.recent.add()
        self.metrics.webhook_duration.labels(result.status.value).observe(result.duration_ms / 1000)
        self.metrics.inc("cronsvc_webhook_attempts_total", result.attempts)
        log.info(
            "tick_fired",
            job_id=job.id,
            tick=rfc3339(execution.scheduled_at),
            trigger=execution.trigger.value,
            lag_ms=round(lag_s * 1000, 1),
            status=result.status.value,
            attempts=result.attempts,
            response_status=result.response_status,
        )

    def finish(self, execution: Execution, job: Job | None = None) -> None:
        """Written behind, in batches; `job`, where at hand, saves the alerts a read."""
        self.count(execution.status)
        if self.alerts is not None:
            self.alerts.expect(execution, job)
        self.results.submit(execution)

    def count(self, status: ExecutionStatus) -> None:
        self.metrics.inc("cronsvc_executions_total", status=status.value)


def webhook_request(job: Job, execution: Execution) -> WebhookRequest:
    spec = job.spec
    return WebhookRequest(
        execution_id=execution.id,
        job_id=job.id,
        job_name=spec.name,
        scheduled_at=execution.scheduled_at,
        trigger=execution.trigger,
        url=spec.webhook_url,
        method=spec.http_method,
        headers=spec.headers,
        body=spec.body,
        timeout_s=spec.timeout_seconds,
        retry=spec.retry,
        secret=spec.secret,
        previous_secret=job.previous_secret,
    )


def _finished(execution: Execution, result: DeliveryResult) -> Execution:
    return dataclasses.replace(
        execution,
        status=result.status,
        executed_at=result.executed_at,
        finished_at=result.finished_at,
        duration_ms=result.duration_ms,
        attempts=result.attempts,
        response_status=result.response_status,
        response_body=result.response_body,
        response_truncated=result.response_truncated,
        error=result.error,
        attempt_log=result.attempt_log,
    )


def missed(execution: Execution, now: datetime, message: str) -> Execution:
    return dataclasses.replace(
        execution,
        status=ExecutionStatus.MISSED,
        executed_at=None,
        finished_at=now,
        error=ErrorInfo(type="missed", message=message),
    )


def ended(
    execution: Execution, now: datetime, error_type: str, message: str, *, skipped: bool = False
) -> Execution:
    return dataclasses.replace(
        execution,
        status=ExecutionStatus.SKIPPED if skipped else ExecutionStatus.FAILURE,
        executed_at=None if skipped else execution.executed_at,
        finished_at=now,
        duration_ms=None if skipped else _ms_between(execution.executed_at, now),
        error=ErrorInfo(type=error_type, message=message),
    )


def past_grace(due: DueTick, now: datetime) -> bool:
    """Recorded MISSED then, as a tick found overdue after a restart is, not fired late."""
    if due.trigger is Trigger.MANUAL:
        return False
    grace = max(due.job.spec.misfire_grace_seconds, MIN_GRACE_S)
    return (now - due.tick).total_seconds() > grace


def missed_late(execution: Execution, due: DueTick, now: datetime, why: str) -> Execution:
    late_s = (now - due.tick).total_seconds()
    spec = due.job.spec
    return missed(
        execution,
        now,
        why.format(late_s=late_s) + ", past the job's misfire grace "
        f"(misfirePolicy {spec.misfire_policy.value}, "
        f"misfireGraceSeconds {max(spec.misfire_grace_seconds, MIN_GRACE_S):g}); "
        "the webhook was not sent",
    )


def has_tick(job: Job, tick: datetime) -> bool:
    return next_tick(job, tick - timedelta(seconds=1)) == tick


def _ms_between(start: datetime | None, end: datetime) -> int | None:
    return None if start is None else int((end - start).total_seconds() * 1000)
