"""The tick loop: sleep until the head of the job index is due, a change
notice, or a resync; hand the due ticks on. It never polls on a fixed period;
a full resync every `resync_interval_s` repairs any lost notice.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Protocol

import structlog

from cronsvc.alertwatch import AlertWatch
from cronsvc.clock import Clock
from cronsvc.config import SchedulerConfig
from cronsvc.coord import RESYNC
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.jobindex import JobIndex
from cronsvc.jobsync import JobSync, MissedRecorder
from cronsvc.metrics import Metrics
from cronsvc.ownership import Membership, Ownership
from cronsvc.store import MissedRecords, ScheduleSource
from cronsvc.ticks import HandBack, TickSink

log = structlog.get_logger(__name__)

BATCH_SIZE = 256
"""Ticks due now go in batches this small so the first webhooks go out while
later claims are still being written."""

AHEAD_BATCH_SIZE = 2048
"""Ticks taken ahead of their instant: each batch is a lease, a claim and a
mark queued one after another, so smaller batches left the last mark late."""

HOLD_CHECK_S = 0.2  # how often held jobs look whether the store answers again

LOADING_SHARE_S = 600.0
"""The longest a cluster starting together keeps an instance's share while it
loads its jobs: longer than 300,000 jobs take to load from a MongoDB that three
instances read at once (BENCHMARKS.md), so only one that cannot finish (it
reaches Redis but not the store) loses its share, to the others, until it is
done."""


class SchedulerStore(ScheduleSource, MissedRecords, Protocol):
    """It reads the schedules and writes only MISSED records."""


class Scheduler:
    def __init__(
        self,
        *,
        store: SchedulerStore,
        sink: TickSink,
        handback: HandBack,
        clock: Clock,
        config: SchedulerConfig,
        metrics: Metrics,
        health: HealthMonitor,
        instance_id: str,
        started_at: datetime,
        alerts: AlertWatch | None = None,
        membership: Membership | None = None,
    ) -> None:
        self._health = health
        self._alerts = alerts
        self._sink = sink
        self._clock = clock
        self._config = config
        self._metrics = metrics
        self._handback = handback
        self._wake = handback.wake
        self._index = index = JobIndex(
            min_interval_s=config.min_interval_s,
            max_missed_records=config.max_missed_records,
            max_catchup=config.max_catchup,
            started_at=started_at,
        )
        self._sync = JobSync(
            store=store,
            index=index,
            sink=sink,
            clock=clock,
            config=config,
            metrics=metrics,
            wake=self._wake,
            membership=membership or Membership(instance_id),
        )
        self._sync.membership.listeners.append(self._owners_changed)
        self._missed = MissedRecorder(
            store=store,
            index=index,
            clock=clock,
            metrics=metrics,
            health=health,
            instance_id=instance_id,
            wake=self._wake,
            alerts=alerts,
        )
        self._resync_due = False
        self._resyncing: asyncio.Task[float] | None = None
        self._next_resync = 0.0
        self._stopping = False
        self.leaving = False
        """Set when this instance is about to stop: it gives its share up
        but fires its jobs until the others have taken them."""
        self._loading_until = clock.monotonic() + LOADING_SHARE_S
        self.ready = asyncio.Event()  # set once the first sync is done
        metrics.gauge(
            "cronsvc_active_jobs", "Jobs on this instance's heap", lambda: len(index.entries)
        )
        metrics.gauge(
            "cronsvc_jobs_owned",
            "Active jobs this instance owns and schedules (its share of a cluster's)",
            lambda: len(index.entries),
        )
        metrics.gauge(
            "cronsvc_heap_size", "Entries on the heap, stale ones included", lambda: len(index.heap)
        )

    def notify_job_changed(self, job_id: str) -> None:
        """`RESYNC` asks for a full resync (notices may have been lost)."""
        if job_id == RESYNC:
            self._resync_due = True
        else:
            self._sync.changed.add(job_id)
        self._wake.set()

    def _owners_changed(self, before: Ownership, after: Ownership) -> None:
        self._resync_due = True  # it drops the jobs that moved away and loads those moved in
        self._wake.set()

    def jobs_owned(self) -> int | None:
        """None until every job it owns is loaded (it takes no share before),
        and again once it is leaving (its jobs move to the others)."""
        if self.leaving or not self.ready.is_set():
            return None
        return len(self._index.entries)

    def loading(self) -> bool:
        """True while the first load goes on, for `LOADING_SHARE_S` at most: a
        cluster starting together keeps this instance's share for it meanwhile
        (`Heartbeat.loading`); past that, the others take it until it is done."""
        return (
            not self.ready.is_set()
            and not self.leaving
            and self._clock.monotonic() < self._loading_until
        )

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _take_handed_back(self) -> None:
        """Held ticks wait off the heap until the store answers, then are
        judged as after a restart; one claimed after all in between is fenced
        by the store's unique claim. Stale jobs are read again, as on a notice."""
        held, stale = self._handback.take()
        if held:
            self._index.hold(held)
        self._sync.changed.update(stale)

    async def run(self) -> None:
        await self._sync.first_sync(stopping=lambda: self._stopping, between_slices=self._fire_due)
        self.ready.set()
        self._next_resync = self._clock.monotonic() + self._config.resync_interval_s
        try:
            while not self._stopping:
                self._take_handed_back()
                store_up = self._health.is_up(Dependency.STORE)
                if self._index.held and store_up:
                    self._resume_held()
                if self._sync.changed and store_up:
                    await self._sync.apply_changes()
                self._tend_resync()
                self._fire_due()
                self._wake.clear()
                resync_wanted = self._resyncing is None and self._resync_due
                if (self._sync.changed and store_up) or resync_wanted or self._stopping:
                    continue
                timeout = self._timeout()
                if timeout is None or timeout > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            if self._resyncing is not None:
                self._resyncing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._resyncing
        await self._sync.drain()
        await self._missed.drain()

    def _tend_resync(self) -> None:
        if self._resyncing is None and (
            self._resync_due or self._clock.monotonic() >= self._next_resync
        ):
            self._resync_due = False
            self._resyncing = asyncio.create_task(self._sync.resync())
            self._resyncing.add_done_callback(lambda _: self._wake.set())
        if self._resyncing is not None and self._resyncing.done():
            took_s = self._resyncing.result()
            self._resyncing = None
            # A resync only repairs lost notices (a coordinator reconnect asks for
            # one at once): it may take at most about 5% of the time.
            interval = max(self._config.resync_interval_s, 20 * took_s)
            self._next_resync = self._clock.monotonic() + interval

    def _timeout(self) -> float | None:
        timeout: float | None = None
        if self._resyncing is None:
            timeout = self._next_resync - self._clock.monotonic()
        if self._index.held or self._sync.changed:  # waiting for the store
            timeout = HOLD_CHECK_S if timeout is None else min(timeout, HOLD_CHECK_S)
        wake = self._index.next_wake()
        if wake is not None:
            head = wake - self._clock.time()
            timeout = head if timeout is None else min(timeout, head)
        return timeout

    def _resume_held(self) -> None:
        resumed = self._index.resume_held(
            self._clock.now(), claim_lead=self._sync.claim_lead(), read_lead=self._sync.read_lead()
        )
        if resumed:
            log.info("held_jobs_resumed", count=resumed)

    def _fire_due(self) -> None:
        self._take_handed_back()
        now_ts = self._clock.time()
        if not self._health.is_up(Dependency.STORE):
            self._index.hold_due(now_ts)
            return
        taken = self._index.take_due(
            now_ts,
            claim_lead=self._sync.claim_lead(),
            read_lead=self._sync.read_lead(),
            batch_size=BATCH_SIZE,
            ahead_batch_size=AHEAD_BATCH_SIZE,
        )
        for job, ticks in taken.missed:
            self._missed.record(job, ticks)
        for batch in taken.batches:
            self._sink.fire(batch)
        for skipped in taken.unrecorded:
            self._metrics.inc("cronsvc_ticks_missed_unrecorded_total", skipped.count)
            if self._alerts is not None:
                self._alerts.unrecorded(skipped.job_id, None)
            if skipped.jumped:
                log.warning(
                    "missed_ticks_unrecorded",
                    job_id=skipped.job_id,
                    count=skipped.count,
                    at_least=skipped.at_least,
                )
        if taken.unread:
            self._sync.read_due(taken.unread)
