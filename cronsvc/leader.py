"""Instance heartbeats and the duties of whichever instance leads.

Every instance announces itself twice per `heartbeat_interval_s`, for 1.5
intervals; the leader lease lasts as long and is renewed at the same pace (a
third of its lifetime), so a lost lease is noticed within one renewal. The
leader deals with the RUNNING executions of instances that are no longer
alive (within two heartbeat intervals of a death): a tick claimed ahead but
never sent is adopted and handed to this instance's runner, which sends it
under the job's misfire policy; a run whose webhook went out is marked LOST,
since nobody knows whether the target acted on it. The leader also prunes
execution logs past retention. The firing path never waits on any of this.

A new leader waits one announcement lifetime (`reap_grace_s`) before it
reaps: right after the coordinator lost its state (a Redis restart or
FLUSHALL) live instances have not re-announced yet, and their runs must not
be taken for lost. One process alone (`local`) needs no such wait.

The store does not check the leader's fencing token: nothing the leader
writes needs it. Adopting a record is a conditional write that one caller
wins, marking LOST only touches records still RUNNING, and pruning deletes
only what is past retention; a deposed leader that acts once more, in the
moment before it notices, does what the new one would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from cronsvc import __version__
from cronsvc.clock import Clock
from cronsvc.coord import Coordinator
from cronsvc.domain import Execution, InstanceInfo
from cronsvc.metrics import Metrics
from cronsvc.retry import TRANSIENT
from cronsvc.store import Store

log = structlog.get_logger(__name__)

PRUNE_INTERVAL_S = 3600.0


class LeaderDuties:
    def __init__(
        self,
        *,
        store: Store,
        coordinator: Coordinator,
        clock: Clock,
        metrics: Metrics,
        instance_id: str,
        started_at: datetime,
        heartbeat_interval_s: float,
        retention_days: float,
        reap_grace: bool,
        on_adopted: Callable[[list[Execution]], None],
    ) -> None:
        self._store = store
        self._coordinator = coordinator
        self._clock = clock
        self._metrics = metrics
        self._instance_id = instance_id
        self._started_at = started_at
        self._on_adopted = on_adopted
        self._period = heartbeat_interval_s / 2
        self._ttl = heartbeat_interval_s * 1.5
        self._reap_grace_s = self._ttl if reap_grace else 0.0
        self._reap_after = 0.0
        self._failing = False
        self._retention = timedelta(days=retention_days)
        self._token: int | None = None
        self._next_prune = 0.0
        self._stop = asyncio.Event()
        metrics.gauge(
            "cronsvc_is_leader", "1 while this instance leads", lambda: float(self.is_leader)
        )

    @property
    def is_leader(self) -> bool:
        return self._token is not None

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.step()
            except TRANSIENT as exc:
                self._metrics.inc(
                    "cronsvc_coordinator_errors_total",
                    help="Coordinator calls that failed",
                    op="heartbeat",
                )
                if not self._failing:  # once per outage
                    self._failing = True
                    log.warning("heartbeat_failed", error=str(exc))
                if self._token is not None:  # an unrenewable lease is as good as lost
                    self._token = None
                    log.info("leadership_changed", leader=False, token=None)
            else:
                if self._failing:
                    self._failing = False
                    log.info("heartbeat_recovered")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._period)
        with contextlib.suppress(*TRANSIENT):  # the lease and heartbeat expire anyway
            if self._token is not None:
                await self._coordinator.resign(self._instance_id)
            await self._coordinator.forget_instance(self._instance_id)

    async def step(self) -> None:
        """One heartbeat and, when leading, one round of duties."""
        now = self._clock.now()
        await self._coordinator.heartbeat(
            InstanceInfo(
                id=self._instance_id,
                host=socket.gethostname(),
                version=__version__,
                started_at=self._started_at,
                last_heartbeat=now,
            ),
            ttl_s=self._ttl,
        )
        token = await self._coordinator.try_lead(self._instance_id, ttl_s=self._ttl)
        if token != self._token:
            if (token is None) != (self._token is None):
                self._metrics.inc(
                    "cronsvc_leadership_changes_total",
                    help="Times this instance gained or lost leadership",
                )
            log.info("leadership_changed", leader=token is not None, token=token)
            self._reap_after = self._clock.monotonic() + self._reap_grace_s
        self._token = token
        if token is None or self._clock.monotonic() < self._reap_after:
            return
        live = {info.id for info in await self._coordinator.live_instances()}
        live.add(self._instance_id)
        adopted = await self._store.adopt_unsent(live_instances=live, instance_id=self._instance_id)
        if adopted:
            self._metrics.inc(
                "cronsvc_ticks_adopted_total",
                len(adopted),
                help="Ticks claimed by an instance that stopped before sending them",
            )
            log.warning("unsent_ticks_adopted", count=len(adopted))
            self._on_adopted(adopted)
        lost = await self._store.mark_lost(
            live_instances=live,
            now=now,
            reason="the instance running it stopped before recording a result",
        )
        if lost:
            self._metrics.inc(
                "cronsvc_executions_total", len(lost), help="Executions by outcome", status="LOST"
            )
            log.warning(
                "runs_lost", count=len(lost), instances=sorted({e.instance_id for e in lost})
            )
        if self._clock.monotonic() >= self._next_prune:
            self._next_prune = self._clock.monotonic() + PRUNE_INTERVAL_S
            pruned = await self._store.prune_executions(now - self._retention)
            if pruned:
                log.info("execution_logs_pruned", count=pruned)
