"""What the API asks of the run path: announce a job's change, run a job now. The
API writes jobs itself; through this it reaches the notices and the deliveries,
never the scheduler or the claim pipeline.
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
