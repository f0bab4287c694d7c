"""The scheduler's `TickSink`: a batch of ticks due at one instant leased, claimed,
marked dispatched and sent at its instant. The scheduler decides *when*; it may
hand a batch over ahead (`claim_lead`) so the claim is off the tick's critical
path. Ticks the store does not take in time are handed back, never dropped. The
API's run-now makes its claim here too (`JobService`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import structlog

from cronsvc.clock import Clock, sleep_until
from cronsvc.coord import Coordinator
from cronsvc.deliveries import CLAIMED_LATE, Deliveries, missed_late, past_grace
from cronsvc.domain import Execution, ExecutionStatus, Job, Trigger
from cronsvc.errors import JobNotFound
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.ids import new_id
from cronsvc.instants import rfc3339
from cronsvc.leases import (
    FIRST_CLAIMER_SHARE,
    LEASE_PATIENCE_S,
    MIN_LEASE_PATIENCE_S,
    Leases,
    LostLeases,
)
from cronsvc.marks import Claimed, DispatchMarks
from cronsvc.metrics import Metrics
from cronsvc.notices import Notices
from cronsvc.retry import TRANSIENT, retry_transient
from cronsvc.store import ClaimOutcome, ClaimResult, Store, TickClaim
from cronsvc.ticks import DueTick, HandBack
from cronsvc.unanswered import UnansweredClaims

log = structlog.get_logger(__name__)

MAX_CLAIM_LEAD_S = 5.0
CLAIM_PATIENCE_S = 2.0
"""A batch's claim, retries included, before its ticks are handed back: an
unreachable store would hold each attempt for its server selection."""


def claim_lead_s(configured_s: float, claim_s: float, mark_s: float) -> float:
    """At least `configured_s` (0 keeps every claim at the tick); when the store is
    slow, room for a lease wait and twice the claim's and the mark's recent
    length, so both land by the tick."""
    if configured_s <= 0:
        return 0.0
    return min(MAX_CLAIM_LEAD_S, max(configured_s, MIN_LEASE_PATIENCE_S + 2 * (claim_s + mark_s)))


def next_unfenced_estimate(current_s: float | None, sample_s: float) -> float:
    """Without leases every instance claims every tick, so such a claim is slower;
    followed at half weight because a lead too short sends a whole batch late."""
    return sample_s if current_s is None else 0.5 * (current_s + sample_s)


def next_claim_estimate(current_s: float, sample_s: float) -> float:
    """One slow batch moves it at most to a little over double (one hiccup must not
    push every claim seconds ahead); a store that stays slow raises it batch by batch."""
    return 0.8 * current_s + 0.2 * min(sample_s, 2 * current_s + 0.05)


def new_claim(
    job: Job,
    tick: datetime,
    trigger: Trigger,
    *,
    clock: Clock,
    instance_id: str,
    dispatched: bool,
) -> TickClaim:
    """Fenced by the version of the job as read."""
    return TickClaim(
        job_id=job.id,
        expected_version=job.version,
        scheduled_at=tick,
        trigger=trigger,
        execution_id=new_id(),
        instance_id=instance_id,
        executed_at=clock.now(),
        dispatched=dispatched,
    )


def claims_of(
    due: Sequence[DueTick], *, clock: Clock, instance_id: str, dispatched: bool
) -> list[TickClaim]:
    return [
        new_claim(
            d.job, d.tick, d.trigger, clock=clock, instance_id=instance_id, dispatched=dispatched
        )
        for d in due
    ]


class ClaimPipeline:
    def __init__(
        self,
        *,
        store: Store,
        coordinator: Coordinator,
        deliveries: Deliveries,
        handback: HandBack,
        health: HealthMonitor,
        clock: Clock,
        metrics: Metrics,
        instance_id: str,
        lease_ttl_s: float,
        lost_leases: LostLeases | None = None,
        initial_claim_s: float = 0.005,
    ) -> None:
        self._store = store
        self._deliveries = deliveries
        self._handback = handback
        self._health = health
        self._clock = clock
        self._metrics = metrics
        self._instance_id = instance_id
        self._leases = Leases(
            coordinator=coordinator,
            health=health,
            metrics=metrics,
            lease_ttl_s=lease_ttl_s,
            lost=lost_leases,
        )
        self._unanswered = UnansweredClaims(
            store=store,
            health=health,
            deliveries=deliveries,
            clock=clock,
            metrics=metrics,
            instance_id=instance_id,
        )
        self._marks = DispatchMarks(
            store=store,
            deliveries=deliveries,
            handback=handback,
            clock=clock,
            metrics=metrics,
            instance_id=instance_id,
        )
        self._claim_s = initial_claim_s
        """Recent length of a batch's lease and claim."""
        self._unfenced_s: float | None = None
        """Recent length of a claim made without leases."""
        self._held_ticks = 0
        """Handed back since the store last answered: logged at an outage's start and end."""
        self._waiting_on_store = 0
        metrics.gauge(
            "cronsvc_ticks_waiting_on_store",
            "Ticks whose claim is waiting on the store (retried while it is unreachable)",
            lambda: float(self._waiting_on_store),
        )

    def claim_lead(self, configured_s: float) -> float:
        claim_s = self._claim_s
        if self._leases.down and self._unfenced_s is not None:
            claim_s = max(claim_s, self._unfenced_s)
        return claim_lead_s(configured_s, claim_s, self._marks.mark_s)

    def fire(self, due: Sequence[DueTick]) -> None:
        self._deliveries.spawn(self._run_batch(list(due)))

    async def _run_batch(self, due: list[DueTick]) -> None:
        started = self._clock.time()
        fire_at = max(d.tick for d in due).timestamp()
        if not self._health.is_up(Dependency.STORE):
            self._hold(due, "the store is not answering its probe")
            return
        patience = min(
            LEASE_PATIENCE_S,
            max(MIN_LEASE_PATIENCE_S, fire_at - started - 2 * (self._claim_s + self._marks.mark_s)),
        )
        leased, fenced = await self._leases.lease(due, patience)
        if not leased:
            return
        if not fenced and self._leases.share < FIRST_CLAIMER_SHARE:
            # Without leases the store answers every instance's claims one after
            # another; the usual winners claim at once, this usual loser at the
            # tick, winning only what they did not claim.
            await sleep_until(self._clock, fire_at)
        await self._claim_and_fire(leased, fire_at, started, fenced)

    async def _claim_and_fire(
        self, leased: list[DueTick], fire_at: float, started: float, fenced: bool
    ) -> None:
        claim_started = self._clock.time()
        # Claimed ahead of the tick, a record says "not sent yet" until just
        # before the send: if this instance dies in between, another adopts it.
        ahead = fire_at > self._clock.time()
        claims = claims_of(
            leased, clock=self._clock, instance_id=self._instance_id, dispatched=not ahead
        )
        answer = await self._claim(leased, claims)
        if answer is None:
            return
        results, attempts = answer
        if self._held_ticks:
            log.info("ticks_taken_again", held=self._held_ticks)
            self._held_ticks = 0
        if ahead and attempts == 1:
            # A retried claim says nothing about how long a claim takes.
            now_s = self._clock.time()
            if fenced:
                self._claim_s = next_claim_estimate(self._claim_s, now_s - started)
            else:
                self._unfenced_s = next_unfenced_estimate(self._unfenced_s, now_s - claim_started)
        log.debug(
            "ticks_claimed",
            count=len(claims),
            ahead_ms=round((fire_at - started) * 1000, 1),
            claim_ms=round((self._clock.time() - started) * 1000, 1),
        )
        self._deliveries.replaced(results)
        claimed = self._claimed(leased, results)
        # Their first requests are made now, so at the tick they only go out.
        ready = self._deliveries.ready([(d.job, e) for d, e in claimed], fire_at)
        if claimed and ahead:
            claimed = await self._marks.wait_for_tick(claimed, fire_at)
        self._deliveries.start_all(ready, [e for _, e in claimed])

    async def _claim(
        self, leased: list[DueTick], claims: list[TickClaim]
    ) -> tuple[list[ClaimResult], int] | None:
        """The answers and the attempts they took; None when the ticks were handed back."""
        attempts = 0

        async def claim() -> list[ClaimResult]:
            nonlocal attempts
            attempts += 1
            try:
                return await self._store.claim_ticks(claims)
            except TRANSIENT:
                self._metrics.inc("cronsvc_store_errors_total", op="claim")
                self._unanswered.remember(leased, claims)
                raise

        self._waiting_on_store += len(claims)
        try:
            async with asyncio.timeout(CLAIM_PATIENCE_S):
                results = await retry_transient(
                    claim, what="claim_ticks", clock=self._clock, attempts=3, base_s=0.05
                )
        except TRANSIENT as exc:
            failure = type(exc).__name__
            if isinstance(exc, TimeoutError):
                failure = f"no answer to a claim within {CLAIM_PATIENCE_S:g} s"
                self._metrics.inc("cronsvc_store_errors_total", op="claim")
                self._unanswered.remember(leased, claims)
            self._health.report(Dependency.STORE, failure)
            self._leases.keep(leased)
            self._hold(leased, str(exc) or failure)
            return None
        finally:
            self._waiting_on_store -= len(claims)
        return results, attempts

    def _claimed(self, leased: list[DueTick], results: list[ClaimResult]) -> Claimed:
        """Those still in their misfire grace; the others are settled here."""
        claimed: Claimed = []
        now = self._clock.now()
        for d, result in zip(leased, results, strict=True):
            if result.outcome is ClaimOutcome.CLAIMED:
                assert result.execution is not None
                self._unanswered.answered(result.execution.id)
                if past_grace(d, now):
                    self._deliveries.finish(
                        missed_late(result.execution, d, now, CLAIMED_LATE), d.job
                    )
                else:
                    claimed.append((d, result.execution))
            elif result.outcome is ClaimOutcome.STALE:
                self._handback.stale(d.job.id)
            elif result.outcome is ClaimOutcome.DUPLICATE:
                self._metrics.inc("cronsvc_claims_duplicate_total")
            else:
                self._deliveries.count(ExecutionStatus.SKIPPED)
                error = result.execution.error if result.execution else None
                log.info(
                    "tick_skipped",
                    job_id=d.job.id,
                    tick=rfc3339(d.tick),
                    reason=error.message if error else "skipped",
                )
        return claimed

    def _hold(self, due: Sequence[DueTick], error: str) -> None:
        self._metrics.inc("cronsvc_ticks_held_total", len(due))
        if not self._held_ticks:  # once per outage
            log.error("ticks_held", count=len(due), reason="store_unavailable", error=error)
        self._held_ticks += len(due)
        self._handback.hold(due)


MANUAL_CLAIM_TRIES = 3


class JobService:
    """What the API asks of the run path: it reaches the notices and the
    deliveries through this, never the scheduler or the claim pipeline."""

    def __init__(
        self,
        *,
        store: Store,
        notices: Notices,
        deliveries: Deliveries,
        clock: Clock,
        instance_id: str,
    ) -> None:
        self._store = store
        self._notices = notices
        self._deliveries = deliveries
        self._clock = clock
        self._instance_id = instance_id

    async def announce(self, job_id: str) -> None:
        """Never fails: a change whose notice cannot go out is picked up at the
        other instances' next resync."""
        await self._notices.job_changed(job_id)

    async def trigger_now(self, job_id: str) -> Execution:
        """Even if it is paused. The execution as recorded at the start (RUNNING,
        or SKIPPED under `forbid`). Raises `JobNotFound`."""
        for _ in range(MANUAL_CLAIM_TRIES):
            job = await self._store.get_job(job_id)
            claim = new_claim(
                job,
                self._clock.now(),
                Trigger.MANUAL,
                clock=self._clock,
                instance_id=self._instance_id,
                dispatched=True,
            )
            (result,) = await self._store.claim_ticks([claim])
            if result.outcome is ClaimOutcome.STALE:
                continue  # changed between read and claim: read it again
            assert result.execution is not None
            if result.outcome is ClaimOutcome.CLAIMED:
                self._deliveries.replaced([result])
                self._deliveries.start(job, result.execution)
            else:
                self._deliveries.count(result.execution.status)
            return result.execution
        raise JobNotFound(job_id)
