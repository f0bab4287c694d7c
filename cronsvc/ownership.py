"""Which instance owns a job: rendezvous (highest-random-weight) hashing of the
job id over the live instances, pure. Every instance that sees the same members
names the same owner, and a change of members moves only the jobs that must
move: those a newcomer wins, or those a leaver held (about 1/N of them each).
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b


def _seed(instance_id: str) -> bytes:
    # blake2b takes keys of at most 64 bytes; an instance id may be longer.
    return blake2b(instance_id.encode(), digest_size=32).digest()


class Ownership:
    """The members as one instance sees them; it counts itself a member even
    when its announcement is missing, so its jobs are never left without one."""

    __slots__ = ("_seeds", "me", "members")

    def __init__(self, me: str, instances: Iterable[str]) -> None:
        self.me = me
        self.members = tuple(sorted({me, *instances}))
        self._seeds = [(_seed(member), member) for member in self.members]

    def owner(self, job_id: str) -> str:
        data = job_id.encode()
        # Equal weights (never seen in practice) go to the larger id, the same on
        # every instance.
        _, owner = max(
            (blake2b(data, digest_size=8, key=seed).digest(), member)
            for seed, member in self._seeds
        )
        return owner

    def owns(self, job_id: str) -> bool:
        return len(self._seeds) == 1 or self.owner(job_id) == self.me
