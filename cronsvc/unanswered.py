"""Claims whose answer never came: a stalled store may have written them (or write
them when it resumes), leaving records RUNNING and never sent. Each is looked up a
few times once the store answers: one written after all is recorded MISSED; one
never written leaves its tick to the scheduler.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from cronsvc.clock import Clock
from cronsvc.deliveries import UNANSWERED, Deliveries, missed
from cronsvc.domain import Execution, ExecutionStatus
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.instants import rfc3339
from cronsvc.metrics import Metrics
from cronsvc.retry import TRANSIENT
from cronsvc.store import Store, TickClaim
from cronsvc.ticks import DueTick

log = structlog.get_logger(__name__)

MAX_UNCERTAIN = 100_000
UNCERTAIN_CHECKS = 3
UNCERTAIN_CHECK_S = 3.0
UNCERTAIN_BATCH = 500


@dataclass(slots=True)
class _Unanswered:
    execution: Execution
    """The record its claim would have written."""
    checks: int


class UnansweredClaims:
    def __init__(
        self,
        *,
        store: Store,
        health: HealthMonitor,
        deliveries: Deliveries,
        clock: Clock,
        metrics: Metrics,
        instance_id: str,
    ) -> None:
        self._store = store
        self._health = health
        self._deliveries = deliveries
        self._clock = clock
        self._metrics = metrics
        self._instance_id = instance_id
        self._uncertain: collections.OrderedDict[str, _Unanswered] = collections.OrderedDict()
        self._resolving: asyncio.Task[None] | None = None

    def remember(self, due: Sequence[DueTick], claims: Sequence[TickClaim]) -> None:
        for d, claim in zip(due, claims, strict=True):
            self._uncertain[claim.execution_id] = _Unanswered(
                execution=Execution(
                    id=claim.execution_id,
                    job_id=claim.job_id,
                    job_name=d.job.spec.name,
                    trigger=claim.trigger,
                    scheduled_at=claim.scheduled_at,
                    status=ExecutionStatus.RUNNING,
                    instance_id=claim.instance_id,
                    executed_at=claim.executed_at,
                ),
                checks=UNCERTAIN_CHECKS,
            )
        if len(self._uncertain) > MAX_UNCERTAIN:
            dropped = len(self._uncertain) - MAX_UNCERTAIN
            while len(self._uncertain) > MAX_UNCERTAIN:
                del self._uncertain[next(iter(self._uncertain))]
            self._metrics.inc("cronsvc_claims_unresolved_total", dropped)
            log.error("claims_unresolved", count=dropped)
        if self._resolving is None or self._resolving.done():
            self._resolving = self._deliveries.spawn(self._resolve())

    def answered(self, execution_id: str) -> None:
        """By a retry."""
        self._uncertain.pop(execution_id, None)

    async def _resolve(self) -> None:
        """One call a round for a batch: a store slow enough to leave claims
        unanswered must not be asked once per claim."""
        while self._uncertain:
            await self._health.until_up(Dependency.STORE, self._clock)
            await self._clock.sleep(UNCERTAIN_CHECK_S)
            if not self._health.is_up(Dependency.STORE):
                continue
            batch = list(itertools.islice(self._uncertain, UNCERTAIN_BATCH))
            try:
                # Marked: still RUNNING under this instance's id (not adopted),
                # and from now on never adopted. Not marked: never written,
                # or no longer this instance's to settle.
                ours = await self._store.mark_dispatched(self._instance_id, batch)
            except TRANSIENT as exc:
                self._health.report(Dependency.STORE, type(exc).__name__)
                continue
            self._settle(batch, ours)

    def _settle(self, batch: list[str], ours: set[str]) -> None:
        now = self._clock.now()
        for execution_id in batch:
            unanswered = self._uncertain.get(execution_id)
            if unanswered is None or self._deliveries.running(execution_id):
                continue  # claimed meanwhile, by a retry that was answered
            if execution_id in ours:
                del self._uncertain[execution_id]
                log.warning(
                    "unanswered_claim_found",
                    job_id=unanswered.execution.job_id,
                    tick=rfc3339(unanswered.execution.scheduled_at),
                )
                self._deliveries.finish(missed(unanswered.execution, now, UNANSWERED))
            elif unanswered.checks > 1:
                unanswered.checks -= 1
                self._uncertain.move_to_end(execution_id)  # the others' turn first
            else:
                del self._uncertain[execution_id]
