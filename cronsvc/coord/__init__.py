"""The coordinator: what instances agree on outside the store. `open_coordinator`
picks a backend by URL scheme; `local` serves one process, `redis` a cluster.

- Tick leases: the first caller for a (job, tick) wins; re-entrant per
  coordinator (asking again answers True). Leases only expire, never released
  after a fire, so a slow instance cannot fire a tick another already fired;
  the store's tick claim is the final fence, leases save it most contention.
- Notices (job changes, cancels) reach every subscriber on every instance, the
  publisher included, normally once, rarely twice, best effort while
  connected. After a reconnect job-change subscribers get `RESYNC`; a lost
  cancel only lets the old request run on, its result ignored (the store holds
  the final record already).
- Leadership: a lease with a fencing token that only grows.
- Heartbeats: a coordinator that lost its state (a Redis restart without
  persistence, FLUSHALL) has lost every announcement at once; each comes back
  with its instance's next heartbeat, so the instance that finds its own
  missing knows `live_instances` is incomplete for a while.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from cronsvc.domain import InstanceInfo
from cronsvc.urls import CoordinationBackend, coordination_backend

JobChangeCallback = Callable[[str], None]
CancelCallback = Callable[[Sequence[str]], None]

RESYNC = "*"  # the job id of a notice that means "anything may have changed"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    renewed: bool
    """True when an earlier announcement was still in force. When unsure (a
    retry whose first attempt may have landed), False: a caller only waits
    longer for it."""
    owners: frozenset[str]
    """The instances whose unexpired announcements say they schedule their
    share of the jobs (`InstanceInfo.jobs_owned` is not None), as of this call."""
    loading: frozenset[str] = frozenset()
    """The instances loading their jobs whose share is kept for them: those
    that announced `InstanceInfo.loading` first while no instance was an
    owner (the cluster starting together), for as long as they announce it.
    A newcomer to a cluster that schedules is not among them: it takes its
    share only once it can fire it."""


class Coordinator(Protocol):
    async def start(self) -> None:
        """Raises `StartupRefused` when this process must not run."""
        ...

    async def aclose(self) -> None: ...

    async def try_lease_ticks(
        self, ticks: Sequence[tuple[str, datetime]], ttl_s: float
    ) -> list[bool]:
        """For each (job id, tick), whether this instance won it; one round trip."""
        ...

    async def publish_job_change(self, job_id: str) -> None: ...

    def subscribe_job_changes(self, callback: JobChangeCallback) -> None:
        """Callbacks run synchronously on the event loop and must not block."""
        ...

    async def publish_cancel(self, execution_ids: Sequence[str]) -> None:
        """One notice for all the ids. Raises `CoordinatorUnavailable` when it cannot
        reach other instances; this instance's subscribers were called already."""
        ...

    def subscribe_cancels(self, callback: CancelCallback) -> None:
        """The ids come in the order published. Callbacks must not block."""
        ...

    async def try_lead(self, instance_id: str, ttl_s: float) -> int | None:
        """Acquire or renew the leader lease: its fencing token (the same while held,
        larger each time it changes hands), or None when another instance holds
        it or a renewal finds it lost."""
        ...

    async def resign(self, instance_id: str) -> None:
        """Give the lease up, if `instance_id` holds it."""
        ...

    async def current_leader(self) -> str | None: ...

    async def heartbeat(self, info: InstanceInfo, ttl_s: float) -> Heartbeat:
        """Announce `info` for `ttl_s`; one round trip, the owners included."""
        ...

    async def forget_instance(self, instance_id: str) -> None:
        """At once (clean shutdown)."""
        ...

    async def live_instances(self) -> list[InstanceInfo]: ...

    async def ping(self) -> None:
        """Raises `ConnectionError` unless the coordinator is reachable."""
        ...

    @property
    def round_trips(self) -> int:
        """Network exchanges since start (a pipeline is one); 0 in-process."""
        ...

    @property
    def answered(self) -> int:
        """Exchanges answered since start (the health probe skips a coordinator
        that answers); 0 in-process, where the probe costs nothing."""
        ...


def open_coordinator(
    url: str, *, lock_path: Path | None, key_prefix: str = "cronsvc"
) -> Coordinator:
    """`lock_path`: the file `local` locks so a second process on the same data
    refuses to start; `key_prefix` lets several clusters share one Redis."""
    match coordination_backend(url):
        case CoordinationBackend.LOCAL:
            from cronsvc.coord.local import LocalCoordinator

            return LocalCoordinator(lock_path=lock_path)
        case CoordinationBackend.REDIS:
            from cronsvc.coord.redis import RedisCoordinator

            return RedisCoordinator(url, key_prefix=key_prefix)
