"""The coordinator: what instances agree on outside the store.

Every backend implements `Coordinator`; `open_coordinator(url)` picks one by
URL scheme. `local` serves exactly one process; cluster backends share state.

- Tick leases: the first caller of `try_lease_ticks` for a (job, tick) wins;
  leases are never released after a fire, only expire, so a slow instance
  cannot fire a tick another already fired. The store's tick claim is the
  final fence; a lease saves the store most of the contention.
- Job-change notices: `publish_job_change` reaches every subscriber on every
  instance (including the publisher) at most once; delivery is best effort,
  which is why the scheduler also resyncs from the store.
- Leadership: `try_lead` acquires or renews a lease and returns a fencing
  token that only grows, or None when another instance leads.
- Heartbeats: `heartbeat` announces this instance for `ttl_s`;
  `live_instances` lists those whose announcement has not expired.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from cronsvc.domain import InstanceInfo
from cronsvc.errors import ConfigError

JobChangeCallback = Callable[[str], None]


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

    async def try_lead(self, instance_id: str, ttl_s: float) -> int | None: ...

    async def resign(self, instance_id: str) -> None: ...

    async def heartbeat(self, info: InstanceInfo, ttl_s: float) -> None: ...

    async def forget_instance(self, instance_id: str) -> None: ...

    async def live_instances(self) -> list[InstanceInfo]: ...

    async def ping(self) -> None:
        """Raise `ConnectionError` unless the coordinator is reachable."""
        ...


def open_coordinator(url: str, *, lock_path: Path | None) -> Coordinator:
    """Make the coordinator `url` names. `lock_path` is the file the `local`
    coordinator locks so a second process on the same data refuses to start."""
    if url == "local":
        from cronsvc.coord.local import LocalCoordinator

        return LocalCoordinator(lock_path=lock_path)
    raise ConfigError(
        f"coordination.url: unsupported value {url.split('://', 1)[0]!r}; use 'local'"
    )
