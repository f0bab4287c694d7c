"""Ticks another instance left, taken over by the leader: claimed ahead but never
sent (its claimer stopped first), sent late or recorded MISSED or SKIPPED as the job's
misfire policy and current state say; or leased and never claimed (`OrphanClaims`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from cronsvc.claims import MAX_CLAIM_LEAD_S, LostLeases, claims_of
from cronsvc.clock import Clock, sleep_until
from cronsvc.cron import parse_schedule
from cronsvc.deliveries import ADOPTED_TOO_LATE, Deliveries, ended, has_tick, missed
from cronsvc.domain import Execution, Job
from cronsvc.errors import JobNotFound
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.instants import rfc3339
from cronsvc.metrics import Metrics
from cronsvc.misfire import plan_due_ticks
from cronsvc.ownership import Ownership
from cronsvc.retry import TRANSIENT, retry_transient
from cronsvc.store import ClaimOutcome, Store, TickClaims

log = structlog.get_logger(__name__)

ADOPT_ROUNDS = 20
CLAIM_BATCH = 1000
"""Orphaned ticks claimed per store call."""


def still_owed(job: Job, tick: datetime, now: datetime, *, max_catchup: int) -> bool:
    """Judged as a tick overdue since before this instance took it over."""
    schedule = parse_schedule(job.spec.cron_expression, job.spec.timezone)
    ticks = [tick]
    while len(ticks) <= max_catchup:
        later = schedule.next_after(ticks[-1])
        if later is None or later > now:
            break
        ticks.append(later)
    plan = plan_due_ticks(
        ticks,
        now=now,
        started_at=now,
        policy=job.spec.misfire_policy,
        grace_s=job.spec.misfire_grace_seconds,
        max_catchup=max_catchup,
    )
    return any(fired == tick for fired, _ in plan.fire)


@dataclass(eq=False, repr=False, kw_only=True, slots=True)
class Adoption:
    store: Store
    deliveries: Deliveries
    health: HealthMonitor
    clock: Clock
    metrics: Metrics
    instance_id: str
    max_catchup: int

    def adopt(self, executions: Sequence[Execution]) -> None:
        """One task per tick."""
        by_tick: dict[datetime, list[Execution]] = {}
        for execution in executions:
            by_tick.setdefault(execution.scheduled_at, []).append(execution)
        for group in by_tick.values():
            self.deliveries.spawn(self._run_adopted(group))

    async def _run_adopted(self, executions: list[Execution]) -> None:
        # Not due yet if its claimer stopped right after claiming. Cancelled
        # here, they stay RUNNING and unsent: adopted at the next start.
        await sleep_until(self.clock, executions[0].scheduled_at.timestamp())
        for _ in range(ADOPT_ROUNDS):
            # An outage delays these runs (their misfire policy then judges
            # them); it does not leave them RUNNING and unsent.
            await self.health.until_up(Dependency.STORE, self.clock)
            try:
                await retry_transient(
                    lambda: self._settle_adopted(executions),
                    what="adopt_unsent",
                    clock=self.clock,
                    attempts=2,
                )
                return
            except TRANSIENT as exc:
                self.health.report(Dependency.STORE, type(exc).__name__)
                error = str(exc)
        # Left RUNNING and unsent under this instance's id: the start after its
        # next stop adopts them.
        count = len(executions)
        self.metrics.inc("cronsvc_ticks_dropped_total", count, reason="store_unavailable")
        log.error("adopted_ticks_unsent", count=count, reason="store_unavailable", error=error)

    async def _settle_adopted(self, executions: list[Execution]) -> None:
        """Every store call comes before any outcome is acted on, so a retry
        after a store error repeats nothing."""
        now = self.clock.now()
        jobs: dict[str, Job] = {}
        for job_id in {execution.job_id for execution in executions}:
            with contextlib.suppress(JobNotFound):
                jobs[job_id] = await self.store.get_job(job_id)
        ended_now: list[Execution] = []
        send: list[tuple[Job, Execution]] = []
        for execution in executions:
            job = jobs.get(execution.job_id)
            tick = execution.scheduled_at
            if job is None or not job.spec.is_active or not has_tick(job, tick):
                reason = "the job was deleted, paused or rescheduled before its tick was sent"
                ended_now.append(ended(execution, now, "job_changed", reason, skipped=True))
            elif not still_owed(job, tick, now, max_catchup=self.max_catchup):
                ended_now.append(missed(execution, now, ADOPTED_TOO_LATE))
            else:
                send.append((job, execution))
        marked = await self.store.mark_dispatched(self.instance_id, [e.id for _, e in send])
        for execution in ended_now:
            self.deliveries.finish(execution)
        for job, execution in send:
            if execution.id in marked:
                log.info(
                    "tick_adopted",
                    job_id=job.id,
                    tick=rfc3339(execution.scheduled_at),
                    lag_ms=round((now - execution.scheduled_at).total_seconds() * 1000, 1),
                )
                self.deliveries.start(job, execution)


def keep_lost_s(heartbeat_interval_s: float) -> float:
    """Twice what a leader may take to see a lease's winner gone (its
    announcement, its leader lease, then one more announcement lifetime of
    reap grace: 1.5 heartbeat intervals each), after the longest claim lead."""
    return 2 * 3 * 1.5 * heartbeat_interval_s + MAX_CLAIM_LEAD_S


@dataclass(eq=False, repr=False, kw_only=True, slots=True)
class OrphanClaims:
    """The leader's claim of the ticks whose leases the others lost. A lease and the
    store's claim are two steps: an instance that wins a lease and dies before its claim
    lands leaves a tick the others may not claim and nobody records. So every instance
    keeps the ticks whose leases it lost (`LostLeases`) longer than the leader takes to
    see an instance gone; the leader then claims them all. The store's unique claim keeps
    what was claimed already (DUPLICATE); the ticks won are adopted, as any tick claimed
    and never sent. The instance that left may have leased ticks up to its claim lead
    ahead: for that long the leader claims the ticks whose leases it loses as if won.
    So does every instance that hears an owner left, and one that shares the jobs
    with other owners always does (`LostLeases.claim_all`): nobody else leases a
    job's ticks then, so nobody else lost (and keeps) the leases a leaver left."""

    store: TickClaims
    lost: LostLeases
    clock: Clock
    metrics: Metrics
    instance_id: str

    async def claim(self) -> list[Execution]:
        """The executions won, not yet sent (for adoption to settle)."""
        self.lost.claim_until(self.clock.time() + MAX_CLAIM_LEAD_S)
        due = self.lost.take()
        won: list[Execution] = []
        for start in range(0, len(due), CLAIM_BATCH):
            chunk = due[start : start + CLAIM_BATCH]
            claims = claims_of(
                chunk, clock=self.clock, instance_id=self.instance_id, dispatched=False
            )
            try:
                results = await self.store.claim_ticks(claims)
            except BaseException:
                self.lost.give_back(due[start:])
                raise
            won += [
                r.execution
                for r in results
                if r.outcome is ClaimOutcome.CLAIMED and r.execution is not None
            ]
        if won:
            self.metrics.inc("cronsvc_ticks_orphaned_total", len(won))
            log.warning("orphaned_ticks_claimed", count=len(won), looked_at=len(due))
        return won

    def owners_changed(self, before: Ownership, after: Ownership) -> None:
        self.lost.claim_all = not after.alone
        if not set(before.members) <= set(after.members):
            self.lost.claim_until(self.clock.time() + MAX_CLAIM_LEAD_S)
