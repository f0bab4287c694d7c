"""The coordinator: what instances agree on outside the store.

Every backend implements `Coordinator`; `open_coordinator(url)` picks one by
URL scheme. `local` serves exactly one process; cluster backends share state.

- Tick leases: the first caller of `try_lease_ticks` for a (job, tick) wins;
  leases are never released after a fire, only expire, so a slow instance
  cannot fire a tick another already fired. The store's tick claim is the
  final fence; a lease saves the store most of the contention.
- Tick leases are re-entrant per coordinator: asking again for a lease this
  instance holds answers True (the store's claim stops a repeat).
- Job-change notices: `publish_job_change` reaches every subscriber on every
  instance (including the publisher), normally once, rarely twice; delivery is
  best effort while connected, which is why the scheduler also resyncs from
  the store. After a reconnect a coordinator calls every subscriber with
  `RESYNC`: anything may have changed.
- Cancel notices: `publish_cancel` asks whichever instance runs these
  executions to abort their webhook requests (a `replace` claim ended them in
  the store). Same delivery as job-change notices: every subscriber on every
  instance (the publisher included), normally once, rarely twice, best effort
  while connected. There is nothing to resync after a reconnect: a notice
  lost in an outage leaves the old request to run to its end, and its result
  is ignored, since the store already holds the execution's final record.
- Leadership: `try_lead` acquires or renews a lease and returns a fencing
  token that only grows, or None when another instance leads.
- Heartbeats: `heartbeat` announces this instance for `ttl_s` and says
  whether its previous announcement was still in force; `live_instances`
  lists those whose announcement has not expired. A coordinator that lost its
  state (a Redis restart without persistence, FLUSHALL) has lost every
  instance's announcement at once, and each comes back only with that
  instance's next heartbeat: the instance that finds its own missing knows
  that the list is incomplete for a while.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from cronsvc.domain import InstanceInfo
from cronsvc.urls import CoordinationBackend, coordination_backend

JobChangeCallback = Callable[[str], None]
CancelCallback = Callable[[Sequence[str]], None]

RESYNC = "*"
"""The job id of a notice that means "anything may have changed": resync all."""


class Coordinator(Protocol):
    async def start(self) -> None:
        """Connect and take what the backend needs (the `local` process lock).
        Raises `StartupRefused` when this process must not run."""
        ...

    async def aclose(self) -> None: ...

    async def try_lease_ticks(
        self, ticks: Sequence[tuple[str, datetime]], ttl_s: float
    ) -> list[bool]:
        """For each (job id, tick), True if this instance won its lease. Ticks
        due together are leased in one round trip."""
        ...

    async def publish_job_change(self, job_id: str) -> None: ...

    def subscribe_job_changes(self, callback: JobChangeCallback) -> None:
        """Call `callback(job_id)` (synchronously, on the event loop) for each
        notice. Callbacks must not block."""
        ...

    async def publish_cancel(self, execution_ids: Sequence[str]) -> None:
        """Ask every instance to cancel the runs of these executions (one
        notice for all of them). Raises `CoordinatorUnavailable` when it
        cannot be sent to other instances; subscribers of this instance have
        been called by then all the same."""
        ...

    def subscribe_cancels(self, callback: CancelCallback) -> None:
        """Call `callback(execution_ids)` (synchronously, on the event loop)
        for each cancel notice, with its ids in the order published.
        Callbacks must not block."""
        ...

    async def try_lead(self, instance_id: str, ttl_s: float) -> int | None:
        """Acquire the leader lease, or renew it if `instance_id` holds it,
        for `ttl_s`. Returns the fencing token (the same while the lease is
        held; a larger one each time it changes hands), or None when another
        instance holds it. A renewal that finds the lease lost returns None."""
        ...

    async def resign(self, instance_id: str) -> None:
        """Give the lease up, if `instance_id` holds it."""
        ...

    async def current_leader(self) -> str | None:
        """The instance holding the leader lease, if any."""
        ...

    async def heartbeat(self, info: InstanceInfo, ttl_s: float) -> bool:
        """Announce `info` as alive for `ttl_s`. True when this renewed an
        earlier announcement of the same instance that was still in force;
        False when there was none: the instance's first heartbeat, one after
        its announcement expired or was forgotten, one after the coordinator
        lost its state. When unsure (a retried call whose first attempt may
        have landed) it answers False: a caller only waits longer for it."""
        ...

    async def forget_instance(self, instance_id: str) -> None:
        """Remove an instance's announcement at once (clean shutdown)."""
        ...

    async def live_instances(self) -> list[InstanceInfo]:
        """Every instance whose announcement has not expired."""
        ...

    async def ping(self) -> None:
        """Raise `ConnectionError` unless the coordinator is reachable."""
        ...

    @property
    def round_trips(self) -> int:
        """Network exchanges with the coordinator since start (a pipeline is
        one); 0 for one that lives in the process."""
        ...


def open_coordinator(
    url: str, *, lock_path: Path | None, key_prefix: str = "cronsvc"
) -> Coordinator:
    """Make the coordinator `url` names. `lock_path` is the file the `local`
    coordinator locks so a second process on the same data refuses to start;
    `key_prefix` namespaces a shared coordinator's keys (several clusters can
    share one Redis)."""
    match coordination_backend(url):
        case CoordinationBackend.LOCAL:
            from cronsvc.coord.local import LocalCoordinator

            return LocalCoordinator(lock_path=lock_path)
        case CoordinationBackend.REDIS:
            from cronsvc.coord.redis import RedisCoordinator

            return RedisCoordinator(url, key_prefix=key_prefix)
