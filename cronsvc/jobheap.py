"""The job index's heap of `(wake, seq, job_id)` items, and the jobs held off
it while the store does not answer. An item whose seq is not its entry's is
stale: skipped when popped and dropped by compaction.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cronsvc.domain import Job
from cronsvc.plans import Plan
from cronsvc.ticks import DueTick


@dataclass(slots=True)
class Entry:
    plan: Plan
    version: int
    next_tick: datetime
    job: Job | None  # None while slim (see `jobindex.KEEP_WHOLE_S`)
    seq: int | None = None  # None while off the heap (being read, or held)
    synced: int = 0  # the store read (first sync or resync) that last saw this job


class JobHeap:
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
