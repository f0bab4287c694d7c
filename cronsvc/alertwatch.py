"""Run outcomes gathered for alerts: what each job's runs came to on this
instance, folded into its stored alert state in the background, and the
state changes this instance effected handed to the sender.

Each outcome is observed once, by the instance that recorded it: a run's
result once the store has taken it (`written`; one the store refused, its
run being LOST or replaced already, is not an outcome here: the record
that stands was observed by whoever wrote it), MISSED records as they are
inserted, LOST records by the leader that marked them, a 410 pause by the
instance that paused the job, and ticks whose record could not be written
(`dropped`, `unrecorded`).

On the firing path the cost is one check: a job without an alert policy
(and no `[alerts] url`) is passed over; with one, its run's id is noted in
a dict, taken out again when the result is written. Outcomes wait in a
bounded buffer; one that does not fit is counted as a dropped alert and
logged, never waited for. The store's compare-and-set (`AlertStates`)
decides which instance effects a change; only that one sends its alert.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

import structlog

from cronsvc.alertpolicy import effective_policy
from cronsvc.alerts import AlertStep, Outcome, Signal, in_tick_order
from cronsvc.alertsend import Alert, AlertSender
from cronsvc.clock import Clock
from cronsvc.config import AlertsConfig
from cronsvc.domain import AlertPolicy, Execution, ExecutionStatus, Job
from cronsvc.errors import JobNotFound
from cronsvc.metrics import Metrics
from cronsvc.results import Drain
from cronsvc.retry import TRANSIENT
from cronsvc.store import AlertStates, FinishReport

log = structlog.get_logger(__name__)

LINGER_S = 0.1
"""Outcomes are applied this long after the first of a batch arrives, so
one store call takes a burst's."""


class AlertStore(AlertStates, Protocol):
    async def get_job(self, job_id: str) -> Job: ...


Pending = tuple[Job | None, Outcome]
"""An outcome and its job, if at hand (else it is read before the outcome is applied)."""


class AlertWatch:
    def __init__(
        self,
        *,
        store: AlertStore,
        sender: AlertSender,
        config: AlertsConfig,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._sender = sender
        self._config = config
        self._default = bool(config.url)
        self._clock = clock
        self._metrics = metrics
        self._max = config.max_pending
        self._expected: dict[str, Job | None] = {}
        """Execution id -> its job (None: to be read), for runs whose results
        are on their way to the store."""
        self._drain = Drain[Pending](
            clock=clock,
            flush=self._apply,
            give_up=self._gave_up,
            linger=lambda: clock.sleep(LINGER_S),
            batch=500,
        )
        self._overflow = 0

    # -- What the service tells it ------------------------------------------

    def expect(self, execution: Execution, job: Job | None) -> None:
        """A run's result goes to the store: an outcome once it is written.
        The firing path's hook: for a job without alerts, one check."""
        if job is not None and job.spec.alerts is None and not self._default:
            return
        if len(self._expected) >= self._max:
            self._overflowed(execution.job_id)
            return
        self._expected[execution.id] = job

    def written(self, batch: Sequence[Execution], report: FinishReport) -> None:
        """These results were written (those in `report` aside)."""
        expected = self._expected
        if not expected:
            return
        refused = {execution_id for execution_id, _ in report.already_final}
        refused.update(report.missing)
        for execution in batch:
            if execution.id not in expected:
                continue
            job = expected.pop(execution.id)
            if execution.id not in refused:
                self._add(job, run_outcome(execution))

    def dropped(self, executions: Iterable[Execution]) -> None:
        """These results will never be written: their ticks go unrecorded
        (for the jobs `expect` found alerts might apply to)."""
        for execution in executions:
            if execution.id not in self._expected:
                continue
            outcome = Outcome(
                job_id=execution.job_id,
                status=Signal.UNRECORDED,
                scheduled_at=execution.scheduled_at,
                execution_id=execution.id,
                run_status=execution.status,
                error=execution.error,
            )
            self._add(self._expected.pop(execution.id), outcome)

    def unrecorded(self, job_id: str, tick: datetime | None) -> None:
        """Ticks of this job were left without a record."""
        self._add(None, Outcome(job_id=job_id, status=Signal.UNRECORDED, scheduled_at=tick))

    def missed(self, job: Job, ticks: Sequence[datetime], count: int) -> None:
        """`count` MISSED records were inserted for these ticks."""
        if job.spec.alerts is None and not self._default:
            return
        self._add(
            job,
            Outcome(
                job_id=job.id,
                status=ExecutionStatus.MISSED,
                count=count,
                scheduled_at=ticks[-1],
                finished_at=self._clock.now(),
                error=None,
            ),
        )

    def lost(self, executions: Iterable[Execution]) -> None:
        """The leader marked these runs LOST (their jobs are read before applying)."""
        for execution in executions:
            self._add(None, run_outcome(execution))

    def paused(self, job: Job, execution: Execution) -> None:
        """This instance paused the job: its target answered 410 Gone."""
        if job.spec.alerts is None and not self._default:
            return
        self._add(
            job,
            Outcome(
                job_id=job.id,
                status=Signal.PAUSED,
                scheduled_at=execution.scheduled_at,
                finished_at=execution.finished_at,
                execution_id=execution.id,
                run_status=ExecutionStatus.FAILURE,
                error=execution.error,
            ),
        )

    def _add(self, job: Job | None, outcome: Outcome) -> None:
        if len(self._drain.items) >= self._max:
            self._overflowed(outcome.job_id)
            return
        if self._overflow:
            log.error("alert_outcomes_dropped_overflow_ended", count=self._overflow)
            self._overflow = 0
        self._drain.put((job, outcome))

    def _overflowed(self, job_id: str) -> None:
        self._metrics.inc("cronsvc_alerts_total", outcome="dropped")
        if not self._overflow:  # logged once when an overflow begins
            log.error("alert_outcomes_dropped", reason="buffer_full", job_id=job_id)
        self._overflow += 1

    # -- The background task --------------------------------------------------

    def stop(self) -> None:
        """Apply what is pending, then end `run`."""
        self._drain.stop()

    async def run(self, give_up_after_s: float = 5.0) -> None:
        """Apply outcomes until stopped; after `stop`, keep trying for at most
        `give_up_after_s`, then count what is left as dropped."""
        await self._drain.run(give_up_after_s)

    def _gave_up(self, left: list[Pending]) -> None:
        self._metrics.inc("cronsvc_alerts_total", len(left), outcome="dropped")
        log.error("alert_outcomes_dropped", reason="shutdown", count=len(left))

    async def _apply(self, batch: list[Pending]) -> bool:
        """Apply a batch; False (the batch kept) when the store did not answer."""
        try:
            jobs = await self._jobs(batch)
            steps = self._steps(batch, jobs)
            changes = (
                await self._store.apply_alert_outcomes(steps, self._clock.now()) if steps else []
            )
        except TRANSIENT as exc:
            self._metrics.inc("cronsvc_store_errors_total", op="alert_states")
            if not self._drain.failures:
                log.error("alert_outcomes_delayed", pending=len(self._drain.items), error=str(exc))
            return False
        for change in changes:
            job = jobs[change.job_id]
            self._sender.send(
                Alert(change=change, job_name=job.spec.name, job_secret=job.spec.secret)
            )
        return True

    async def _jobs(self, batch: list[Pending]) -> dict[str, Job]:
        """The batch's jobs: as observed, else read (a job gone is left out)."""
        jobs: dict[str, Job] = {}
        unread: set[str] = set()
        for job, outcome in batch:
            if job is not None:
                jobs[job.id] = job
            else:
                unread.add(outcome.job_id)
        for job_id in unread - jobs.keys():
            with contextlib.suppress(JobNotFound):
                jobs[job_id] = await self._store.get_job(job_id)
        return jobs

    def _steps(self, batch: list[Pending], jobs: dict[str, Job]) -> list[AlertStep]:
        by_job: dict[str, list[Outcome]] = {}
        policies: dict[str, AlertPolicy | None] = {
            job_id: effective_policy(job.spec, self._config) for job_id, job in jobs.items()
        }
        for _, outcome in batch:
            if policies.get(outcome.job_id) is not None:
                by_job.setdefault(outcome.job_id, []).append(outcome)
        steps = []
        for job_id, outcomes in by_job.items():
            policy = policies[job_id]
            assert policy is not None
            steps.append(
                AlertStep(job_id=job_id, policy=policy, outcomes=tuple(in_tick_order(outcomes)))
            )
        return steps


def run_outcome(execution: Execution) -> Outcome:
    return Outcome(
        job_id=execution.job_id,
        status=execution.status,
        scheduled_at=execution.scheduled_at,
        finished_at=execution.finished_at,
        execution_id=execution.id,
        error=execution.error,
    )
