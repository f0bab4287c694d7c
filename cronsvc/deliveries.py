"""Claimed executions' webhooks sent and recorded: the tasks of the run path,
cancels of replaced runs, and the record each delivery ends with.

Every task of the run path (a batch's lease and claim, a delivery, an
adoption, a cancel notice) is registered here, so that shutdown drains them
all (`drain`) and a task that crashes is counted and logged.

Under `concurrencyPolicy` `replace` the store's claim ends the job's running
executions itself; their webhook requests are then aborted wherever they
run, through a cancel notice to every instance (this one included). An
instance that hears one cancels the delivery and writes nothing: the store
already holds the final record. A notice that never arrives leaves the old
request to run to its end; its result is then ignored by the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

import structlog

from cronsvc.alertwatch import AlertWatch
from cronsvc.clock import Clock
from cronsvc.dispatch import DeliveryResult, Dispatcher
from cronsvc.domain import Execution, ExecutionStatus, Job, Trigger
from cronsvc.feedback import TargetFeedback
from cronsvc.instants import rfc3339
from cronsvc.metrics import Metrics
from cronsvc.notices import Notices
from cronsvc.outgoing import Outgoing
from cronsvc.records import SHUTDOWN, ended
from cronsvc.results import ResultWriter
from cronsvc.store import ClaimResult
from cronsvc.webhook_request import WebhookRequest

log = structlog.get_logger(__name__)

MAX_REMEMBERED_CANCELS = 10_000
"""Cancel notices are remembered (by execution id) up to this many, so a
notice that arrives before its delivery has started still stops it."""

Run = tuple[Job, Execution, Outgoing]
"""A claimed execution to send: its job, and its webhook's delivery, the
first request made ahead where it could be (`Dispatcher.outgoing`)."""


class Ready:
    """Claimed runs made ready to go out at one instant (`Deliveries.ready`),
    for `Deliveries.start_all`. Opaque to its holder; one left unsent holds
    nothing that needs giving back."""

    __slots__ = ("_runs",)

    def __init__(self, runs: dict[str, Run]) -> None:
        self._runs = runs
        """Execution id -> its run."""

    def runs(self, executions: Sequence[Execution]) -> list[Run]:
        return [self._runs[execution.id] for execution in executions]


class Deliveries:
    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        results: ResultWriter,
        feedback: TargetFeedback,
        notices: Notices,
        clock: Clock,
        metrics: Metrics,
        alerts: AlertWatch | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._alerts = alerts
        self._results = results
        self._feedback = feedback
        self._notices = notices
        self._clock = clock
        self._metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()
        self._deliveries: dict[str, asyncio.Task[Any]] = {}
        """Execution id -> the task sending its webhook, while it runs."""
        self._cancelled: dict[str, None] = {}
        """Execution ids named by cancel notices, oldest first (bounded)."""

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: asyncio._CoroutineLike[None]) -> asyncio.Task[None]:
        """Run `coro` as a task of the run path (see the module's docstring)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._metrics.inc("cronsvc_run_errors_total")
            log.error("run_crashed", exc_info=task.exception())

    async def drain(self, grace_s: float) -> None:
        """Let runs in flight finish for up to `grace_s`, then cancel the rest
        (each cancelled run is recorded as a FAILURE, never left RUNNING)."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("runs_cancelled_at_shutdown", count=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    def running(self, execution_id: str) -> bool:
        """Whether this execution's webhook is being sent here."""
        return execution_id in self._deliveries

    def cancel_replaced(self, execution_ids: Sequence[str]) -> None:
        """A cancel notice: abort the deliveries of these executions if this
        instance runs them (or is about to), writing no result for them."""
        for execution_id in execution_ids:
            self._cancelled[execution_id] = None
            task = self._deliveries.get(execution_id)
            if task is not None and not task.done():
                task.cancel()
        while len(self._cancelled) > MAX_REMEMBERED_CANCELS:
            del self._cancelled[next(iter(self._cancelled))]

    def replaced(self, results: Sequence[ClaimResult]) -> None:
        """Have the runs that these claims ended (under `replace`) aborted,
        here at once and elsewhere by a cancel notice."""
        ids = [execution_id for result in results for execution_id in result.replaced]
        if not ids:
            return
        self._metrics.inc("cronsvc_runs_replaced_total", len(ids))
        self._metrics.inc("cronsvc_executions_total", len(ids), status="FAILURE")
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
        self.spawn(self._notices.runs_replaced(ids))

    def ready(self, claimed: Sequence[tuple[Job, Execution]], at: float) -> Ready:
        """Claimed executions to send at `at` (Unix seconds), their first
        requests made now, so that then they only go out."""
        return Ready(
            {
                execution.id: (job, execution, self._outgoing(job, execution, at))
                for job, execution in claimed
            }
        )

    def start(self, job: Job, execution: Execution) -> None:
        """Send one claimed execution's webhook now."""
        self._start([(job, execution, self._outgoing(job, execution))])

    def start_all(self, ready: Ready, executions: Sequence[Execution]) -> None:
        """Send these of the executions made `ready`, in this order; the
        others are dropped, unsent."""
        self._start(ready.runs(executions))

    def _start(self, runs: Sequence[Run]) -> None:
        """Their first requests go out now, one after another, where they
        can (`Outgoing.send_first`); the rest of each delivery runs in a task
        of its own, started after: a burst's requests then leave together,
        not one per task turn."""
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
        """Send one claimed execution's webhook in the calling task."""
        outgoing = self._outgoing(job, execution)
        outgoing.send_first()
        await self.deliver(job, execution, outgoing)

    def _outgoing(self, job: Job, execution: Execution, at: float | None = None) -> Outgoing:
        return self._dispatcher.outgoing(webhook_request(job, execution), at)

    async def deliver(self, job: Job, execution: Execution, outgoing: Outgoing) -> None:
        """Send a webhook whose first request went out or is to go out now
        (`outgoing`), and record its result."""
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
        self._metrics.inc("cronsvc_replaced_runs_aborted_total")
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
                self.finish(ended(execution, self._clock.now(), "shutdown", SHUTDOWN), job)
            raise
        finished = _finished(execution, result)
        if result.status is ExecutionStatus.FAILURE:
            finished = await self._feedback.heed(job, finished, result)
        self.finish(finished, job)
        lag_s = result.first_sent_at - execution.scheduled_at.timestamp()
        if execution.trigger is not Trigger.MANUAL:
            self._metrics.fire_lag.observe(max(0.0, lag_s))
        self._metrics.webhook_duration.labels(result.status.value).observe(
            result.duration_ms / 1000
        )
        self._metrics.inc("cronsvc_webhook_attempts_total", result.attempts)
        lag_ms = round(lag_s * 1000, 1)
        log.info(
            "tick_fired",
            job_id=job.id,
            tick=rfc3339(execution.scheduled_at),
            trigger=execution.trigger.value,
            lag_ms=lag_ms,
            status=result.status.value,
            attempts=result.attempts,
            response_status=result.response_status,
        )

    def finish(self, execution: Execution, job: Job | None = None) -> None:
        """Count an execution's final record and write it (behind, in
        batches); its job's alerts hear of it once it is written (`job`:
        saves reading the job, where it is at hand)."""
        self.count(execution.status)
        if self._alerts is not None:
            self._alerts.expect(execution, job)
        self._results.submit(execution)

    def count(self, status: ExecutionStatus) -> None:
        self._metrics.inc("cronsvc_executions_total", status=status.value)


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
