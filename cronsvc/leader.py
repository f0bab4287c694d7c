"""Instance heartbeats and the duties of whichever instance leads.

Every instance announces itself twice per `heartbeat_interval_s`, for 1.5
intervals, with the jobs it owns once it has loaded them; the answer names the
instances that own jobs (`cronsvc.ownership`). The leader lease lasts as long
and is renewed at the same pace. The
leader adopts the ticks dead instances claimed ahead but never sent (handed to
`cronsvc.adoption`, which settles them under the job's misfire policy), marks
LOST the runs whose webhook went out (nobody knows whether the target acted),
and prunes execution logs past retention. The firing path never waits on it.

Right after the coordinator lost its state (a Redis restart or FLUSHALL) live
instances have not announced themselves again, and their runs must not be
taken for lost. So the leader reaps only once its own announcements have been
unbroken for one announcement lifetime (`reap_grace_s`); a missing
announcement, a failed heartbeat or this instance's first starts the wait
afresh. An instance long announced that takes over from a dead leader does the
duties at once. One process alone (`local`) needs no such wait.

The store does not check the leader's fencing token: adopting is a conditional
write one caller wins, marking LOST touches only RUNNING records and pruning
only what is past retention, so a deposed leader acting once more does what the
new one would. Renewals and duties run in loops of their own: a store that
stalls the duties never holds up a renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog

from cronsvc import __version__
from cronsvc.clock import Clock
from cronsvc.coord import Coordinator
from cronsvc.domain import Execution, InstanceInfo
from cronsvc.metrics import Metrics
from cronsvc.ownership import Membership
from cronsvc.retry import TRANSIENT
from cronsvc.share import RecentFires
from cronsvc.store import Reaper

log = structlog.get_logger(__name__)

PRUNE_INTERVAL_S = 3600.0


class LeaderDuties:
    def __init__(
        self,
        *,
        store: Reaper,
        coordinator: Coordinator,
        clock: Clock,
        metrics: Metrics,
        instance_id: str,
        started_at: datetime,
        heartbeat_interval_s: float,
        retention_days: float,
        reap_grace: bool,
        on_adopted: Callable[[list[Execution]], None],
        claim_orphans: Callable[[], Awaitable[list[Execution]]] | None = None,
        on_lost: Callable[[list[Execution]], None] | None = None,
        recent: RecentFires | None = None,
        jobs_owned: Callable[[], int | None] | None = None,
        loading: Callable[[], bool] | None = None,
        membership: Membership | None = None,
    ) -> None:
        self._on_lost = on_lost
        self._recent = recent
        self._jobs_owned = jobs_owned
        self._loading = loading
        self._membership = membership
        self._store = store
        self._coordinator = coordinator
        self._clock = clock
        self._metrics = metrics
        self._instance_id = instance_id
        self._started_at = started_at
        self._on_adopted = on_adopted
        self._claim_orphans = claim_orphans
        self._last_live: set[str] | None = None
        """The live instances at the last duties, or None since this
        instance took the lead (it cannot know who left before)."""
        self._period = heartbeat_interval_s / 2
        self._ttl = heartbeat_interval_s * 1.5
        self._reap_grace_s = self._ttl if reap_grace else 0.0
        self._unbroken_since: float | None = None
        """Monotonic time since when this instance's announcements have been
        renewed without a gap (None: the last heartbeat failed, or none yet)."""
        self._announcing = asyncio.Lock()
        """Held across a heartbeat and its answer, and across the duties'
        reading of the live instances and the check that follows it."""
        self._wake_duties = asyncio.Event()
        self._failing = False
        self._retention = timedelta(days=retention_days)
        self._token: int | None = None
        self._lead_until = 0.0
        """Monotonic time until which the lease is surely still this instance's."""
        self._lead_from = 0.0
        """Monotonic time from which this instance counts itself leader (see `is_leader`)."""
        self._next_prune = 0.0
        self._stop = asyncio.Event()
        metrics.gauge(
            "cronsvc_is_leader", "1 while this instance leads", lambda: float(self.is_leader)
        )

    @property
    def is_leader(self) -> bool:
        """Holding the lease, as far as this instance can tell. A renewal begun
        at t holds it until t + ttl at the earliest; this instance stops one
        renewal period before, so a successor never overlaps it. A lease gained
        when the coordinator may have lost its state may have been taken from a
        leader that still counts itself one: it counts one announcement
        lifetime later, when that leader has surely stopped."""
        now = self._clock.monotonic()
        return self._token is not None and self._lead_from <= now < self._lead_until

    def stop(self) -> None:
        self._stop.set()
        self._wake_duties.set()

    def _may_reap(self) -> bool:
        """Every live instance has announced itself since the coordinator
        last lost its state, as far as this instance can tell."""
        since = self._unbroken_since
        return since is not None and self._clock.monotonic() >= since + self._reap_grace_s

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._keep_alive(), name="heartbeat")
            group.create_task(self._lead(), name="leader-duties")
        with contextlib.suppress(*TRANSIENT):  # the lease and heartbeat expire anyway
            async with asyncio.timeout(self._period):
                if self._token is not None:
                    await self._coordinator.resign(self._instance_id)
                await self._coordinator.forget_instance(self._instance_id)

    async def _keep_alive(self) -> None:
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(self._period):
                    await self.renew()
            except TRANSIENT as exc:
                self._metrics.inc("cronsvc_coordinator_errors_total", op="heartbeat")
                if not self._failing:  # once per outage
                    self._failing = True
                    log.warning("heartbeat_failed", error=str(exc) or type(exc).__name__)
                if self._token is not None:  # an unrenewable lease is as good as lost
                    self._token = None
                    log.info("leadership_changed", leader=False, token=None)
            else:
                if self._failing:
                    self._failing = False
                    log.info("heartbeat_recovered")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._period)

    async def _lead(self) -> None:
        while not self._stop.is_set():
            if self.is_leader and self._may_reap():
                try:
                    # A stalled store delays the duties a lease lifetime at most.
                    async with asyncio.timeout(self._ttl):
                        await self.duties()
                except TRANSIENT as exc:
                    self._metrics.inc("cronsvc_store_errors_total", op="leader")
                    log.warning("leader_duties_failed", error=str(exc) or type(exc).__name__)
            await self._pause_duties()

    async def _pause_duties(self) -> None:
        """One renewal period, or less: until the reap grace ends, or until
        this instance gains the lease (a dead leader's work waits no more)."""
        delay = self._period
        if self._token is not None and self._unbroken_since is not None:
            left = self._unbroken_since + self._reap_grace_s - self._clock.monotonic()
            if left > 0:
                delay = min(delay, left)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake_duties.wait(), delay)
        self._wake_duties.clear()

    async def step(self) -> None:
        """One heartbeat and, when leading, one round of duties (at start-up,
        before the scheduler runs)."""
        await self.renew()
        if self.is_leader and self._may_reap():
            await self.duties()

    async def renew(self) -> None:
        """Announce this instance, learn the owners of jobs from the answer, and
        take or renew the leader lease."""
        began = self._clock.monotonic()
        async with self._announcing:
            # Left None if the heartbeat fails: others may not get through either.
            since, self._unbroken_since = self._unbroken_since, None
            beat = await self._coordinator.heartbeat(
                InstanceInfo(
                    id=self._instance_id,
                    host=socket.gethostname(),
                    version=__version__,
                    started_at=self._started_at,
                    last_heartbeat=self._clock.now(),
                    ticks_fired_last_minute=0
                    if self._recent is None
                    else self._recent.last_minute(),
                    jobs_owned=None if self._jobs_owned is None else self._jobs_owned(),
                    loading=self._loading is not None and self._loading(),
                ),
                ttl_s=self._ttl,
            )
            if since is not None and not beat.renewed:
                log.warning("announcement_missing", reap_grace_s=self._reap_grace_s)
            unbroken = since is not None and beat.renewed
            self._unbroken_since = since if unbroken else self._clock.monotonic()
        if self._membership is not None:
            self._membership.update(beat.owners, beat.loading)
        try:
            token = await self._coordinator.try_lead(self._instance_id, ttl_s=self._ttl)
        except BaseException:
            self._unbroken_since = None  # as for a failed heartbeat
            raise
        if token != self._token:
            if (token is None) != (self._token is None):
                self._metrics.inc("cronsvc_leadership_changes_total")
            log.info("leadership_changed", leader=token is not None, token=token)
            if token is not None:  # the lease gained
                self._last_live = None
                self._lead_from = began if self._may_reap() else began + self._reap_grace_s
                self._wake_duties.set()
        self._token = token
        self._lead_until = began + self._ttl - self._period

    async def duties(self) -> None:
        """Nothing while the live instances may not all have announced themselves."""
        now = self._clock.now()
        async with self._announcing:
            live = {info.id for info in await self._coordinator.live_instances()}
            # Our own announcement gone: the coordinator lost its state since
            # our last heartbeat, and everyone else's with it.
            if self._instance_id not in live or not self._may_reap():
                return
        adopted = await self._store.adopt_unsent(live_instances=live, instance_id=self._instance_id)
        if adopted:
            self._metrics.inc("cronsvc_ticks_adopted_total", len(adopted))
            log.warning("unsent_ticks_adopted", count=len(adopted))
        someone_left = self._last_live is None or not live >= self._last_live
        if self._claim_orphans is not None and someone_left:
            # Ticks whose lease a departed instance won and never claimed
            # (none when nobody left: `adoption.OrphanClaims`).
            adopted += await self._claim_orphans()
        self._last_live = live
        if adopted:
            self._on_adopted(adopted)
        if not self.is_leader:  # the store held the duties past the lease
            return
        lost = await self._store.mark_lost(
            live_instances=live,
            now=now,
            reason="the instance running it stopped before recording a result",
        )
        if lost:
            if self._on_lost is not None:
                self._on_lost(lost)
            self._metrics.inc("cronsvc_executions_total", len(lost), status="LOST")
            log.warning(
                "runs_lost", count=len(lost), instances=sorted({e.instance_id for e in lost})
            )
        if self._clock.monotonic() >= self._next_prune:
            self._next_prune = self._clock.monotonic() + PRUNE_INTERVAL_S
            pruned = await self._store.prune_executions(now - self._retention)
            if pruned:
                log.info("execution_logs_pruned", count=pruned)
