"""Which instance owns a job: rendezvous (highest-random-weight) hashing of the
job id over the live instances, pure. Every instance that sees the same members
names the same owner, and a change of members moves only the jobs that must
move: those a newcomer wins, or those a leaver held (about 1/N of them each).
`Ownership` is pure; `Membership` holds the one the last heartbeat gave.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from hashlib import blake2b

import structlog

log = structlog.get_logger(__name__)


def _weigher(instance_id: str) -> blake2b:
    """A member's keyed hash, copied for each job: a third of the cost of keying
    one anew. blake2b takes keys of at most 64 bytes; an instance id may be longer."""
    key = blake2b(instance_id.encode(), digest_size=32).digest()
    return blake2b(digest_size=8, key=key)


class Ownership:
    """The members as one instance sees them; it counts itself a member even
    when its announcement is missing, so its jobs are never left without one."""

    __slots__ = ("_weighers", "alone", "me", "members")

    def __init__(self, me: str, instances: Iterable[str]) -> None:
        self.me = me
        self.members = tuple(sorted({me, *instances}))
        self.alone = len(self.members) == 1
        self._weighers = [(_weigher(member), member) for member in self.members]

    def owner(self, job_id: str) -> str:
        data = job_id.encode()
        heaviest, owner = b"", self.me
        # Members go in ascending order: equal weights (never seen in practice)
        # go to the larger id, the same on every instance.
        for weigher, member in self._weighers:
            weighing = weigher.copy()
            weighing.update(data)
            weight = weighing.digest()
            if weight >= heaviest:
                heaviest, owner = weight, member
        return owner

    def owns(self, job_id: str) -> bool:
        return self.alone or self.owner(job_id) == self.me


class Membership:
    """The owners as this instance's last heartbeat saw them. Those who take no
    share yet (still loading their jobs) are left out, so jobs move to a
    newcomer only once it schedules them; until the old owner hears of it both
    hold them, and the tick leases fence the overlap. The exception is a
    cluster starting together (`Heartbeat.loading`): nobody fires yet, so each
    loads only its share, and the first to finish does not take the others'."""

    __slots__ = ("current", "listeners")

    def __init__(self, me: str) -> None:
        self.current = Ownership(me, ())
        self.listeners: list[Callable[[Ownership, Ownership], None]] = []
        """Told the owners before and after each change (jobs may move); they
        must not block."""

    def update(self, owners: Iterable[str], loading: Iterable[str] = ()) -> None:
        """`loading`: the instances whose share is kept while they load."""
        ownership = Ownership(self.current.me, {*owners, *loading})
        if ownership.members == self.current.members:
            return
        log.info("owners_changed", owners=list(ownership.members))
        before, self.current = self.current, ownership
        for listener in self.listeners:
            listener(before, ownership)
