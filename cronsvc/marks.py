"""Claims made ahead, marked dispatched just before their tick and checked against
their jobs' current versions. Until the mark a record says "not sent yet", so an
instance that dies before it leaves the tick to be adopted.
"""

from __future__ import annotations

import asyncio

import structlog

from cronsvc.clock import Clock, sleep_until
from cronsvc.deliveries import (
    HELD_UP,
    SHUTDOWN_UNSENT,
    Deliveries,
    ended,
    has_tick,
    missed_late,
    past_grace,
)
from cronsvc.domain import Execution, Job
from cronsvc.errors import JobNotFound
from cronsvc.instants import rfc3339
from cronsvc.metrics import Metrics
from cronsvc.retry import TRANSIENT
from cronsvc.store import Store
from cronsvc.ticks import DueTick, HandBack

log = structlog.get_logger(__name__)

MARK_PATIENCE_S = 0.25
"""After the tick, before the webhooks go out unmarked."""

Claimed = list[tuple[DueTick, Execution]]


class DispatchMarks:
    def __init__(
        self,
        *,
        store: Store,
        deliveries: Deliveries,
        handback: HandBack,
        clock: Clock,
        metrics: Metrics,
        instance_id: str,
    ) -> None:
        self._store = store
        self._deliveries = deliveries
        self._handback = handback
        self._clock = clock
        self._metrics = metrics
        self._instance_id = instance_id
        self.mark_s = 0.005
        """Recent length of the marking round trip."""

    async def wait_for_tick(self, claimed: Claimed, fire_at: float) -> Claimed:
        """Those still good to fire as they are; claims another instance adopted
        meanwhile are left to it. The mark starts twice its length ahead so it
        lands by the tick, at a price: an instance that dies between the mark
        and the tick leaves those runs LOST rather than adopted."""
        try:
            await self._clock.sleep(fire_at - 2 * self.mark_s - self._clock.time())
        except asyncio.CancelledError:
            # Still RUNNING and unsent: the leader, or the next start, adopts them.
            log.info("claims_left_unsent", count=len(claimed))
            raise
        marked, versions = await self._mark(claimed, fire_at)
        unchanged, changed = [], []  # sorted before the tick, to be off at once then
        now = self._clock.now()
        for d, execution in claimed:
            if execution.id not in marked:
                self._metrics.inc("cronsvc_claims_taken_over_total")
                log.warning("claim_taken_over", job_id=d.job.id, tick=rfc3339(d.tick))
            elif past_grace(d, now):  # this instance was held up (paused) since the claim
                self._deliveries.finish(missed_late(execution, d, now, HELD_UP), d.job)
            elif versions.get(d.job.id) == d.job.version:
                unchanged.append((d, execution))
            else:
                changed.append((d, execution))
        try:
            await sleep_until(self._clock, fire_at)
        except asyncio.CancelledError:
            now = self._clock.now()
            for _, execution in unchanged + changed:  # marked as sent, never sent: say so
                self._deliveries.finish(ended(execution, now, "shutdown", SHUTDOWN_UNSENT))
            raise
        for d, execution in changed:
            self._deliveries.spawn(self._settle_changed(d, execution))
        return unchanged

    async def _mark(self, claimed: Claimed, fire_at: float) -> tuple[set[str], dict[str, int]]:
        """The claims still this instance's, and each job's current version."""
        started = self._clock.monotonic()
        try:
            # Bounded: a store that stalls now must not hold the webhooks
            # past their tick (they would go out late, past a `skip` job's grace).
            async with asyncio.timeout(max(fire_at - self._clock.time(), 0) + MARK_PATIENCE_S):
                marked, versions = await asyncio.gather(
                    self._store.mark_dispatched(self._instance_id, [e.id for _, e in claimed]),
                    self._store.current_versions([d.job.id for d, _ in claimed]),
                )
        except TRANSIENT as exc:
            # The claim itself was fenced by version; fire as claimed. Only if
            # this instance also dies now could an adopter send one twice.
            self._metrics.inc("cronsvc_store_errors_total", op="mark_dispatched")
            log.warning(
                "dispatch_unmarked",
                count=len(claimed),
                error=str(exc) or f"no answer by the tick + {MARK_PATIENCE_S:g} s",
            )
            return {e.id for _, e in claimed}, {d.job.id: d.job.version for d, _ in claimed}
        self.mark_s = 0.8 * self.mark_s + 0.2 * (self._clock.monotonic() - started)
        return marked, versions

    async def _settle_changed(self, due: DueTick, execution: Execution) -> None:
        self._handback.stale(due.job.id)
        try:
            job: Job | None = await self._store.get_job(due.job.id)
        except JobNotFound:
            job = None
        if job is not None and job.spec.is_active and has_tick(job, due.tick):
            await self._deliveries.send_now(job, execution)
            return
        reason = "the job was deleted, paused or rescheduled between its claim and its tick"
        self._deliveries.finish(
            ended(execution, self._clock.now(), "job_changed", reason, skipped=True)
        )
