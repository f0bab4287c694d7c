"""The tick loop: a min-heap of each active job's next fire instant.

The loop sleeps until the head of the heap is due or a change notice wakes it
(never a fixed poll). Due ticks go through the misfire policy and on to the
runner; the job's next instant goes back on the heap. A full resync from the
store every `resync_interval_s` repairs any lost notice.

Where a job resumes is always derived from the store's `last_tick` (the last
tick dealt with), so a reloaded job can neither skip a tick nor fire an old
copy: the runner's claim carries the job version it saw, and the store refuses
a claim made with an old version.

Most jobs are held slim: id, version, schedule and the policies the loop
needs (`ActiveSchedule`, read page by page). A whole job is read when one of
its ticks is near, ahead of the claim by `_read_lead`, and kept only while
its next tick is within `KEEP_WHOLE_S`: a million daily jobs cost a few
hundred bytes each, and the every-minute ones are not read again per tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from cronsvc.clock import Clock
from cronsvc.config import SchedulerConfig
from cronsvc.coord import RESYNC
from cronsvc.cron import CronSchedule, parse_schedule
from cronsvc.domain import ConcurrencyPolicy, Job, MisfirePolicy, Trigger
from cronsvc.errors import CronSvcError
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.instants import rfc3339
from cronsvc.metrics import Metrics
from cronsvc.misfire import MIN_GRACE_S, plan_due_ticks
from cronsvc.retry import TRANSIENT
from cronsvc.runner import DueTick, TickRunner
from cronsvc.store import ActiveSchedule, Store

log = structlog.get_logger(__name__)

MAX_COUNTED = 1000
"""Unrecorded missed ticks are counted one by one up to this many, then
jumped over: a week-long outage of an every-second job must not stall the loop."""

BATCH_SIZE = 256
"""Ticks due now are leased and claimed in batches of this many, so the
first webhooks go out while later claims are still being written."""

AHEAD_BATCH_SIZE = 2048
"""Ticks taken ahead of their instant, whose claims are written before it,
go in batches of up to this many: each batch is a lease, a claim and a
dispatched mark, and the batches of one tick queue for the store one after
another, so smaller batches left the last one's mark after the tick."""

RESYNC_READ_BATCH = 500
"""Whole jobs read at once: those notices named, or those falling due."""

SYNC_PAGE = 20_000
"""Schedules read per store call by the first sync: the store answers other
calls (API requests, claims) between two pages."""

RESYNC_PAGE = 5000
"""Versions read per store call by a resync: small enough that an API call
queued behind a page does not wait long for the store's worker."""

LOAD_SLICE = 2000
"""Jobs put on the heap between two turns of the event loop."""

KEEP_WHOLE_S = 300.0
"""A job whose next tick is at most this far off keeps its whole record on
the heap; others let it go and have it read again ahead of their next tick."""

READ_LEAD_S = 1.0
"""How long before a slim job's claim its whole record is read, at least;
more when recent reads were slower (twice their length, at most
`MAX_READ_LEAD_S`)."""

MAX_READ_LEAD_S = 10.0

CACHED_PLANS = 65_536
"""Distinct (schedule, policies) kept for jobs to share, as `cron` keeps
parsed schedules."""

READ_RETRY_S = 1.0
"""After a failed read of due jobs, how long until they are read again."""

HOLD_CHECK_S = 0.2
"""While jobs are held for the store, how often the loop looks whether it
answers again."""


_CLAIMED_AT_THE_TICK = frozenset({ConcurrencyPolicy.FORBID, ConcurrencyPolicy.REPLACE})


@dataclass(frozen=True, slots=True, eq=False)
class _Plan:
    """What the loop needs to take a job's ticks, shared by all jobs alike
    (made once per kind: compared and hashed by identity, which is quick)."""

    schedule: CronSchedule
    misfire_policy: MisfirePolicy
    misfire_grace_seconds: int
    claimed_at_the_tick: bool
    """`forbid` and `replace` jobs are claimed at the tick, not ahead of it."""


_PlanKey = tuple[str, str, ConcurrencyPolicy, MisfirePolicy, int]


@dataclass(slots=True)
class _Entry:
    plan: _Plan
    version: int
    next_tick: datetime
    job: Job | None
    """The whole job, while held (see `KEEP_WHOLE_S`); None while slim."""
    seq: int | None = None
    """The sequence number of this entry's heap item (other items of its
    job are stale); None while it is off the heap, its whole job being read."""
    synced: int = 0
    """The store read (first sync or resync) that last saw this job."""


class Scheduler:
    def __init__(
        self,
        *,
        store: Store,
        runner: TickRunner,
        clock: Clock,
        config: SchedulerConfig,
        metrics: Metrics,
        health: HealthMonitor,
        instance_id: str,
        started_at: datetime,
    ) -> None:
        self._store = store
        self._health = health
        self._runner = runner
        self._clock = clock
        self._config = config
        self._metrics = metrics
        self._instance_id = instance_id
        self._started_at = started_at
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count(1)
        self._syncs = itertools.count(1)
        self._plans: dict[_PlanKey, _Plan] = {}
        self._changed: set[str] = set()
        self._touched: set[str] = set()
        """Jobs notices reloaded or dropped since the current resync began."""
        self._held: set[str] = set()
        """Jobs off the heap until the store answers again (see `hold`)."""
        self._resumed: dict[str, datetime] = {}
        """Held jobs put back on the heap, and when: their ticks due before
        then are judged as after a restart at that instant."""
        self._resync_due = False
        self._read_s = 0.01
        """Recent length of a read of whole jobs falling due."""
        self._wake = asyncio.Event()
        self._stopping = False
        self._background: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()
        """Set once the first sync from the store is done."""
        metrics.gauge(
            "cronsvc_active_jobs", "Jobs on this instance's heap", lambda: len(self._entries)
        )
        metrics.gauge(
            "cronsvc_heap_size", "Entries on the heap, stale ones included", lambda: len(self._heap)
        )

    def notify_job_changed(self, job_id: str) -> None:
        """A job changed somewhere: reload it before the next tick is taken.
        `RESYNC` asks for a full resync (notices may have been lost)."""
        if job_id == RESYNC:
            self._resync_due = True
        else:
            self._changed.add(job_id)
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def hold(self, due: Sequence[DueTick]) -> None:
        """Ticks the store did not take (it is unreachable): their jobs go
        back to the earliest of them and off the heap until the store
        answers its probe again. Then those ticks, and every tick that fell
        due meanwhile, are taken as after a restart: fired late or recorded
        MISSED as each job's misfire policy says. A tick claimed after all
        in between is fenced by the store's unique claim."""
        for d in due:
            entry = self._entries.get(d.job.id)
            if entry is None or entry.version != d.job.version:
                continue  # changed since: reloaded from the store's last tick
            if d.tick < entry.next_tick:
                entry.next_tick = d.tick
            entry.seq = None  # its heap items turn stale
            self._held.add(d.job.id)
        self._wake.set()

    async def run(self) -> None:
        await self._first_sync()
        self.ready.set()
        next_resync = self._clock.monotonic() + self._config.resync_interval_s
        resyncing: asyncio.Task[float] | None = None
        try:
            while not self._stopping:
                store_up = self._health.is_up(Dependency.STORE)
                if self._held and store_up:
                    self._resume_held()
                if self._changed and store_up:
                    await self._apply_changes()
                if resyncing is None and (
                    self._resync_due or self._clock.monotonic() >= next_resync
                ):
                    # In the background: the loop keeps firing meanwhile.
                    self._resync_due = False
                    resyncing = asyncio.create_task(self._resync())
                    resyncing.add_done_callback(lambda _: self._wake.set())
                if resyncing is not None and resyncing.done():
                    took_s = resyncing.result()
                    resyncing = None
                    next_resync = self._clock.monotonic() + self._resync_interval(took_s)
                self._fire_due()
                self._wake.clear()
                resync_wanted = resyncing is None and self._resync_due
                if (self._changed and store_up) or resync_wanted or self._stopping:
                    continue
                timeout: float | None = None
                if resyncing is None:
                    timeout = next_resync - self._clock.monotonic()
                if self._held or self._changed:  # waiting for the store
                    timeout = HOLD_CHECK_S if timeout is None else min(timeout, HOLD_CHECK_S)
                if self._heap:
                    head = self._heap[0][0] - self._clock.time()
                    timeout = head if timeout is None else min(timeout, head)
                if timeout is None or timeout > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            if resyncing is not None:
                resyncing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await resyncing
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _resume_held(self) -> None:
        """The store answers again: put the held jobs back on the heap, due
        now, their overdue ticks to be judged as after a restart."""
        now = self._clock.now()
        resumed = 0
        for job_id in self._held:
            entry = self._entries.get(job_id)
            if entry is not None and entry.seq is None:
                self._resumed[job_id] = now
                self._push(job_id, entry)
                resumed += 1
        self._held.clear()
        if resumed:
            log.info("held_jobs_resumed", count=resumed)

    def _resync_interval(self, took_s: float) -> float:
        """The configured interval, or longer when a resync takes long: it
        only repairs lost notices (a coordinator reconnect asks for one at
        once), so it may take at most about 5% of the time."""
        return max(self._config.resync_interval_s, 20 * took_s)

    async def _first_sync(self) -> None:
        """Every active job onto the heap, page by page, with the loop free
        between slices: jobs already loaded fire, the API answers, and
        notices are applied between pages (a notice is newer news than a
        page, which then leaves that job alone). The next page is read while
        one is applied. A page is retried until the store answers: nothing
        can be scheduled before."""
        sync = next(self._syncs)
        after: str | None = None
        reading: asyncio.Task[list[ActiveSchedule]] | None = None
        try:
            while not self._stopping:
                if reading is None:
                    reading = asyncio.create_task(self._store.active_schedules(after, SYNC_PAGE))
                try:
                    page = await reading
                except TRANSIENT as exc:
                    reading = None
                    self._resync_failed(exc)
                    self._wake.clear()  # notices wait in _changed; stop() cuts the wait short
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 1.0)
                    continue
                reading = None
                if len(page) == SYNC_PAGE:
                    after = page[-1].id
                    reading = asyncio.create_task(self._store.active_schedules(after, SYNC_PAGE))
                await self._apply_page(page, sync)
                if self._changed:
                    await self._apply_changes()
                if reading is None:
                    return
        finally:
            if reading is not None:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, *TRANSIENT):
                    await reading

    async def _resync(self) -> float:
        """Bring the heap in line with the store, page by page: versions are
        compared, jobs whose version the heap lacks are read whole, jobs no
        page held are dropped. A job a notice reloaded or dropped meanwhile
        is left as the notice made it. Returns how long it took."""
        started = self._clock.monotonic()
        self._touched.clear()
        sync = next(self._syncs)
        seen = 0
        after: str | None = None
        try:
            while True:
                versions = await self._store.active_versions(after, RESYNC_PAGE)
                seen += await self._compare_page(versions, sync)
                if len(versions) < RESYNC_PAGE:
                    break
                after = next(reversed(versions))
        except TRANSIENT as exc:
            self._resync_failed(exc)
            return self._clock.monotonic() - started
        if self._touched or seen != len(self._entries):
            await self._drop_unseen(sync)
        return self._clock.monotonic() - started

    def _resync_failed(self, exc: BaseException) -> None:
        self._metrics.inc("cronsvc_store_errors_total", help="Store calls that failed", op="resync")
        log.warning("resync_failed", error=str(exc))

    async def _compare_page(self, versions: dict[str, int], sync: int) -> int:
        """Mark the jobs of a page of versions the heap holds as they are (or
        newer) and read whole those it lacks, except those notices touched.
        Returns how many of the page's jobs are then on the heap."""
        entries, touched = self._entries, self._touched
        seen = 0
        stale: list[str] = []
        for job_id, version in versions.items():
            entry = entries.get(job_id)
            if entry is not None and entry.version >= version:
                entry.synced = sync
                seen += 1
            elif job_id not in touched:
                stale.append(job_id)
        for start in range(0, len(stale), RESYNC_READ_BATCH):
            for job in await self._store.active_jobs(stale[start : start + RESYNC_READ_BATCH]):
                entry = entries.get(job.id)
                fresher = entry is None or entry.version < job.version
                if fresher and job.id not in touched and self._load(job, sync):
                    seen += 1
        return seen

    async def _apply_page(self, page: list[ActiveSchedule], sync: int) -> int:
        """Put the jobs of a page on the heap, slim, unless the heap holds
        them at that version or newer, or a notice touched them. Returns how
        many of the page's jobs are on the heap."""
        entries, touched, plans, heap = self._entries, self._touched, self._plans, self._heap
        claim_lead = self._runner.claim_lead(self._config.claim_ahead_s)
        read_lead = self._read_lead()
        # Jobs alike whose last ticks are equal share their next tick: one
        # schedule computation each, not one per job.
        known: dict[tuple[_Plan, datetime], tuple[datetime, float]] = {}
        seen = 0
        for n, row in enumerate(page, 1):
            job_id = row.id
            entry = entries.get(job_id)
            if entry is not None and entry.version >= row.version:
                entry.synced = sync
                seen += 1
            elif job_id not in touched:
                key = (
                    row.cron_expression,
                    row.timezone,
                    row.concurrency_policy,
                    row.misfire_policy,
                    row.misfire_grace_seconds,
                )
                try:
                    plan = plans.get(key) or self._plan(key)
                except CronSvcError as exc:
                    self._unschedulable(job_id, exc)
                    continue
                next_tick, wake = known.get((plan, row.last_tick)) or (None, 0.0)
                if next_tick is None:
                    next_tick = plan.schedule.next_after(row.last_tick)
                    wake = next_tick.timestamp() - read_lead
                    if not plan.claimed_at_the_tick:
                        wake -= claim_lead
                    known[plan, row.last_tick] = (next_tick, wake)
                seq = next(self._seq)
                entries[job_id] = _Entry(plan, row.version, next_tick, None, seq, sync)
                heapq.heappush(heap, (wake, seq, job_id))
                seen += 1
            if n % LOAD_SLICE == 0:
                # Many jobs at once (the first sync): let the API, health
                # checks and the jobs already loaded have the loop meanwhile.
                await asyncio.sleep(0)
                self._fire_due()
        return seen

    async def _drop_unseen(self, sync: int) -> None:
        """Drop the jobs the resync `sync` did not see (deleted or paused
        without a notice), unless a notice has news of them."""
        entries = self._entries
        job_ids = list(entries)
        for start in range(0, len(job_ids), SYNC_PAGE):
            for job_id in job_ids[start : start + SYNC_PAGE]:
                entry = entries.get(job_id)
                if (
                    entry is not None
                    and entry.synced != sync
                    and job_id not in self._changed
                    and job_id not in self._touched
                ):
                    self._drop(job_id)
            await asyncio.sleep(0)

    async def _apply_changes(self) -> None:
        """Reload the jobs notices named, in batches (one store read each, not
        one per job: a burst of creations must not hold the tick loop)."""
        changed, self._changed = list(self._changed), set()
        for start in range(0, len(changed), RESYNC_READ_BATCH):
            batch = changed[start : start + RESYNC_READ_BATCH]
            try:
                jobs = await self._store.active_jobs(batch)
            except TRANSIENT as exc:
                self._changed.update(changed[start:])  # retried at the next wake or resync
                self._metrics.inc(
                    "cronsvc_store_errors_total", help="Store calls that failed", op="reload"
                )
                log.warning("job_reload_failed", count=len(changed) - start, error=str(exc))
                return
            active = {job.id: job for job in jobs}
            self._touched.update(batch)
            for job_id in batch:
                job = active.get(job_id)
                if job is None:  # deleted or paused
                    self._drop(job_id)
                else:
                    self._load(job)

    def _plan(self, key: _PlanKey) -> _Plan:
        """The plan of jobs alike, made once. Raises `CronSvcError` for a
        schedule the current settings refuse."""
        plan = self._plans.get(key)
        if plan is None:
            expression, zone, concurrency, misfire, grace = key
            schedule = parse_schedule(expression, zone, min_interval_s=self._config.min_interval_s)
            if len(self._plans) >= CACHED_PLANS:
                self._plans.clear()  # entries keep theirs; jobs alike share anew
            plan = self._plans[key] = _Plan(
                schedule=schedule,
                misfire_policy=misfire,
                misfire_grace_seconds=grace,
                claimed_at_the_tick=concurrency in _CLAIMED_AT_THE_TICK,
            )
        return plan

    def _load(self, job: Job, sync: int = 0) -> bool:
        """Put a whole job on the heap (read because of a notice or a
        resync); False if it cannot be scheduled. It stays whole only if its
        next tick is near."""
        spec = job.spec
        key = (
            spec.cron_expression,
            spec.timezone,
            spec.concurrency_policy,
            spec.misfire_policy,
            spec.misfire_grace_seconds,
        )
        try:
            plan = self._plan(key)
        except CronSvcError as exc:
            self._unschedulable(job.id, exc)
            return False
        next_tick = plan.schedule.next_after(job.last_tick)
        near = next_tick.timestamp() - self._clock.time() <= KEEP_WHOLE_S
        entry = _Entry(plan, job.version, next_tick, job if near else None, synced=sync)
        self._entries[job.id] = entry
        self._push(job.id, entry)
        return True

    def _unschedulable(self, job_id: str, exc: CronSvcError) -> None:
        # Stored before a stricter setting; refuse loudly rather than guess.
        self._drop(job_id)
        log.error("job_not_schedulable", job_id=job_id, reason=str(exc))

    def _drop(self, job_id: str) -> None:
        self._entries.pop(job_id, None)  # its heap entries turn stale
        if self._resumed:
            self._resumed.pop(job_id, None)

    def _read_lead(self) -> float:
        return min(MAX_READ_LEAD_S, max(READ_LEAD_S, 2 * self._read_s))

    def _push(self, job_id: str, entry: _Entry, wake: float | None = None) -> None:
        """Key the heap by when to take the tick: ahead of it by the runner's
        claim lead (at least `claim_ahead_s`), so its claim is written before
        the tick; at the tick itself for
        `forbid` and `replace` jobs, whose claim must see whether the last
        run ended (and, under `replace`, must not end it early). A slim job
        comes off the heap earlier still, to have its whole record read."""
        if wake is None:
            wake = entry.next_tick.timestamp()
            if not entry.plan.claimed_at_the_tick:
                wake -= self._runner.claim_lead(self._config.claim_ahead_s)
            if entry.job is None:
                wake -= self._read_lead()
        entry.seq = seq = next(self._seq)
        heapq.heappush(self._heap, (wake, seq, job_id))

    def _fire_due(self) -> None:
        now_ts = self._clock.time()
        if not self._health.is_up(Dependency.STORE):
            self._hold_due(now_ts)
            return
        now = datetime.fromtimestamp(now_ts, UTC)
        by_tick: dict[datetime, list[DueTick]] = {}
        unread: list[tuple[str, _Entry]] = []
        while self._heap and self._heap[0][0] <= now_ts:
            _, seq, job_id = heapq.heappop(self._heap)
            entry = self._entries.get(job_id)
            if entry is None or entry.seq != seq:
                continue
            job = entry.job
            if job is None:
                entry.seq = None  # back on the heap once read
                unread.append((job_id, entry))
                continue
            for due in self._take_due(job, entry, now):
                batch = by_tick.setdefault(due.tick, [])
                batch.append(due)
                if len(batch) >= (BATCH_SIZE if due.tick <= now else AHEAD_BATCH_SIZE):
                    self._runner.fire(batch)
                    by_tick[due.tick] = []
            if entry.next_tick.timestamp() - now_ts > KEEP_WHOLE_S:
                entry.job = None
            self._push(job_id, entry)
        for batch in by_tick.values():
            if batch:
                self._runner.fire(batch)
        if unread:
            task = asyncio.create_task(self._read_due(unread))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if len(self._heap) > 2 * len(self._entries) + 1024:
            self._compact()

    def _hold_due(self, now_ts: float) -> None:
        """While the store is down, jobs falling due wait off the heap (their
        claims would only be handed back), each at its next tick."""
        while self._heap and self._heap[0][0] <= now_ts:
            _, seq, job_id = heapq.heappop(self._heap)
            entry = self._entries.get(job_id)
            if entry is not None and entry.seq == seq:
                entry.seq = None
                self._held.add(job_id)

    async def _read_due(self, unread: list[tuple[str, _Entry]]) -> None:
        """Read the whole jobs of slim entries whose tick is near and put them
        back on the heap, to be taken as usual. A job gone, paused or at
        another version than the heap's is handled as a stale claim is: a
        reload, as if a notice had named it. An entry a notice or resync
        replaced meanwhile is left to its replacement."""
        for start in range(0, len(unread), RESYNC_READ_BATCH):
            batch = unread[start : start + RESYNC_READ_BATCH]
            started = self._clock.monotonic()
            try:
                jobs = await self._store.active_jobs([job_id for job_id, _ in batch])
            except TRANSIENT as exc:
                self._metrics.inc(
                    "cronsvc_store_errors_total", help="Store calls that failed", op="read_due"
                )
                log.warning("due_jobs_read_failed", count=len(unread) - start, error=str(exc))
                retry_at = self._clock.time() + READ_RETRY_S
                for job_id, entry in unread[start:]:
                    if self._entries.get(job_id) is entry and entry.seq is None:
                        self._push(job_id, entry, retry_at)
                self._wake.set()
                return
            self._read_s = 0.8 * self._read_s + 0.2 * (self._clock.monotonic() - started)
            found = {job.id: job for job in jobs}
            for job_id, entry in batch:
                if self._entries.get(job_id) is not entry or entry.seq is not None:
                    continue
                job = found.get(job_id)
                if job is None or job.version != entry.version:
                    self.notify_job_changed(job_id)
                    continue
                entry.job = job
                self._push(job_id, entry)
            self._wake.set()

    def _take_due(self, job: Job, entry: _Entry, now: datetime) -> list[DueTick]:
        """The due ticks of one job, split by its misfire policy. The work is
        bounded however long the job was overdue: ticks past their grace are
        recorded up to `max_missed_records` and the rest counted (at most
        `MAX_COUNTED` of them) and jumped over, never walked one by one."""
        plan = entry.plan
        schedule = plan.schedule
        horizon = now - timedelta(seconds=max(plan.misfire_grace_seconds, MIN_GRACE_S))
        ticks: list[datetime] = []
        tick = entry.next_tick
        while tick < horizon and len(ticks) < self._config.max_missed_records:
            ticks.append(tick)
            tick = schedule.next_after(tick)
        if tick < horizon:
            tick = self._skip_unrecorded(job.id, schedule, tick, horizon)
        # Within the grace (or, taken ahead of its instant, not yet due): what
        # the policy may fire, the latest kept.
        recent: list[datetime] = []
        while tick <= now or not (ticks or recent):
            recent.append(tick)
            tick = schedule.next_after(tick)
            if len(recent) > MAX_COUNTED:
                break
        if tick <= now:
            tick = self._skip_unrecorded(job.id, schedule, tick, now + timedelta(milliseconds=1))
        entry.next_tick = tick
        keep = self._config.max_missed_records + self._config.max_catchup
        if len(recent) > keep:
            self._metrics.inc(
                "cronsvc_ticks_missed_unrecorded_total",
                len(recent) - keep,
                help="Missed ticks beyond max_missed_records (a lower bound when counting stopped)",
            )
        ticks += recent[-keep:]
        split = plan_due_ticks(
            ticks,
            now=now,
            started_at=self._resumed.pop(job.id, self._started_at),
            policy=plan.misfire_policy,
            grace_s=plan.misfire_grace_seconds,
            max_catchup=self._config.max_catchup,
        )
        if split.missed:
            task = asyncio.create_task(self._record_missed(job, split.missed))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return [DueTick(job, tick, trigger) for tick, trigger in split.fire]

    def _skip_unrecorded(
        self, job_id: str, schedule: CronSchedule, tick: datetime, until: datetime
    ) -> datetime:
        """Count the ticks from `tick` to before `until` (at most MAX_COUNTED),
        and return the first tick at or after `until`."""
        counted = 0
        while tick < until and counted < MAX_COUNTED:
            counted += 1
            tick = schedule.next_after(tick)
        at_least = tick < until
        self._metrics.inc(
            "cronsvc_ticks_missed_unrecorded_total",
            counted,
            help="Missed ticks beyond max_missed_records (a lower bound when counting stopped)",
        )
        log.warning("missed_ticks_unrecorded", job_id=job_id, count=counted, at_least=at_least)
        if at_least:
            tick = schedule.next_after(until - timedelta(milliseconds=1))
        return tick

    async def _record_missed(self, job: Job, ticks: list[datetime]) -> None:
        spec = job.spec
        grace = max(spec.misfire_grace_seconds, MIN_GRACE_S)
        reason = (
            "overdue when the scheduler reached it and not fired "
            f"(misfirePolicy {spec.misfire_policy.value}, misfireGraceSeconds {grace:g})"
        )
        try:
            count = await self._store.record_missed(
                job, ticks, instance_id=self._instance_id, now=self._clock.now(), reason=reason
            )
        except TRANSIENT as exc:
            # Taken again, from the first of them, once the store answers.
            self._health.report(Dependency.STORE, type(exc).__name__)
            self.hold([DueTick(job, ticks[0], Trigger.SCHEDULE)])
            self._metrics.inc(
                "cronsvc_store_errors_total", help="Store calls that failed", op="record_missed"
            )
            log.warning(
                "missed_ticks_held", job_id=job.id, count=len(ticks), error=str(exc) or None
            )
            return
        if not count:  # every tick had a record already (another instance wrote them)
            return
        self._metrics.inc(
            "cronsvc_executions_total", count, help="Executions by outcome", status="MISSED"
        )
        log.warning(
            "ticks_missed",
            job_id=job.id,
            count=count,
            first=rfc3339(ticks[0]),
            last=rfc3339(ticks[-1]),
        )

    def _compact(self) -> None:
        self._heap = [
            item
            for item in self._heap
            if (e := self._entries.get(item[2])) is not None and e.seq == item[1]
        ]
        heapq.heapify(self._heap)
