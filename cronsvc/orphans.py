"""Ticks whose lease another instance won, remembered for a while and
claimed by the leader when an instance leaves the cluster.

A lease and the store's claim are two steps. An instance that wins a tick's
lease and dies before its claim lands leaves a tick that the others may not
claim (they lost the lease) and that nobody records. So every instance keeps
the ticks whose leases it lost (`leases.LostLeases`) for longer than the leader
takes to see an instance gone. When it sees one gone, the leader claims them
all in the store (`OrphanClaims`). The store's unique claim keeps what was
claimed already, by a live instance or by the dead one before it died:
those answer DUPLICATE. The ticks it wins are handed to adoption, which
sends each one or records it MISSED or SKIPPED under its job's misfire
policy and current state, as for any tick claimed and never sent.

The instance that left may also have leased ticks up to its claim lead
ahead, which the leader has not asked for yet. For that long, the leader
claims the ticks whose leases it loses as if it had won them, and the
store's claim alone decides who fires them.
"""

from __future__ import annotations

import structlog

from cronsvc.claims import MAX_CLAIM_LEAD_S, claims_of
from cronsvc.clock import Clock
from cronsvc.domain import Execution
from cronsvc.leases import LostLeases
from cronsvc.metrics import Metrics
from cronsvc.store import ClaimOutcome, TickClaims

log = structlog.get_logger(__name__)

CLAIM_BATCH = 1000
"""Orphaned ticks claimed per store call."""


def keep_lost_s(heartbeat_interval_s: float) -> float:
    """How long a lost lease is remembered: twice what a leader may take to
    see its winner gone (the winner's announcement lasts 1.5 heartbeat
    intervals; when the winner led, its lease lasts as long, and its
    successor may wait one announcement lifetime more before it reaps),
    after a lease taken up to the longest claim lead ahead."""
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
        """Claim every recent tick whose lease this instance lost; the
        executions won, not yet sent (for adoption to settle)."""
        # It may have leased ticks its claim lead ahead, which this instance
        # has not asked for yet: they are claimed when their leases are lost.
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
