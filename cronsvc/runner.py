"""The run path of one tick: lease, claim, dispatch, record.

Shared by the scheduler (scheduled and catch-up ticks) and the API (manual
runs). It never decides *when* to fire; the scheduler does.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from cronsvc.clock import Clock
from cronsvc.coord import Coordinator
from cronsvc.cron import parse_schedule
from cronsvc.dispatch import DeliveryResult, Dispatcher, WebhookRequest
from cronsvc.domain import ErrorInfo, Execution, ExecutionStatus, Job, Trigger
from cronsvc.errors import CronSvcError, JobNotFound
from cronsvc.ids import new_id
from cronsvc.metrics import Metrics
from cronsvc.results import ResultWriter
from cronsvc.retry import TRANSIENT, retry_transient
from cronsvc.store import ClaimOutcome, Store, TickClaim

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DueTick:
    job: Job
    tick: datetime
    trigger: Trigger


class TickRunner:
    def __init__(
        self,
        *,
        store: Store,
        coordinator: Coordinator,
        dispatcher: Dispatcher,
        results: ResultWriter,
        clock: Clock,
        metrics: Metrics,
        instance_id: str,
        lease_ttl_s: float,
        on_stale: Callable[[str], None],
    ) -> None:
        self._store = store
        self._coordinator = coordinator
        self._dispatcher = dispatcher
        self._results = results
        self._clock = clock
        self._metrics = metrics
        self._instance_id = instance_id
        self._lease_ttl_s = lease_ttl_s
        self._on_stale = on_stale
        self._tasks: set[asyncio.Task[None]] = set()
        self._leases_down = False

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def fire(self, due: Sequence[DueTick]) -> None:
        """Start the runs of ticks that fell due together, in the background:
        their leases and claims go out as one batch each."""
        self._spawn(self._run_batch(list(due)))

    async def trigger_now(self, job_id: str) -> Execution:
        """Run a job now (trigger `manual`), even if it is paused. Returns the
        execution as recorded when the run starts (RUNNING, or SKIPPED under
        `forbid`). Raises `JobNotFound`."""
        for _ in range(3):
            job = await self._store.get_job(job_id)
            (result,) = await self._store.claim_ticks(
                [self._claim(job, self._clock.now(), Trigger.MANUAL)]
            )
            if result.outcome is ClaimOutcome.STALE:
                continue  # changed between read and claim: read it again
            assert result.execution is not None
            if result.outcome is ClaimOutcome.CLAIMED:
                self._spawn(self._deliver(job, result.execution))
            else:
                self._count(result.execution.status)
            return result.execution
        raise JobNotFound(job_id)

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

    def _spawn(self, coro: asyncio._CoroutineLike[None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._metrics.inc(
                "cronsvc_run_errors_total", help="Runs that ended in an unexpected error"
            )
            log.error("run_crashed", exc_info=task.exception())

    def _claim(self, job: Job, tick: datetime, trigger: Trigger) -> TickClaim:
        return TickClaim(
            job_id=job.id,
            expected_version=job.version,
            scheduled_at=tick,
            trigger=trigger,
            execution_id=new_id(),
            instance_id=self._instance_id,
            executed_at=self._clock.now(),
        )

    async def _run_batch(self, due: list[DueTick]) -> None:
        """Lease and claim a batch of ticks due at one instant, then fire them
        at that instant. The scheduler may hand a batch over a little ahead of
        its tick, so the claims are written before the tick, not on its
        critical path; what changed in between is checked at the tick."""
        started = self._clock.time()
        fire_at = max(d.tick for d in due).timestamp()
        leased = await self._lease(due)
        self._metrics.inc(
            "cronsvc_lease_total", len(leased), help="Tick lease attempts", result="won"
        )
        self._metrics.inc(
            "cronsvc_lease_total", len(due) - len(leased), help="Tick lease attempts", result="lost"
        )
        if not leased:
            return
        claims = [self._claim(d.job, d.tick, d.trigger) for d in leased]
        try:
            results = await retry_transient(
                lambda: self._store.claim_ticks(claims),
                what="claim_ticks",
                clock=self._clock,
                attempts=4,
            )
        except TRANSIENT as exc:
            self._metrics.inc(
                "cronsvc_ticks_dropped_total",
                len(claims),
                help="Ticks not fired",
                reason="store_unavailable",
            )
            log.error(
                "ticks_dropped", count=len(claims), reason="store_unavailable", error=str(exc)
            )
            return
        log.debug(
            "ticks_claimed",
            count=len(claims),
            ahead_ms=round((fire_at - started) * 1000, 1),
            claim_ms=round((self._clock.time() - started) * 1000, 1),
        )
        claimed: list[tuple[DueTick, Execution]] = []
        for d, result in zip(leased, results, strict=True):
            if result.outcome is ClaimOutcome.CLAIMED:
                assert result.execution is not None
                claimed.append((d, result.execution))
            elif result.outcome is ClaimOutcome.STALE:
                self._on_stale(d.job.id)
            elif result.outcome is ClaimOutcome.DUPLICATE:
                self._metrics.inc(
                    "cronsvc_claims_duplicate_total", help="Ticks already claimed elsewhere"
                )
            else:
                self._count(ExecutionStatus.SKIPPED)
                log.info(
                    "tick_skipped",
                    job_id=d.job.id,
                    tick=d.tick.isoformat(),
                    reason="previous run still running",
                )
        if claimed and fire_at > self._clock.time():
            claimed = await self._wait_for_tick(claimed, fire_at)
        for d, execution in claimed:
            self._spawn(self._deliver(d.job, execution))

    async def _lease(self, due: list[DueTick]) -> list[DueTick]:
        """The ticks this instance won. While the coordinator is unreachable
        every tick goes on to the store's claim, the final fence against a
        duplicate: firing continues, at the cost of more claims that lose."""
        try:
            won = await self._coordinator.try_lease_ticks(
                [(d.job.id, d.tick) for d in due], self._lease_ttl_s
            )
        except TRANSIENT as exc:
            self._metrics.inc(
                "cronsvc_coordinator_errors_total", help="Coordinator calls that failed", op="lease"
            )
            if not self._leases_down:
                self._leases_down = True
                log.error("leases_unavailable", error=str(exc), fallback="store claim")
            return due
        if self._leases_down:
            self._leases_down = False
            log.info("leases_recovered")
        return [d for d, ok in zip(due, won, strict=True) if ok]

    async def _wait_for_tick(
        self, claimed: list[tuple[DueTick, Execution]], fire_at: float
    ) -> list[tuple[DueTick, Execution]]:
        """Sleep until the tick; return the claims still good to fire as they
        are. Claims whose job changed after the claim are settled apart."""
        try:
            await self._clock.sleep(fire_at - self._clock.time())
        except asyncio.CancelledError:
            for _, execution in claimed:
                self._finish(_ended(execution, self._clock.now(), "shutdown", _SHUTDOWN))
            raise
        try:
            versions = await self._store.current_versions([d.job.id for d, _ in claimed])
        except TRANSIENT:
            return claimed  # the claim itself was fenced by version; fire as claimed
        unchanged = []
        for d, execution in claimed:
            if versions.get(d.job.id) == d.job.version:
                unchanged.append((d, execution))
            else:
                self._spawn(self._settle_changed(d, execution))
        return unchanged

    async def _settle_changed(self, due: DueTick, execution: Execution) -> None:
        """The job changed between its claim and its tick: fire the new version
        if it is active and still has this tick, else record the tick SKIPPED."""
        self._on_stale(due.job.id)
        try:
            job: Job | None = await self._store.get_job(due.job.id)
        except JobNotFound:
            job = None
        if job is not None and job.spec.is_active and _has_tick(job, due.tick):
            await self._deliver(job, execution)
            return
        reason = "the job was deleted, paused or rescheduled between its claim and its tick"
        self._finish(_ended(execution, self._clock.now(), "job_changed", reason, skipped=True))

    async def _deliver(self, job: Job, execution: Execution) -> None:
        spec = job.spec
        request = WebhookRequest(
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
        )
        try:
            result = await self._dispatcher.deliver(request)
        except asyncio.CancelledError:
            self._finish(_ended(execution, self._clock.now(), "shutdown", _SHUTDOWN))
            raise
        self._finish(_finished(execution, result))
        lag_ms = round((result.first_sent_at - execution.scheduled_at.timestamp()) * 1000, 1)
        log.info(
            "tick_fired",
            job_id=job.id,
            tick=execution.scheduled_at.isoformat(),
            trigger=execution.trigger.value,
            lag_ms=lag_ms,
            status=result.status.value,
            attempts=result.attempts,
            response_status=result.response_status,
        )

    def _finish(self, execution: Execution) -> None:
        self._count(execution.status)
        self._results.submit(execution)

    def _count(self, status: ExecutionStatus) -> None:
        self._metrics.inc(
            "cronsvc_executions_total", help="Executions by outcome", status=status.value
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
    )


_SHUTDOWN = "cronsvc stopped before the webhook answered"


def _ended(
    execution: Execution, now: datetime, error_type: str, message: str, *, skipped: bool = False
) -> Execution:
    """An execution that ends without a webhook answer."""
    return dataclasses.replace(
        execution,
        status=ExecutionStatus.SKIPPED if skipped else ExecutionStatus.FAILURE,
        executed_at=None if skipped else execution.executed_at,
        finished_at=now,
        duration_ms=None if skipped else _ms_between(execution.executed_at, now),
        error=ErrorInfo(type=error_type, message=message),
    )


def _has_tick(job: Job, tick: datetime) -> bool:
    try:
        schedule = parse_schedule(job.spec.cron_expression, job.spec.timezone)
    except CronSvcError:
        return False
    return schedule.next_after(tick - timedelta(seconds=1)) == tick


def _ms_between(start: datetime | None, end: datetime) -> int | None:
    return None if start is None else int((end - start).total_seconds() * 1000)
