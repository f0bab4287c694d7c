"""The live instances as this instance last heard them, and which of them a
job's ticks go to first when nothing else decides.

While the coordinator answers, a tick's lease decides which instance claims
it. While it does not, every instance goes on to the store's claim for every
tick and the store's unique claim decides. The batch an outage catches has
spent its lead waiting for its leases, and its claims, sent by every
instance at once, would queue behind each other in the store (three
instances make three times the claims): it goes out late. So for that batch
each instance first claims the ticks whose jobs prefer it, by rendezvous
(highest random weight) hashing of the job id over the live instances, and
the others only after the tick, where they win only what a preferred
instance did not claim (it died, or is held up). The view is the one read at
the last heartbeat: it is not refreshed while the coordinator is down, and a
stale one costs lateness, never a tick.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")


def weight(instance_id: str, job_id: str) -> int:
    """The rendezvous weight of one instance for one job: stable across
    processes and restarts (not Python's salted `hash`)."""
    digest = hashlib.blake2b(f"{instance_id}\0{job_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def preferred(job_id: str, instances: Iterable[str]) -> str | None:
    """The instance a job prefers among `instances` (None for none). Adding
    or removing one instance moves only the jobs that preferred it or now
    prefer it."""
    return max(instances, key=lambda instance: weight(instance, job_id), default=None)


class Membership:
    """The ids of the live instances, as read at the last heartbeat."""

    def __init__(self, instance_id: str) -> None:
        self._instance_id = instance_id
        self._live: tuple[str, ...] = ()

    @property
    def live(self) -> tuple[str, ...]:
        return self._live

    def update(self, live: Iterable[str]) -> None:
        self._live = tuple(sorted(set(live)))

    def split(self, items: Sequence[T], job_id: Callable[[T], str]) -> tuple[list[T], list[T]]:
        """`items` in two: those whose jobs prefer this instance, and the
        others. All are this instance's while it is not among the live
        instances it knows (no view yet, or the coordinator lost its state):
        no job waits on a preference nobody may hold."""
        if self._instance_id not in self._live or len(self._live) == 1:
            return list(items), []
        mine: list[T] = []
        others: list[T] = []
        for item in items:
            if preferred(job_id(item), self._live) == self._instance_id:
                mine.append(item)
            else:
                others.append(item)
        return mine, others
