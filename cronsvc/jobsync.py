"""The scheduler's store side: what feeds the job index from the store, and
the MISSED records it writes. A reloaded job always resumes from the store's
`last_tick`, so it can neither skip a tick nor fire an old copy (the store
refuses a claim made with an old job version). The index holds only the jobs
this instance owns (`cronsvc.ownership`); a job that moves in resumes the same
way, as after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from cronsvc.alertwatch import AlertWatch
from cronsvc.clock import Clock
from cronsvc.config import SchedulerConfig
from cronsvc.domain import Job, Trigger
from cronsvc.errors import CronSvcError
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.instants import rfc3339
from cronsvc.jobindex import Entry, JobIndex, Plan
from cronsvc.metrics import Metrics
from cronsvc.misfire import MIN_GRACE_S
from cronsvc.ownership import Membership, Ownership
from cronsvc.retry import TRANSIENT
from cronsvc.store import ActiveSchedule, MissedRecords, SchedulePage, ScheduleSource
from cronsvc.ticks import DueTick, TickSink

log = structlog.get_logger(__name__)

RESYNC_READ_BATCH = 500  # whole jobs read at once
SYNC_PAGE = 20_000  # the store answers other calls between two pages
RESYNC_PAGE = 5000  # small: an API call queued behind a page must not wait long
LOAD_SLICE = 2000  # jobs put on the heap between two turns of the event loop

READ_LEAD_S = 1.0  # how long before its claim a slim job is read whole, at least
MAX_READ_LEAD_S = 10.0
READ_RETRY_S = 1.0  # after a failed read of due jobs
LEAD_STEP_S = 0.1


@dataclass(eq=False, slots=True)
class SteadyLead:
    """A lead that moves in whole steps. A job goes back on the heap at its
    next tick less the lead of that moment; a lead that drifted with every
    estimate gave the jobs of one instant as many wakes, so one tick was
    claimed in many small batches, the last of them late. It rises at once to
    cover what is asked, and falls only once that is half a step below the
    next step down, so an estimate hovering at a step does not split a tick."""

    step_s: float = LEAD_STEP_S
    _lead_s: float = 0.0

    def follow(self, wanted_s: float) -> float:
        lead_s = math.ceil(wanted_s / self.step_s - 1e-9) * self.step_s
        if lead_s > self._lead_s or wanted_s < self._lead_s - 1.5 * self.step_s:
            self._lead_s = lead_s
        return self._lead_s


@dataclass(eq=False, repr=False, slots=True, kw_only=True)
class JobSync:
    store: ScheduleSource
    index: JobIndex
    sink: TickSink
    clock: Clock
    config: SchedulerConfig
    metrics: Metrics
    wake: asyncio.Event
    membership: Membership
    changed: set[str] = field(default_factory=set, init=False)  # jobs notices named, to reload
    _synced: Ownership | None = field(default=None, init=False)
    """The owners the index was last made for, by a whole sync."""
    _touched: set[str] = field(default_factory=set, init=False)
    """Jobs notices reloaded or dropped since the current resync began:
    newer news than any page read before, so pages leave them alone."""
    _syncs: Iterator[int] = field(default_factory=lambda: itertools.count(1), init=False)
    _read_s: float = field(default=0.01, init=False)  # recent length of a read of due jobs
    _claim_lead: SteadyLead = field(default_factory=SteadyLead, init=False)
    _read_lead: SteadyLead = field(default_factory=SteadyLead, init=False)
    _background: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    def claim_lead(self) -> float:
        return self._claim_lead.follow(self.sink.claim_lead(self.config.claim_ahead_s))

    def read_lead(self) -> float:
        return self._read_lead.follow(min(MAX_READ_LEAD_S, max(READ_LEAD_S, 2 * self._read_s)))

    async def drain(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def first_sync(
        self, *, stopping: Callable[[], bool], between_slices: Callable[[], None]
    ) -> None:
        """Every active job into the index, slim, the next page read while one
        is applied. A page is retried until the store answers: nothing can be
        scheduled before. Each page keeps the jobs owned as the latest heartbeat
        says (a cluster starting together hears of its members as they come);
        if the owners changed meanwhile, the next resync drops what moved away."""
        sync = next(self._syncs)
        first = self.membership.current
        after: str | None = None
        reading: asyncio.Task[SchedulePage] | None = None
        try:
            while not stopping():
                if reading is None:
                    reading = self._read_page(after)
                try:
                    page = await reading
                except TRANSIENT as exc:
                    reading = None
                    self._resync_failed(exc)
                    self.wake.clear()  # notices wait in `changed`; stopping cuts the wait short
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), 1.0)
                    continue
                reading = None
                if page.next_after is not None:
                    after = page.next_after
                    reading = self._read_page(after)
                rows, owned = page.rows, self.membership.current
                if not owned.alone:  # owners heard of since the page was asked for
                    rows = [row for row in rows if owned.owns(row.id)]
                await self._apply_page(rows, sync, between_slices)
                if self.changed:
                    await self.apply_changes()
                if reading is None:
                    self._synced = first
                    return
        finally:
            if reading is not None:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, *TRANSIENT):
                    await reading

    def _read_page(self, after: str | None) -> asyncio.Task[SchedulePage]:
        """Only the jobs owned when it is asked for; each page is filtered
        again by the owners known when it is applied."""
        owned = self.membership.current
        keep = None if owned.alone else owned.owns
        return asyncio.create_task(self.store.active_schedules(after, SYNC_PAGE, keep=keep))

    async def _apply_page(
        self, page: list[ActiveSchedule], sync: int, between_slices: Callable[[], None]
    ) -> None:
        claim_lead = self.claim_lead()
        read_lead = self.read_lead()
        known: dict[tuple[Plan, datetime], tuple[datetime, float]] = {}
        refused: list[tuple[str, CronSvcError]] = []
        for start in range(0, len(page), LOAD_SLICE):
            self.index.add_slim(
                page[start : start + LOAD_SLICE],
                sync=sync,
                touched=self._touched,
                known=known,
                claim_lead=claim_lead,
                read_lead=read_lead,
                refused=refused,
            )
            for job_id, exc in refused:
                _unschedulable(job_id, exc)
            refused.clear()
            if start + LOAD_SLICE <= len(page):
                # Let the API and the jobs already loaded have the loop.
                await asyncio.sleep(0)
                between_slices()

    async def resync(self) -> float:
        """Repairs lost notices: reads whole the jobs the index lacks at their
        version and drops those no page held. Returns how long it took."""
        started = self.clock.monotonic()
        self._touched.clear()
        sync = next(self._syncs)
        owned, before = self.membership.current, self._synced
        if before is not None and owned is not before:
            self._disown([job_id for job_id in self.index.entries if not owned.owns(job_id)])
        seen = 0
        after: str | None = None
        try:
            while True:
                versions = await self.store.active_versions(after, RESYNC_PAGE)
                mine = versions
                if not owned.alone:
                    mine = {job_id: v for job_id, v in versions.items() if owned.owns(job_id)}
                seen += await self._compare_page(mine, sync, None if owned is before else before)
                if len(versions) < RESYNC_PAGE:
                    break
                after = next(reversed(versions))
        except TRANSIENT as exc:
            self._resync_failed(exc)
        else:
            self._synced = owned
            index = self.index
            if self._touched or seen != len(index.entries):
                job_ids = list(index.entries)
                for start in range(0, len(job_ids), SYNC_PAGE):
                    page = job_ids[start : start + SYNC_PAGE]
                    index.drop_unseen(page, sync=sync, changed=self.changed, touched=self._touched)
                    await asyncio.sleep(0)
        return self.clock.monotonic() - started

    def _resync_failed(self, exc: BaseException) -> None:
        self.metrics.inc("cronsvc_store_errors_total", op="resync")
        log.warning("resync_failed", error=str(exc))

    def _disown(self, job_ids: Iterable[str]) -> None:
        """Drops those of `job_ids` the index holds: another instance owns them now."""
        entries = self.index.entries
        gone = [job_id for job_id in job_ids if job_id in entries]
        for job_id in gone:
            self.index.drop(job_id)
        if gone:
            self.metrics.inc("cronsvc_ownership_moves_total", len(gone), direction="out")
            log.info("jobs_moved_out", count=len(gone))

    async def _compare_page(
        self, versions: dict[str, int], sync: int, before: Ownership | None
    ) -> int:
        """How many of the page's jobs are then in the index; those another
        instance owned `before` (the owners changed) are counted as moved in."""
        index, touched = self.index, self._touched
        seen, stale = index.compare(versions, sync=sync, touched=touched)
        moved = 0
        for start in range(0, len(stale), RESYNC_READ_BATCH):
            for job in await self.store.active_jobs(stale[start : start + RESYNC_READ_BATCH]):
                new = job.id not in index.entries
                if index.fresher(job) and job.id not in touched and self._load(job, sync):
                    seen += 1
                    if new and before is not None and not before.owns(job.id):
                        moved += 1
        if moved:
            self.metrics.inc("cronsvc_ownership_moves_total", moved, direction="in")
            log.info("jobs_moved_in", count=moved)
        return seen

    async def apply_changes(self) -> None:
        """One store read per batch, not per job: a burst of creations must not
        hold the tick loop."""
        changed, self.changed = list(self.changed), set()
        owned = self.membership.current
        if not owned.alone:  # another's jobs: dropped here if the resync has not yet
            theirs = {job_id for job_id in changed if not owned.owns(job_id)}
            self._disown(theirs)
            changed = [job_id for job_id in changed if job_id not in theirs]
        for start in range(0, len(changed), RESYNC_READ_BATCH):
            batch = changed[start : start + RESYNC_READ_BATCH]
            try:
                jobs = await self.store.active_jobs(batch)
            except TRANSIENT as exc:
                self.changed.update(changed[start:])  # retried at the next wake or resync
                self.metrics.inc("cronsvc_store_errors_total", op="reload")
                log.warning("job_reload_failed", count=len(changed) - start, error=str(exc))
                return
            active = {job.id: job for job in jobs}
            self._touched.update(batch)
            for job_id in batch:
                job = active.get(job_id)
                if job is None:  # deleted or paused
                    self.index.drop(job_id)
                else:
                    self._load(job)

    def _load(self, job: Job, sync: int = 0) -> bool:
        """False if the job cannot be scheduled."""
        try:
            self.index.load(
                job,
                now_ts=self.clock.time(),
                claim_lead=self.claim_lead(),
                read_lead=self.read_lead(),
                sync=sync,
            )
        except CronSvcError as exc:
            _unschedulable(job.id, exc)
            return False
        return True

    def read_due(self, unread: list[tuple[str, Entry]]) -> None:
        task = asyncio.create_task(self._read_due(unread))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _read_due(self, unread: list[tuple[str, Entry]]) -> None:
        """A job gone, paused or at another version than the index's is
        reloaded, as if a notice had named it."""
        for start in range(0, len(unread), RESYNC_READ_BATCH):
            batch = unread[start : start + RESYNC_READ_BATCH]
            started = self.clock.monotonic()
            try:
                jobs = await self.store.active_jobs([job_id for job_id, _ in batch])
            except TRANSIENT as exc:
                self.metrics.inc("cronsvc_store_errors_total", op="read_due")
                log.warning("due_jobs_read_failed", count=len(unread) - start, error=str(exc))
                self.index.requeue(unread[start:], self.clock.time() + READ_RETRY_S)
                self.wake.set()
                return
            self._read_s = 0.8 * self._read_s + 0.2 * (self.clock.monotonic() - started)
            found = {job.id: job for job in jobs}
            claim_lead = self.claim_lead()
            for job_id, entry in batch:
                if not self.index.put_back(job_id, entry, found.get(job_id), claim_lead=claim_lead):
                    self.changed.add(job_id)
            self.wake.set()


def _unschedulable(job_id: str, exc: CronSvcError) -> None:
    # Stored before a stricter setting; refuse loudly rather than guess.
    log.error("job_not_schedulable", job_id=job_id, reason=str(exc))


@dataclass(eq=False, repr=False, slots=True, kw_only=True)
class MissedRecorder:
    """Writes MISSED in the background. A write the store refuses for now
    holds the job at the first of its ticks, taken again once the store answers."""

    store: MissedRecords
    index: JobIndex
    clock: Clock
    metrics: Metrics
    health: HealthMonitor
    instance_id: str
    wake: asyncio.Event
    alerts: AlertWatch | None = None
    _writing: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    def record(self, job: Job, ticks: list[datetime]) -> None:
        task = asyncio.create_task(self._record(job, ticks))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def drain(self) -> None:
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)

    async def _record(self, job: Job, ticks: list[datetime]) -> None:
        spec = job.spec
        grace = max(spec.misfire_grace_seconds, MIN_GRACE_S)
        reason = (
            "overdue when the scheduler reached it and not fired "
            f"(misfirePolicy {spec.misfire_policy.value}, misfireGraceSeconds {grace:g})"
        )
        try:
            count = await self.store.record_missed(
                job, ticks, instance_id=self.instance_id, now=self.clock.now(), reason=reason
            )
        except TRANSIENT as exc:
            self.health.report(Dependency.STORE, type(exc).__name__)
            self.index.hold([DueTick(job, ticks[0], Trigger.SCHEDULE)])
            self.wake.set()
            self.metrics.inc("cronsvc_store_errors_total", op="record_missed")
            log.warning(
                "missed_ticks_held", job_id=job.id, count=len(ticks), error=str(exc) or None
            )
            return
        if not count:  # every tick had a record already (another instance wrote them)
            return
        self.metrics.inc("cronsvc_executions_total", count, status="MISSED")
        if self.alerts is not None:
            self.alerts.missed(job, ticks, count)
        log.warning(
            "ticks_missed",
            job_id=job.id,
            count=count,
            first=rfc3339(ticks[0]),
            last=rfc3339(ticks[-1]),
        )
