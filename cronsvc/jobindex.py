"""The scheduler's job index: every active job's plan and next tick on a heap,
and what is due at an instant. Pure bookkeeping, no I/O: time comes in as
arguments and decisions go out as values (`Taken`); the caller reads the store,
logs and hands ticks on.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from cronsvc.cron import CronSchedule, parse_schedule
from cronsvc.domain import ConcurrencyPolicy, Job, MisfirePolicy, Trigger
from cronsvc.errors import CronSvcError
from cronsvc.misfire import MIN_GRACE_S, plan_due_ticks
from cronsvc.ticks import DueTick

if TYPE_CHECKING:
    from cronsvc.store import ActiveSchedule

KEEP_WHOLE_S = 300.0
"""A job whose next tick is further off holds only its schedule and policies,
and is read whole again ahead of that tick: a million daily jobs cost a few
hundred bytes each, and the every-minute ones are not read again per tick."""

MAX_COUNTED = 1000
"""Unrecorded missed ticks counted one by one, then jumped over: a week-long
outage of an every-second job must not stall the loop."""

CACHED_PLANS = 65_536  # distinct (schedule, policies), as `cron` keeps parsed schedules

_CLAIMED_AT_THE_TICK = frozenset({ConcurrencyPolicy.FORBID, ConcurrencyPolicy.REPLACE})


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """Made once per schedule and policies and shared by jobs alike, so
    compared and hashed by identity, which is quick."""

    schedule: CronSchedule
    misfire_policy: MisfirePolicy
    misfire_grace_seconds: int
    claimed_at_the_tick: bool


PlanKey = tuple[str, str, ConcurrencyPolicy, MisfirePolicy, int]


def plan_key(job: Job) -> PlanKey:
    spec = job.spec
    return (
        spec.cron_expression,
        spec.timezone,
        spec.concurrency_policy,
        spec.misfire_policy,
        spec.misfire_grace_seconds,
    )


@dataclass(slots=True, kw_only=True)
class PlanCache:
    min_interval_s: float
    # Bulk loads look here first: no call per job.
    known: dict[PlanKey, Plan] = field(default_factory=dict, init=False)

    def plan(self, key: PlanKey) -> Plan:
        """Raises `CronSvcError` for a schedule the current settings refuse."""
        plan = self.known.get(key)
        if plan is None:
            expression, zone, concurrency, misfire, grace = key
            schedule = parse_schedule(expression, zone, min_interval_s=self.min_interval_s)
            if len(self.known) >= CACHED_PLANS:
                self.known.clear()  # entries keep theirs; jobs alike share anew
            plan = self.known[key] = Plan(
                schedule=schedule,
                misfire_policy=misfire,
                misfire_grace_seconds=grace,
                claimed_at_the_tick=concurrency in _CLAIMED_AT_THE_TICK,
            )
        return plan


@dataclass(slots=True)
class Entry:
    plan: Plan
    version: int
    next_tick: datetime
    job: Job | None  # None while slim (see `KEEP_WHOLE_S`)
    seq: int | None = None  # None while off the heap (being read, or held)
    synced: int = 0  # the store read (first sync or resync) that last saw this job


@dataclass(frozen=True, slots=True, kw_only=True)
class Unrecorded:
    job_id: str
    count: int
    at_least: bool  # counting stopped at `MAX_COUNTED`: there were more
    jumped: bool
    """Ticks past `max_missed_records` jumped over (True), or ticks within
    the grace beyond those a catch-up keeps (False)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Taken:
    batches: list[list[DueTick]]
    missed: list[tuple[Job, list[datetime]]]
    unread: list[tuple[str, Entry]]
    """Slim entries falling due: read their whole jobs, then `put_back`."""
    unrecorded: list[Unrecorded]


def due_ticks(
    job: Job,
    entry: Entry,
    now: datetime,
    started_at: datetime,
    max_missed: int,
    max_catchup: int,
    missed: list[tuple[Job, list[datetime]]],
    unrecorded: list[Unrecorded],
) -> list[tuple[datetime, Trigger]]:
    """The ticks to fire; those to record MISSED go to `missed`, those left
    without a record to `unrecorded`. The entry moves on past `now`. Ticks due
    before `started_at` count as after a restart then."""
    plan = entry.plan
    schedule = plan.schedule
    horizon = now - timedelta(seconds=max(plan.misfire_grace_seconds, MIN_GRACE_S))
    ticks: list[datetime] = []
    tick = entry.next_tick
    while tick < horizon and len(ticks) < max_missed:
        ticks.append(tick)
        tick = schedule.next_after(tick)
    if tick < horizon:
        tick = _skip_unrecorded(job.id, schedule, tick, horizon, unrecorded)
    # Within the grace (or, taken ahead of its instant, not yet due): what
    # the policy may fire, the latest kept.
    recent: list[datetime] = []
    while tick <= now or not (ticks or recent):
        recent.append(tick)
        tick = schedule.next_after(tick)
        if len(recent) > MAX_COUNTED:
            break
    if tick <= now:
        tick = _skip_unrecorded(job.id, schedule, tick, now + timedelta(milliseconds=1), unrecorded)
    entry.next_tick = tick
    keep = max_missed + max_catchup
    if len(recent) > keep:
        unrecorded.append(
            Unrecorded(job_id=job.id, count=len(recent) - keep, at_least=False, jumped=False)
        )
    ticks += recent[-keep:]
    split = plan_due_ticks(
        ticks,
        now=now,
        started_at=started_at,
        policy=plan.misfire_policy,
        grace_s=plan.misfire_grace_seconds,
        max_catchup=max_catchup,
    )
    if split.missed:
        missed.append((job, split.missed))
    return split.fire


def _skip_unrecorded(
    job_id: str,
    schedule: CronSchedule,
    tick: datetime,
    until: datetime,
    unrecorded: list[Unrecorded],
) -> datetime:
    """The first tick at or after `until`, those before it counted."""
    counted = 0
    while tick < until and counted < MAX_COUNTED:
        counted += 1
        tick = schedule.next_after(tick)
    at_least = tick < until
    unrecorded.append(Unrecorded(job_id=job_id, count=counted, at_least=at_least, jumped=True))
    if at_least:
        tick = schedule.next_after(until - timedelta(milliseconds=1))
    return tick


class JobHeap:
    """An item `(wake, seq, job_id)` whose seq is not its entry's is stale:
    skipped when popped and dropped by compaction."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count(1)
        self.held: set[str] = set()
        self._resumed: dict[str, datetime] = {}
        """Held jobs put back on the heap, and when: their ticks due before
        then are judged as after a restart at that instant."""

    def next_wake(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def drop(self, job_id: str) -> None:
        self.entries.pop(job_id, None)  # its heap items turn stale
        if self._resumed:
            self._resumed.pop(job_id, None)

    def push(
        self,
        job_id: str,
        entry: Entry,
        *,
        claim_lead: float,
        read_lead: float,
        wake: float | None = None,
    ) -> None:
        """Ahead of the tick by the claim lead, so the claim is written before
        it, except for `forbid` and `replace` jobs, whose claim must see whether
        the last run ended; a slim job earlier still, to be read whole first."""
        if wake is None:
            wake = entry.next_tick.timestamp()
            if not entry.plan.claimed_at_the_tick:
                wake -= claim_lead
            if entry.job is None:
                wake -= read_lead
        entry.seq = seq = next(self._seq)
        heapq.heappush(self.heap, (wake, seq, job_id))

    def put_back(self, job_id: str, entry: Entry, job: Job | None, *, claim_lead: float) -> bool:
        """`job` is the slim entry's whole record, None if no longer active; an
        entry replaced meanwhile is left alone. False if the job is to be
        reloaded instead (gone, paused or at another version)."""
        if self.entries.get(job_id) is not entry or entry.seq is not None:
            return True
        if job is None or job.version != entry.version:
            return False
        entry.job = job
        self.push(job_id, entry, claim_lead=claim_lead, read_lead=0.0)
        return True

    def requeue(self, unread: Iterable[tuple[str, Entry]], wake: float) -> None:
        """Slim entries whose read failed, to be handed out again at `wake`."""
        for job_id, entry in unread:
            if self.entries.get(job_id) is entry and entry.seq is None:
                self.push(job_id, entry, claim_lead=0.0, read_lead=0.0, wake=wake)

    def hold(self, due: Iterable[DueTick]) -> None:
        """Ticks the store did not take: their jobs go back to the earliest of
        them, off the heap until `resume_held`. A job changed since is left
        alone (it is reloaded from the store's last tick)."""
        for d in due:
            entry = self.entries.get(d.job.id)
            if entry is None or entry.version != d.job.version:
                continue
            if d.tick < entry.next_tick:
                entry.next_tick = d.tick
            entry.seq = None  # its heap items turn stale
            self.held.add(d.job.id)

    def hold_due(self, now_ts: float) -> None:
        """While the store is down, jobs falling due wait off the heap: their
        claims would only be handed back."""
        heap, entries = self.heap, self.entries
        while heap and heap[0][0] <= now_ts:
            _, seq, job_id = heapq.heappop(heap)
            entry = entries.get(job_id)
            if entry is not None and entry.seq == seq:
                entry.seq = None
                self.held.add(job_id)

    def resume_held(self, now: datetime, *, claim_lead: float, read_lead: float) -> int:
        """Overdue ticks of the jobs put back are judged as after a restart at
        `now`. Returns how many were put back."""
        resumed = 0
        for job_id in self.held:
            entry = self.entries.get(job_id)
            if entry is not None and entry.seq is None:
                self._resumed[job_id] = now
                self.push(job_id, entry, claim_lead=claim_lead, read_lead=read_lead)
                resumed += 1
        self.held.clear()
        return resumed

    def compact(self) -> None:
        entries = self.entries
        self.heap = [
            item
            for item in self.heap
            if (e := entries.get(item[2])) is not None and e.seq == item[1]
        ]
        heapq.heapify(self.heap)


class JobIndex(JobHeap):
    """What goes on the heap and what comes off it due; `JobHeap` is
    inherited so the tick path reaches the heap without a call in between."""

    def __init__(
        self,
        *,
        min_interval_s: float,
        max_missed_records: int,
        max_catchup: int,
        started_at: datetime,
    ) -> None:
        super().__init__()
        self._max_missed_records = max_missed_records
        self._max_catchup = max_catchup
        self._started_at = started_at
        self._plans = PlanCache(min_interval_s=min_interval_s)

    def load(
        self, job: Job, *, now_ts: float, claim_lead: float, read_lead: float, sync: int = 0
    ) -> None:
        """Raises `CronSvcError` (the job then dropped) if it cannot be scheduled."""
        try:
            plan = self._plans.plan(plan_key(job))
        except CronSvcError:
            self.drop(job.id)
            raise
        next_tick = plan.schedule.next_after(job.last_tick)
        near = next_tick.timestamp() - now_ts <= KEEP_WHOLE_S
        entry = Entry(plan, job.version, next_tick, job if near else None, synced=sync)
        self.entries[job.id] = entry
        self.push(job.id, entry, claim_lead=claim_lead, read_lead=read_lead)

    def add_slim(
        self,
        rows: Sequence[ActiveSchedule],
        *,
        sync: int,
        touched: set[str],
        known: dict[tuple[Plan, datetime], tuple[datetime, float]],
        claim_lead: float,
        read_lead: float,
        refused: list[tuple[str, CronSvcError]],
    ) -> int:
        """Jobs alike whose last ticks are equal share their next tick through
        `known` (kept across a page): one schedule computation, not one per
        job. Returns how many of the rows' jobs are on the heap."""
        entries, heap, seqs = self.entries, self.heap, self._seq
        plans, make_plan = self._plans.known, self._plans.plan
        seen = 0
        for row in rows:
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
                    plan = plans.get(key) or make_plan(key)
                except CronSvcError as exc:
                    self.drop(job_id)
                    refused.append((job_id, exc))
                    continue
                next_tick, wake = known.get((plan, row.last_tick)) or (None, 0.0)
                if next_tick is None:
                    next_tick = plan.schedule.next_after(row.last_tick)
                    wake = next_tick.timestamp() - read_lead
                    if not plan.claimed_at_the_tick:
                        wake -= claim_lead
                    known[plan, row.last_tick] = (next_tick, wake)
                seq = next(seqs)
                entries[job_id] = Entry(plan, row.version, next_tick, None, seq, sync)
                heapq.heappush(heap, (wake, seq, job_id))
                seen += 1
        return seen

    def compare(
        self, versions: dict[str, int], *, sync: int, touched: set[str]
    ) -> tuple[int, list[str]]:
        """How many of the page's jobs the heap holds at that version or newer,
        and those to read whole (except those notices `touched`)."""
        entries = self.entries
        seen = 0
        stale: list[str] = []
        for job_id, version in versions.items():
            entry = entries.get(job_id)
            if entry is not None and entry.version >= version:
                entry.synced = sync
                seen += 1
            elif job_id not in touched:
                stale.append(job_id)
        return seen, stale

    def fresher(self, job: Job) -> bool:
        entry = self.entries.get(job.id)
        return entry is None or entry.version < job.version

    def drop_unseen(
        self, job_ids: Iterable[str], *, sync: int, changed: set[str], touched: set[str]
    ) -> None:
        """Those `sync` did not see were deleted or paused without a notice,
        unless a notice waiting (`changed`) or applied (`touched`) says more."""
        entries, spared = self.entries, changed | touched
        for job_id in job_ids:
            entry = entries.get(job_id)
            if entry is not None and entry.synced != sync and job_id not in spared:
                self.drop(job_id)

    def take_due(
        self,
        now_ts: float,
        *,
        claim_lead: float,
        read_lead: float,
        batch_size: int,
        ahead_batch_size: int,
    ) -> Taken:
        """Each batch holds ticks of one instant: at most `batch_size` due now,
        or `ahead_batch_size` taken ahead of it."""
        now = datetime.fromtimestamp(now_ts, UTC)
        heap, entries, resumed = self.heap, self.entries, self._resumed
        started_at = self._started_at
        max_missed, max_catchup = self._max_missed_records, self._max_catchup
        by_tick: dict[datetime, list[DueTick]] = {}
        batches: list[list[DueTick]] = []
        missed: list[tuple[Job, list[datetime]]] = []
        unread: list[tuple[str, Entry]] = []
        unrecorded: list[Unrecorded] = []
        while heap and heap[0][0] <= now_ts:
            _, seq, job_id = heapq.heappop(heap)
            entry = entries.get(job_id)
            if entry is None or entry.seq != seq:
                continue
            job = entry.job
            if job is None:
                entry.seq = None  # back on the heap once read
                unread.append((job_id, entry))
                continue
            fire = due_ticks(
                job,
                entry,
                now,
                resumed.pop(job_id, started_at) if resumed else started_at,
                max_missed,
                max_catchup,
                missed,
                unrecorded,
            )
            for tick, trigger in fire:
                batch = by_tick.setdefault(tick, [])
                batch.append(DueTick(job, tick, trigger))
                if len(batch) >= (batch_size if tick <= now else ahead_batch_size):
                    batches.append(batch)
                    by_tick[tick] = []
            if entry.next_tick.timestamp() - now_ts > KEEP_WHOLE_S:
                entry.job = None
            self.push(job_id, entry, claim_lead=claim_lead, read_lead=read_lead)
        batches.extend(batch for batch in by_tick.values() if batch)
        if len(heap) > 2 * len(entries) + 1024:
            self.compact()
        return Taken(batches=batches, missed=missed, unread=unread, unrecorded=unrecorded)
