"""The scheduler's job index: every active job's next tick, on a min-heap
keyed by when to take it, and what is due at a given instant.

Pure bookkeeping, no I/O: time comes in as arguments (the instant, the claim
lead, the read lead) and decisions go out as values (`Taken`); the caller
reads the store, logs, counts and hands ticks on (`cronsvc.jobsync`,
`cronsvc.scheduler`).

A job's entry is whole (`Entry.job` set) while its next tick is within
`KEEP_WHOLE_S`, else slim (schedule and policies only, `Plan`). A slim entry
falling due is handed out to be read (`Taken.unread`) and stays off the heap
(`seq` None) until `put_back`. Heap items are `(wake, seq, job_id)` tuples;
an item whose seq is not its entry's is stale, skipped when popped and
dropped by compaction.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from cronsvc.cron import CronSchedule, parse_schedule
from cronsvc.domain import ConcurrencyPolicy, Job, MisfirePolicy, Trigger
from cronsvc.errors import CronSvcError
from cronsvc.misfire import MIN_GRACE_S, plan_due_ticks
from cronsvc.ticks import DueTick

if TYPE_CHECKING:
    from cronsvc.store import ActiveSchedule

MAX_COUNTED = 1000
"""Unrecorded missed ticks are counted one by one up to this many, then
jumped over: a week-long outage of an every-second job must not stall the loop."""

KEEP_WHOLE_S = 300.0
"""A job whose next tick is at most this far off keeps its whole record on
the heap; others let it go and have it read again ahead of their next tick."""

CACHED_PLANS = 65_536
"""Distinct (schedule, policies) kept for jobs to share, as `cron` keeps
parsed schedules."""

_CLAIMED_AT_THE_TICK = frozenset({ConcurrencyPolicy.FORBID, ConcurrencyPolicy.REPLACE})


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """What the loop needs to take a job's ticks, shared by all jobs alike
    (made once per kind: compared and hashed by identity, which is quick)."""

    schedule: CronSchedule
    misfire_policy: MisfirePolicy
    misfire_grace_seconds: int
    claimed_at_the_tick: bool
    """`forbid` and `replace` jobs are claimed at the tick, not ahead of it."""


PlanKey = tuple[str, str, ConcurrencyPolicy, MisfirePolicy, int]


@dataclass(slots=True)
class Entry:
    plan: Plan
    version: int
    next_tick: datetime
    job: Job | None
    """The whole job, while held (see `KEEP_WHOLE_S`); None while slim."""
    seq: int | None = None
    """The sequence number of this entry's heap item (other items of its
    job are stale); None while it is off the heap (being read, or held)."""
    synced: int = 0
    """The store read (first sync or resync) that last saw this job."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Unrecorded:
    """Missed ticks of a job left without a record."""

    job_id: str
    count: int
    at_least: bool
    """Counting stopped at `MAX_COUNTED`: there were more."""
    jumped: bool
    """Ticks past `max_missed_records` jumped over (True), or ticks within
    the grace beyond those a catch-up keeps (False)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Taken:
    """What `JobIndex.take_due` found."""

    batches: list[list[DueTick]]
    """Ticks to hand on, batch by batch, in order."""
    missed: list[tuple[Job, list[datetime]]]
    """Ticks to record MISSED, per job."""
    unread: list[tuple[str, Entry]]
    """Slim entries falling due: read their whole jobs, then `put_back`."""
    unrecorded: list[Unrecorded]
    """Missed ticks left without a record (to count, and log those jumped)."""


def plan_key(job: Job) -> PlanKey:
    spec = job.spec
    return (
        spec.cron_expression,
        spec.timezone,
        spec.concurrency_policy,
        spec.misfire_policy,
        spec.misfire_grace_seconds,
    )


class JobIndex:
    def __init__(
        self,
        *,
        min_interval_s: float,
        max_missed_records: int,
        max_catchup: int,
        started_at: datetime,
    ) -> None:
        self._min_interval_s = min_interval_s
        self._max_missed_records = max_missed_records
        self._max_catchup = max_catchup
        self._started_at = started_at
        self.entries: dict[str, Entry] = {}
        self.heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count(1)
        self._plans: dict[PlanKey, Plan] = {}
        self.held: set[str] = set()
        """Jobs off the heap until the store answers again (see `hold`)."""
        self._resumed: dict[str, datetime] = {}
        """Held jobs put back on the heap, and when: their ticks due before
        then are judged as after a restart at that instant."""

    def next_wake(self) -> float | None:
        """When the head of the heap is to be taken (epoch seconds)."""
        return self.heap[0][0] if self.heap else None

    def plan(self, key: PlanKey) -> Plan:
        """The plan of jobs alike, made once. Raises `CronSvcError` for a
        schedule the current settings refuse."""
        plan = self._plans.get(key)
        if plan is None:
            expression, zone, concurrency, misfire, grace = key
            schedule = parse_schedule(expression, zone, min_interval_s=self._min_interval_s)
            if len(self._plans) >= CACHED_PLANS:
                self._plans.clear()  # entries keep theirs; jobs alike share anew
            plan = self._plans[key] = Plan(
                schedule=schedule,
                misfire_policy=misfire,
                misfire_grace_seconds=grace,
                claimed_at_the_tick=concurrency in _CLAIMED_AT_THE_TICK,
            )
        return plan

    def load(
        self, job: Job, *, now_ts: float, claim_lead: float, read_lead: float, sync: int = 0
    ) -> None:
        """Put a whole job on the heap, in place of any entry it had. It stays
        whole only if its next tick is near. Raises `CronSvcError` (the job
        then dropped) if it cannot be scheduled."""
        try:
            plan = self.plan(plan_key(job))
        except CronSvcError:
            self.drop(job.id)
            raise
        next_tick = plan.schedule.next_after(job.last_tick)
        near = next_tick.timestamp() - now_ts <= KEEP_WHOLE_S
        entry = Entry(plan, job.version, next_tick, job if near else None, synced=sync)
        self.entries[job.id] = entry
        self.push(job.id, entry, claim_lead=claim_lead, read_lead=read_lead)

    def drop(self, job_id: str) -> None:
        self.entries.pop(job_id, None)  # its heap items turn stale
        if self._resumed:
            self._resumed.pop(job_id, None)

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
        """Put jobs read as schedules on the heap, slim, unless the heap holds
        them at that version or newer or a notice `touched` them. Jobs alike
        whose last ticks are equal share their next tick through `known`
        (kept by the caller across a page): one schedule computation each,
        not one per job. Jobs that cannot be scheduled are dropped and added
        to `refused`. Returns how many of the rows' jobs are on the heap."""
        entries, plans, heap, seqs = self.entries, self._plans, self.heap, self._seq
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
                    plan = plans.get(key) or self.plan(key)
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
        """Mark the jobs of a page of versions the heap holds as they are (or
        newer). Returns how many those were, and the jobs to read whole: those
        the heap lacks at that version, except those notices `touched`."""
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
        """Whether `job` is newer than what the heap holds of it."""
        entry = self.entries.get(job.id)
        return entry is None or entry.version < job.version

    def drop_unseen(
        self, job_ids: Iterable[str], *, sync: int, changed: set[str], touched: set[str]
    ) -> None:
        """Drop those of `job_ids` the read `sync` did not see (deleted or
        paused without a notice), unless a notice has news of them: one
        waiting (`changed`) or one applied since the read began (`touched`)."""
        entries = self.entries
        for job_id in job_ids:
            entry = entries.get(job_id)
            if (
                entry is not None
                and entry.synced != sync
                and job_id not in changed
                and job_id not in touched
            ):
                self.drop(job_id)

    def push(
        self,
        job_id: str,
        entry: Entry,
        *,
        claim_lead: float,
        read_lead: float,
        wake: float | None = None,
    ) -> None:
        """Key the heap by when to take the tick: ahead of it by the claim
        lead, so its claim is written before the tick; at the tick itself for
        `forbid` and `replace` jobs, whose claim must see whether the last
        run ended (and, under `replace`, must not end it early). A slim job
        comes off the heap earlier still, by the read lead, to have its whole
        record read. `wake` overrides all that."""
        if wake is None:
            wake = entry.next_tick.timestamp()
            if not entry.plan.claimed_at_the_tick:
                wake -= claim_lead
            if entry.job is None:
                wake -= read_lead
        entry.seq = seq = next(self._seq)
        heapq.heappush(self.heap, (wake, seq, job_id))

    def put_back(self, job_id: str, entry: Entry, job: Job | None, *, claim_lead: float) -> bool:
        """A slim entry handed out by `take_due` was read: `job` is its whole
        record (None if the store no longer has it active). The entry goes
        back on the heap, whole, to be taken as usual; one replaced meanwhile
        is left to its replacement. False if the job is to be reloaded
        instead (gone, paused or at another version than the entry's)."""
        if self.entries.get(job_id) is not entry or entry.seq is not None:
            return True
        if job is None or job.version != entry.version:
            return False
        entry.job = job
        self.push(job_id, entry, claim_lead=claim_lead, read_lead=0.0)
        return True

    def requeue(self, unread: Iterable[tuple[str, Entry]], wake: float) -> None:
        """Slim entries whose read failed: back on the heap, to be handed out
        again at `wake` (those replaced meanwhile are left alone)."""
        for job_id, entry in unread:
            if self.entries.get(job_id) is entry and entry.seq is None:
                self.push(job_id, entry, claim_lead=0.0, read_lead=0.0, wake=wake)

    def hold(self, due: Iterable[DueTick]) -> None:
        """Ticks the store did not take: their jobs go back to the earliest of
        them and off the heap, until `resume_held`. A job changed since is
        left alone (it is reloaded from the store's last tick)."""
        for d in due:
            entry = self.entries.get(d.job.id)
            if entry is None or entry.version != d.job.version:
                continue
            if d.tick < entry.next_tick:
                entry.next_tick = d.tick
            entry.seq = None  # its heap items turn stale
            self.held.add(d.job.id)

    def hold_due(self, now_ts: float) -> None:
        """While the store is down, jobs falling due wait off the heap (their
        claims would only be handed back), each at its next tick."""
        heap, entries = self.heap, self.entries
        while heap and heap[0][0] <= now_ts:
            _, seq, job_id = heapq.heappop(heap)
            entry = entries.get(job_id)
            if entry is not None and entry.seq == seq:
                entry.seq = None
                self.held.add(job_id)

    def resume_held(self, now: datetime, *, claim_lead: float, read_lead: float) -> int:
        """The store answers again: put the held jobs back on the heap, their
        overdue ticks to be judged as after a restart at `now`. Returns how
        many were put back."""
        resumed = 0
        for job_id in self.held:
            entry = self.entries.get(job_id)
            if entry is not None and entry.seq is None:
                self._resumed[job_id] = now
                self.push(job_id, entry, claim_lead=claim_lead, read_lead=read_lead)
                resumed += 1
        self.held.clear()
        return resumed

    def take_due(
        self,
        now_ts: float,
        *,
        claim_lead: float,
        read_lead: float,
        batch_size: int,
        ahead_batch_size: int,
    ) -> Taken:
        """Take every heap item due at `now_ts`: whole jobs' ticks split by
        their misfire policy into batches (of `batch_size` ticks due now, of
        `ahead_batch_size` taken ahead of their instant; one tick per batch),
        slim jobs handed out to be read. Each job taken goes back on the heap
        at its next tick."""
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
            fire = _take(
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

    def compact(self) -> None:
        """Drop the stale items from the heap."""
        entries = self.entries
        self.heap = [
            item
            for item in self.heap
            if (e := entries.get(item[2])) is not None and e.seq == item[1]
        ]
        heapq.heapify(self.heap)


def _take(
    job: Job,
    entry: Entry,
    now: datetime,
    started_at: datetime,
    max_missed: int,
    max_catchup: int,
    missed: list[tuple[Job, list[datetime]]],
    unrecorded: list[Unrecorded],
) -> list[tuple[datetime, Trigger]]:
    """The due ticks of one job to fire, split by its misfire policy (the
    ticks to record MISSED go to `missed`); the entry moves on to its next
    tick. The work is bounded however
    long the job was overdue: ticks past their grace are recorded up to
    `max_missed_records` and the rest counted (at most `MAX_COUNTED` of
    them) and jumped over, never walked one by one."""
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
    """Count the ticks from `tick` to before `until` (at most MAX_COUNTED),
    and return the first tick at or after `until`."""
    counted = 0
    while tick < until and counted < MAX_COUNTED:
        counted += 1
        tick = schedule.next_after(tick)
    at_least = tick < until
    unrecorded.append(Unrecorded(job_id=job_id, count=counted, at_least=at_least, jumped=True))
    if at_least:
        tick = schedule.next_after(until - timedelta(milliseconds=1))
    return tick
