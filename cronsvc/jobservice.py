"""What the API asks of the run path: tell every instance a job changed, and
run a job now.

The API writes jobs to the store itself; through this service it reaches
the coordinator's notices and the deliveries, never the scheduler or the
claim pipeline.
"""

from __future__ import annotations

from cronsvc.claims import new_claim
from cronsvc.clock import Clock
from cronsvc.deliveries import Deliveries
from cronsvc.domain import Execution, Trigger
from cronsvc.errors import JobNotFound
from cronsvc.notices import Notices
from cronsvc.store import ClaimOutcome, Store

MANUAL_CLAIM_TRIES = 3
"""Reads and claims of a job run now, while the job changes in between."""


class JobService:
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
        """Tell every instance a job changed. The change is already stored:
        if the notice cannot go out, the other instances pick it up at their
        next resync, so this never fails."""
        await self._notices.job_changed(job_id)

    async def trigger_now(self, job_id: str) -> Execution:
        """Run a job now (trigger `manual`), even if it is paused. Returns the
        execution as recorded when the run starts (RUNNING, or SKIPPED under
        `forbid`). Raises `JobNotFound`."""
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
