"""A batch's per-tick fire leases, which keep the other instances from claiming a
tick at all. Without the coordinator every tick goes on to the store's claim, the
final fence: firing continues at the cost of more lost claims, and leases are
skipped, not waited for, until the health probe hears the coordinator again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from datetime import datetime

import structlog

from cronsvc.clock import Clock
from cronsvc.coord import Coordinator
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.metrics import Metrics
from cronsvc.retry import TRANSIENT
from cronsvc.ticks import DueTick

log = structlog.get_logger(__name__)

LEASE_PATIENCE_S = 0.5
"""Before a batch goes on without leases: a stalled Redis would hold it for its
command timeout and retry. A batch taken ahead waits only until its claim must
start to land by the tick, so the one batch a stall catches is not sent late."""
MIN_LEASE_PATIENCE_S = 0.1
FIRST_CLAIMER_SHARE = 0.25
"""Without leases, an instance that won less than this share of its recent leases
claims at the tick, after those that usually win."""
MAX_WON = 100_000


def next_lease_share(current: float, won: int, asked: int) -> float:
    return current if asked == 0 else 0.8 * current + 0.2 * (won / asked)


class Leases:
    def __init__(
        self,
        *,
        coordinator: Coordinator,
        health: HealthMonitor,
        metrics: Metrics,
        lease_ttl_s: float,
        lost: LostLeases | None = None,
    ) -> None:
        self._coordinator = coordinator
        self._lost = lost
        self._health = health
        self._metrics = metrics
        self._lease_ttl_s = lease_ttl_s
        self.down = False
        """Whether the last batch went on without leases."""
        self.share = 1.0
        """Recent share of the leases asked for that this instance won."""
        self._won: dict[tuple[str, datetime], None] = {}
        """Won, then handed back unclaimed: its own when taken again (a coordinator
        may refuse a lease twice, even to its holder)."""

    def keep(self, due: Sequence[DueTick]) -> None:
        for d in due:
            self._won[d.job.id, d.tick] = None
        while len(self._won) > MAX_WON:
            del self._won[next(iter(self._won))]

    async def lease(self, due: list[DueTick], patience: float) -> tuple[list[DueTick], bool]:
        """The ticks won (and lost ones claimed all the same), and whether leases
        fenced them (False: every tick goes on unleased)."""
        if self._won:
            mine, rest = [], []
            for d in due:
                key = (d.job.id, d.tick)
                if key in self._won:
                    del self._won[key]
                    mine.append(d)
                else:
                    rest.append(d)
            if mine:
                leased, fenced = await self.lease(rest, patience) if rest else ([], True)
                return mine + leased, fenced
        if not self._health.is_up(Dependency.COORDINATOR):
            self._unavailable(due, "the coordinator is not answering its probe")
            return due, False
        try:
            async with asyncio.timeout(patience):
                won = await self._coordinator.try_lease_ticks(
                    [(d.job.id, d.tick) for d in due], self._lease_ttl_s
                )
        except TRANSIENT as exc:
            self._metrics.inc("cronsvc_coordinator_errors_total", op="lease")
            failure = type(exc).__name__
            if isinstance(exc, TimeoutError):
                failure = f"no answer to a lease within {patience:.2f} s"
            self._health.report(Dependency.COORDINATOR, failure)
            self._unavailable(due, str(exc) or failure)
            return due, False
        if self.down:
            self.down = False
            log.info("leases_recovered")
        leased = [d for d, ok in zip(due, won, strict=True) if ok]
        self.share = next_lease_share(self.share, len(leased), len(due))
        self._metrics.inc("cronsvc_lease_total", len(leased), result="won")
        self._metrics.inc("cronsvc_lease_total", len(due) - len(leased), result="lost")
        if self._lost is not None and len(leased) < len(due):
            leased += self._lost.lost([d for d, ok in zip(due, won, strict=True) if not ok])
        return leased, True

    def _unavailable(self, due: list[DueTick], error: str) -> None:
        self._metrics.inc("cronsvc_lease_total", len(due), result="skipped")
        if not self.down:  # once per outage
            self.down = True
            log.error("leases_unavailable", error=error, fallback="store claim")


class LostLeases:
    """Ticks whose leases were lost in the last `keep_s` seconds, for the leader to
    claim if their winner leaves (`cronsvc.orphans`)."""

    def __init__(self, *, clock: Clock, keep_s: float) -> None:
        self._clock = clock
        self._keep_s = keep_s
        self._batches: deque[tuple[float, Sequence[DueTick]]] = deque()
        self._claim_until = 0.0

    def lost(self, lost: Sequence[DueTick]) -> Sequence[DueTick]:
        """Remembered; returned to be claimed as if won when an instance that left
        may have leased them (see `claim_until`)."""
        if lost and lost[0].tick.timestamp() <= self._claim_until:
            return lost
        self.remember(lost)
        return ()

    def claim_until(self, instant_s: float) -> None:
        """An instance has left, maybe holding leases up to `instant_s`: the store's
        claim alone fences those ticks, so they are claimed even when lost."""
        self._claim_until = max(self._claim_until, instant_s)

    def remember(self, lost: Sequence[DueTick]) -> None:
        if not lost:
            return
        self._batches.append((lost[0].tick.timestamp(), lost))
        oldest = self._clock.time() - self._keep_s
        while self._batches[0][0] < oldest:
            self._batches.popleft()

    def take(self) -> list[DueTick]:
        oldest = self._clock.time() - self._keep_s
        taken = [d for at, batch in self._batches if at >= oldest for d in batch]
        self._batches.clear()
        return taken

    def give_back(self, due: Sequence[DueTick]) -> None:
        """Taken, but their claim failed: for the leader's next try."""
        self._batches.appendleft((min((d.tick.timestamp() for d in due), default=0.0), due))
