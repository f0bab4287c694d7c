"""What the coordinator tests build with: ticks, instance announcements and
subscribers that record the notices they get."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cronsvc.domain import InstanceInfo

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def tick(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def instance(instance_id: str) -> InstanceInfo:
    now = datetime.now(UTC).replace(microsecond=0)
    return InstanceInfo(
        id=instance_id, host="host-1", version="0.1.0", started_at=now, last_heartbeat=now
    )


def later(info: InstanceInfo, seconds: float = 5) -> InstanceInfo:
    """The announcement of the same instance a heartbeat later."""
    beat = info.last_heartbeat + timedelta(seconds=seconds)
    return dataclasses.replace(info, last_heartbeat=beat)


class Notices:
    """A subscriber that records job ids and can wait for one (bounded)."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self._arrived = asyncio.Event()

    def __call__(self, job_id: str) -> None:
        self.received.append(job_id)
        self._arrived.set()

    async def wait_for(self, job_id: str, within_s: float = 5.0) -> None:
        async with asyncio.timeout(within_s):
            while job_id not in self.received:
                self._arrived.clear()
                await self._arrived.wait()


class Cancels:
    """A cancel subscriber that records each notice's ids and can wait for one."""

    def __init__(self) -> None:
        self.received: list[list[str]] = []
        self._arrived = asyncio.Event()

    def __call__(self, execution_ids: Sequence[str]) -> None:
        self.received.append(list(execution_ids))
        self._arrived.set()

    async def wait_for(self, execution_ids: list[str], within_s: float = 5.0) -> None:
        async with asyncio.timeout(within_s):
            while execution_ids not in self.received:
                self._arrived.clear()
                await self._arrived.wait()
