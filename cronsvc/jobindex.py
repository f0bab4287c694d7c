"""The scheduler's job index: every active job's next tick and what is due at
an instant. Pure bookkeeping, no I/O: time comes in as arguments and decisions
go out as values (`Taken`); the caller reads the store, logs and hands ticks on.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cronsvc.domain import Job
from cronsvc.dueticks import MAX_COUNTED, Unrecorded, due_ticks
from cronsvc.errors import CronSvcError
from cronsvc.jobheap import Entry, JobHeap
from cronsvc.plans import Plan, PlanCache, plan_key
from cronsvc.ticks import DueTick

if TYPE_CHECKING:
    from cronsvc.store import ActiveSchedule

__all__ = ["KEEP_WHOLE_S", "MAX_COUNTED", "Entry", "JobIndex", "Plan", "Taken", "Unrecorded"]

KEEP_WHOLE_S = 300.0
"""A job whose next tick is further off holds only its schedule and policies,
and is read whole again ahead of that tick: a million daily jobs cost a few
hundred bytes each, and the every-minute ones are not read again per tick."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Taken:
    batches: list[list[DueTick]]
    missed: list[tuple[Job, list[datetime]]]
    unread: list[tuple[str, Entry]]
    """Slim entries falling due: read their whole jobs, then `put_back`."""
    unrecorded: list[Unrecorded]


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
