"""In-process coordination for a single cronsvc process."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import IO

from cronsvc.coord import CancelCallback, Heartbeat, JobChangeCallback
from cronsvc.domain import InstanceInfo
from cronsvc.errors import StartupRefused

_MAX_LEASES = 100_000


class LocalCoordinator:
    """Leases and notices live in this process; leadership is always ours.

    `start` takes an exclusive, non-blocking `flock` on `lock_path`: a second
    process pointed at the same data would fire every tick again, so it is
    refused instead. The kernel drops the lock when the process dies.
    """

    def __init__(self, *, lock_path: Path | None) -> None:
        self._lock_path = lock_path
        self._lock_file: IO[str] | None = None
        self._callbacks: list[JobChangeCallback] = []
        self._cancel_callbacks: list[CancelCallback] = []
        self._leases: dict[tuple[str, datetime], None] = {}
        self._instances: dict[str, InstanceInfo] = {}
        self._loading: set[str] = set()  # `Heartbeat.loading`
        self._token = 0
        self._leader: str | None = None

    async def start(self) -> None:
        if self._lock_path is not None:
            self._lock_file = self._take_lock(self._lock_path)

    @staticmethod
    def _take_lock(path: Path) -> IO[str]:
        handle = open(path, "a+")  # noqa: SIM115 - held for the process lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StartupRefused(
                f"{path} is locked by {holder}: with coordination.url = 'local' "
                "only one process may use this database; stop the other one first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        return handle

    async def aclose(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    async def try_lease_ticks(
        self, ticks: Sequence[tuple[str, datetime]], ttl_s: float
    ) -> list[bool]:
        # One process: the store's claim already fences duplicates; keep only a
        # bounded memory of recent leases so the check stays honest and cheap.
        won = []
        for key in ticks:
            won.append(key not in self._leases)
            self._leases[key] = None
        if len(self._leases) > _MAX_LEASES:
            for old in list(self._leases)[: _MAX_LEASES // 2]:
                del self._leases[old]
        return won

    async def publish_job_change(self, job_id: str) -> None:
        for callback in self._callbacks:
            callback(job_id)

    def subscribe_job_changes(self, callback: JobChangeCallback) -> None:
        self._callbacks.append(callback)

    async def publish_cancel(self, execution_ids: Sequence[str]) -> None:
        ids = list(execution_ids)
        if not ids:
            return
        for callback in self._cancel_callbacks:
            callback(ids)

    def subscribe_cancels(self, callback: CancelCallback) -> None:
        self._cancel_callbacks.append(callback)

    async def try_lead(self, instance_id: str, ttl_s: float) -> int | None:
        if self._leader is None:
            self._leader = instance_id
            self._token += 1
        return self._token if self._leader == instance_id else None

    async def resign(self, instance_id: str) -> None:
        if self._leader == instance_id:
            self._leader = None

    async def current_leader(self) -> str | None:
        return self._leader

    async def heartbeat(self, info: InstanceInfo, ttl_s: float) -> Heartbeat:
        # Nothing here expires or is lost while the process lives.
        renewed = info.id in self._instances
        self._instances[info.id] = info
        owners = frozenset(i.id for i in self._instances.values() if i.jobs_owned is not None)
        if info.jobs_owned is None and info.loading and (info.id in self._loading or not owners):
            self._loading.add(info.id)
        else:
            self._loading.discard(info.id)
        return Heartbeat(renewed, owners, frozenset(self._loading))

    async def forget_instance(self, instance_id: str) -> None:
        self._instances.pop(instance_id, None)
        self._loading.discard(instance_id)

    async def live_instances(self) -> list[InstanceInfo]:
        return list(self._instances.values())

    async def ping(self) -> None:
        return None

    @property
    def round_trips(self) -> int:
        return 0

    @property
    def answered(self) -> int:
        return 0
