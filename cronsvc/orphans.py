"""Ticks whose lease another instance won, remembered for a while and claimed
by the leader when an instance leaves the cluster.

A lease and the store's claim are two steps: an instance that wins a lease and
dies before its claim lands leaves a tick the others may not claim and nobody
records. So every instance keeps the ticks whose leases it lost
(`leases.LostLeases`) longer than the leader takes to see an instance gone;
the leader then claims them all (`OrphanClaims`). The store's unique claim
keeps what was claimed already (DUPLICATE); the ticks won go to adoption, as
any tick claimed and never sent. The instance that left may have leased ticks
up to its claim lead ahead: for that long the leader claims the ticks whose
leases it loses as if it had won them.
"""

from __future__ import annotations

import structlog

from cronsvc.claims import MAX_CLAIM_LEAD_S, LostLeases, claims_of
from cronsvc.clock import Clock
from cronsvc.domain import Execution
from cronsvc.metrics import Metrics
from cronsvc.store import ClaimOutcome, TickClaims

log = structlog.get_logger(__name__)

CLAIM_BATCH = 1000
"""Orphaned ticks claimed per store call."""


def keep_lost_s(heartbeat_interval_s: float) -> float:
    """Twice what a leader may take to see a lease's winner gone (its
    announcement, its leader lease, then one more announcement lifetime of
    reap grace: 1.5 heartbeat intervals each), after the longest claim lead."""
    return 2 * 3 * 1.5 * heartbeat_interval_s + MAX_CLAIM_LEAD_S


class OrphanClaims:
    """The leader's claim of the ticks whose leases the others lost."""

    def __init__(
        self,
        *,
        store: TickClaims,
        lost: LostLeases,
        clock: Clock,
        metrics: Metrics,
        instance_id: str,
    ) -> None:
        self._store = store
        self._lost = lost
        self._clock = clock
        self._metrics = metrics
        self._instance_id = instance_id

    async def claim(self) -> list[Execution]:
        """The executions won, not yet sent (for adoption to settle)."""
        self._lost.claim_until(self._clock.time() + MAX_CLAIM_LEAD_S)
        due = self._lost.take()
        won: list[Execution] = []
        for start in range(0, len(due), CLAIM_BATCH):
            chunk = due[start : start + CLAIM_BATCH]
            claims = claims_of(
                chunk, clock=self._clock, instance_id=self._instance_id, dispatched=False
            )
            try:
                results = await self._store.claim_ticks(claims)
            except BaseException:
                self._lost.give_back(due[start:])
                raise
            won += [
                r.execution
                for r in results
                if r.outcome is ClaimOutcome.CLAIMED and r.execution is not None
            ]
        if won:
            self._metrics.inc("cronsvc_ticks_orphaned_total", len(won))
            log.warning("orphaned_ticks_claimed", count=len(won), looked_at=len(due))
        return won
